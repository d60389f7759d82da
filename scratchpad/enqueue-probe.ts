/**
 * Probe (issue 7): where the time of a bulk enqueue goes. Times, alternating in one process:
 *  - "prep": Task.call + encode + row building + JSON.stringify only (no SQL),
 *  - "enqueueMany": the public call,
 *  - "raw SQL": the same INSERT … json_populate_recordset statement sent with a plain `pg` client.
 * Usage: npx tsx scratchpad/enqueue-probe.ts [n=20000] [rounds=5]
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import pg from "pg"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { insertColumns, toInsertRow } from "../src/internal/sql/taskRows.js"

const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const schema = "perf_enqueue_probe"
const n = Number(process.argv[2] ?? 20000)
const rounds = Number(process.argv[3] ?? 5)

const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: () => Effect.void
})

const layer = SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerPg({ url, schema, maxConnections: 4 })))

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const queue = yield* TaskQueue
  const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` })
  yield* Effect.promise(() => client.connect())
  const reset = Effect.gen(function* () {
    yield* sql`TRUNCATE baton_tasks`
    yield* sql`VACUUM ANALYZE baton_tasks`
  })
  const results: Record<string, Array<number>> = { prep: [], enqueueMany: [], rawSql: [] }
  for (let r = 0; r < rounds; r++) {
    // prep
    {
      const t0 = performance.now()
      const calls = Array.from({ length: n }, () => Task.call(Noop, {}))
      const requests = yield* Effect.forEach(calls, (call) =>
        SqlTaskQueue.encodeCall(call.task, call.payload, call.options, 0)
      )
      const rows = requests.map((request) => toInsertRow(request, Date.now()))
      JSON.stringify(rows)
      results.prep!.push(performance.now() - t0)
    }
    yield* reset
    {
      const calls = Array.from({ length: n }, () => Task.call(Noop, {}))
      const t0 = performance.now()
      const ids = yield* queue.enqueueMany(calls)
      results.enqueueMany!.push(performance.now() - t0)
      if (ids.length !== n) throw new Error("short")
    }
    yield* reset
    {
      const now = Date.now()
      const rows = Array.from({ length: n }, () => toInsertRow({ name: "noop", payload: {} }, now))
      const t0 = performance.now()
      for (let i = 0; i < rows.length; i += 5000) {
        const json = JSON.stringify(rows.slice(i, i + 5000))
        await0: {
          yield* Effect.promise(() =>
            client.query(
              `INSERT INTO baton_tasks (${insertColumns.join(", ")}) SELECT ${insertColumns.join(", ")}
               FROM json_populate_recordset(NULL::baton_tasks, $1::json) ON CONFLICT DO NOTHING RETURNING id`,
              [json]
            )
          )
          break await0
        }
      }
      results.rawSql!.push(performance.now() - t0)
    }
    yield* reset
  }
  yield* Effect.promise(() => client.end())
  for (const [name, times] of Object.entries(results)) {
    const sorted = [...times].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)]!
    const min = sorted[0]!
    console.log(
      `${name.padEnd(12)} min ${min.toFixed(1)} ms = ${Math.round((n / min) * 1000)} jobs/s, median ${median.toFixed(1)} ms = ${Math.round((n / median) * 1000)} jobs/s`
    )
  }
})

Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  console.error(e)
  process.exit(1)
})
