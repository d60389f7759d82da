/**
 * A dropped connection costs no finished work (Postgres, real worker process).
 *
 * 1. 1,000 short tasks, one worker process at concurrency 10 (lease 30 s), while a killer terminates every connection
 *    of that process (`pg_terminate_backend` on its application_name) every 500 ms: every task succeeds, the
 *    completions log holds exactly one event per task, and (from the attempts the worker printed as they started) no
 *    task ran twice: a second run would be legitimate only after its lease expired, and no lease can expire within
 *    this test (30 s), so failed commits, failure records, heartbeats and claims were retried, not redone.
 * 2. Connection-limit exhaustion: the worker's role is set to CONNECTION LIMIT 0 and its connections terminated; the
 *    worker logs a clear "connection limit" error and backs off; tasks enqueued meanwhile all succeed once the limit is
 *    lifted.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { Tick } from "./fixtures/fault-tasks.js"
import { eventually, pgAvailable, pgUrl } from "./support/backends.js"
import { spawnFixture } from "./support/process.js"

const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}`

/** A fresh schema owned by the test, usable by `role` with the runtime privileges (docs/reliability.md). */
const setup = (role: string) => {
  const schema = unique("bt_faults")
  const layer = SqlTaskQueue.layer.pipe(
    Layer.provideMerge(Storage.layerPg({ url: pgUrl(), schema, maxConnections: 4 }))
  )
  const roleUrl = new URL(pgUrl())
  roleUrl.username = role
  const grant = Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`DO $$ BEGIN CREATE ROLE ${role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
    yield* sql.unsafe(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`)
    yield* sql.unsafe(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${schema} TO ${role}`)
    yield* sql.unsafe(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ${schema} TO ${role}`)
  })
  const descriptor = { kind: "pg" as const, url: roleUrl.toString(), schema }
  return { layer, grant, descriptor }
}

/** Terminates every connection whose application_name starts with `appName`; returns how many. */
const terminate = (appName: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ n: string | number }>`SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
      WHERE application_name LIKE ${`${appName}%`} AND pid <> pg_backend_pid()`
  ).pipe(Effect.map((rows) => Number(rows[0]?.n ?? 0)))

const succeededCount = (ids: ReadonlyArray<string>) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ n: string | number }>`SELECT count(*) AS n FROM baton_tasks WHERE state = 'succeeded'
      AND id IN ${sql.in(ids)}`
  ).pipe(Effect.map((rows) => Number(rows[0]?.n ?? 0)))

describe.skipIf(!pgAvailable())("Faults [pg]", () => {
  it.live(
    "backend kills every 500 ms: every task succeeds, one completion event each, no task re-run within its lease",
    () => {
      const role = unique("baton_faults")
      const appName = unique("baton-faults")
      const { descriptor, grant, layer } = setup(role)
      return Effect.gen(function* () {
        yield* grant
        const queue = yield* TaskQueue
        const sql = yield* SqlClient.SqlClient
        const ids = yield* queue.enqueueMany(Array.from({ length: 1000 }, (_, i) => Task.call(Tick, { i })))
        const worker = spawnFixture("fault-worker.ts", descriptor, { BATON_TEST_APP_NAME: appName })
        yield* Effect.addFinalizer(() => Effect.sync(() => worker.kill("SIGKILL")))
        yield* Effect.promise(() => worker.waitForLine("worker started"))
        const kills = yield* Ref.make(0)
        const killer = yield* Effect.fork(
          terminate(appName).pipe(
            Effect.flatMap((n) => Ref.update(kills, (k) => k + n)),
            Effect.repeat(Schedule.spaced(Duration.millis(500)))
          )
        )
        yield* eventually(
          Effect.map(succeededCount(ids), (n) => n === ids.length),
          "all 1,000 tasks succeeded",
          25_000
        )
        yield* Fiber.interrupt(killer)
        assert.isAbove(yield* Ref.get(kills), 0, "the killer terminated connections")

        const events = yield* sql<{ task_id: string; n: string | number }>`SELECT task_id, count(*) AS n
          FROM baton_completions WHERE kind = 'task' GROUP BY task_id`
        assert.strictEqual(events.length, ids.length)
        assert.deepStrictEqual(
          events.filter((row) => Number(row.n) !== 1).map((row) => row.task_id),
          [],
          "one completion event per task"
        )
        const runs = new Map<string, Array<number>>()
        for (const line of worker.lines) {
          const match = /^ran (\S+) (\d+) (\d+)$/.exec(line)
          if (match !== null) runs.set(match[1]!, [...(runs.get(match[1]!) ?? []), Number(match[3])])
        }
        assert.strictEqual(runs.size, ids.length)
        // A re-run is legitimate only after the lease (30 s) expired; none can have expired in this test.
        const rerun = [...runs].filter(([, starts]) => starts.length > 1 && starts.at(-1)! - starts[0]! < 30_000)
        assert.deepStrictEqual(rerun, [], "no task ran twice while its lease was held")
      }).pipe(Effect.scoped, Effect.provide(layer))
    },
    45_000
  )

  it.live(
    "connection-limit exhaustion: a clear logged error, backoff, and full recovery when connections free up",
    () => {
      const role = unique("baton_limit")
      const appName = unique("baton-limit")
      const { descriptor, grant, layer } = setup(role)
      return Effect.gen(function* () {
        yield* grant
        const queue = yield* TaskQueue
        const sql = yield* SqlClient.SqlClient
        const worker = spawnFixture("fault-worker.ts", descriptor, { BATON_TEST_APP_NAME: appName })
        yield* Effect.addFinalizer(() =>
          Effect.zipRight(
            Effect.sync(() => worker.kill("SIGKILL")),
            sql.unsafe(`ALTER ROLE ${role} CONNECTION LIMIT -1`).pipe(Effect.ignore)
          )
        )
        yield* Effect.promise(() => worker.waitForLine("worker started"))
        // No connection of this role is accepted any more, and the ones it has are gone.
        yield* sql.unsafe(`ALTER ROLE ${role} CONNECTION LIMIT 0`)
        yield* terminate(appName)
        const ids = yield* queue.enqueueMany(Array.from({ length: 50 }, (_, i) => Task.call(Tick, { i })))
        yield* Effect.promise(() => worker.waitForLine(/at its connection limit/, 20_000))
        assert.strictEqual(yield* succeededCount(ids), 0)
        yield* sql.unsafe(`ALTER ROLE ${role} CONNECTION LIMIT -1`)
        yield* eventually(
          Effect.map(succeededCount(ids), (n) => n === ids.length),
          "the 50 tasks succeeded after recovery",
          15_000
        )
        assert.isDefined(worker.lines.find((line) => line.includes("connections are available")))
      }).pipe(Effect.scoped, Effect.provide(layer))
    },
    45_000
  )
})
