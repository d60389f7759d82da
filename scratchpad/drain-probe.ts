/**
 * Probe (issue 14): drain N no-op jobs with one in-process worker at concurrency 10 on Postgres (CPU profile target).
 * Usage: npx tsx scratchpad/drain-probe.ts [n=20000] [rounds=3]; PROBE_PG_URL overrides the server.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { execSync } from "node:child_process"
import { readFileSync } from "node:fs"

// CPU seconds (user + system) of the Postgres backends serving this process's connections, and of this process.
const backendCpu = (): number => {
  const ports = execSync(`ss -tnpH`)
    .toString()
    .split("\n")
    .filter((line) => line.includes(`pid=${process.pid},`) && line.includes(":5432"))
    .map((line) => line.trim().split(/\s+/)[3]!.split(":").at(-1))
  if (ports.length === 0) return 0
  const pids = execSync(
    `psql postgres://postgres@127.0.0.1:5432/test -Atc "SELECT pid FROM pg_stat_activity WHERE client_port IN (${ports.join(",")})"`
  )
    .toString()
    .trim()
    .split("\n")
    .filter(Boolean)
  let ticks = 0
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks / 100
}
const nodeCpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

const n = Number(process.argv[2] ?? 20000)
const rounds = Number(process.argv[3] ?? 3)
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
let handled = 0
const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: () => Effect.sync(() => void handled++)
})
const layer = SqlTaskQueue.layer.pipe(
  Layer.provideMerge(Storage.layerPg({ url, schema: "perf_drain_probe", maxConnections: 10 }))
)
const program = Effect.gen(function* () {
  const queue = yield* TaskQueue
  const sql = yield* SqlClient.SqlClient
  for (let r = 0; r < rounds; r++) {
    yield* sql`TRUNCATE baton_tasks, baton_completions`
    yield* sql`VACUUM ANALYZE baton_tasks`
    const calls = Array.from({ length: n }, () => Task.call(Noop, {}))
    const e0 = performance.now()
    yield* queue.enqueueMany(calls)
    const enqMs = performance.now() - e0
    handled = 0
    const pg0 = backendCpu()
    const node0 = nodeCpu()
    const t0 = performance.now()
    yield* Effect.scoped(
      Effect.gen(function* () {
        yield* Worker.run({ tasks: [Noop], concurrency: 10 })
        while (true) {
          const [row] = yield* sql<{
            n: number
          }>`SELECT count(*)::int AS n FROM baton_tasks WHERE state IN ('pending', 'running')`
          if (row!.n === 0) break
          // The count is a scan (ms of server CPU): poll often only near the end (as bench/lib/db.ts does).
          yield* Effect.sleep(row!.n > 1000 ? "50 millis" : "5 millis")
        }
      })
    )
    const ms = performance.now() - t0
    const pgUs = ((backendCpu() - pg0) / n) * 1e6
    const nodeUs = ((nodeCpu() - node0) / n) * 1e6
    console.log(
      `round ${r + 1}: enqueue ${Math.round((n / enqMs) * 1000)}/s, drain ${Math.round((n / ms) * 1000)}/s; CPU per task: ` +
        `postgres ${pgUs.toFixed(0)} us, node ${nodeUs.toFixed(0)} us`
    )
  }
})
Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  console.error(e)
  process.exit(1)
})
