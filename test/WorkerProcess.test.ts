/**
 * Worker claims about processes, with real OS processes: a SIGKILLed worker loses nothing (its lease expires and
 * another worker reclaims the task), and two worker processes never run a task concurrently while its lease holds.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { eventually, pgAvailable, sharedStorage } from "./support/backends.js"
import { spawnFixture } from "./support/process.js"
import { Track } from "./fixtures/worker-tasks.js"

const kinds: ReadonlyArray<"sqlite" | "pg"> = pgAvailable() ? ["sqlite", "pg"] : ["sqlite"]

for (const kind of kinds) {
  describe(`Worker processes [${kind}]`, () => {
    const setup = () => {
      const shared = sharedStorage(kind)
      const layer = SqlTaskQueue.layer.pipe(Layer.provideMerge(shared.layer))
      const createTable = Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql`CREATE TABLE test_exec (task_id text, pid integer, started_at bigint, finished_at bigint)`
      )
      return { shared, layer, createTable }
    }

    it.live(
      "a worker SIGKILLed mid-task loses nothing: the lease expires and another worker completes the task",
      () => {
        const { createTable, layer, shared } = setup()
        return Effect.gen(function* () {
          yield* createTable
          const queue = yield* TaskQueue
          const id = yield* queue.enqueue(Track, { i: 7 })
          const doomed = spawnFixture("worker-process.ts", shared.descriptor, { HOLD_MS: "60000", LEASE_MS: "1000" })
          yield* Effect.promise(() => doomed.waitForLine(`started ${id}`))
          doomed.kill("SIGKILL")
          yield* Effect.promise(() => doomed.exited)
          assert.strictEqual((yield* queue.get(id)).state, "running")
          const rescuer = spawnFixture("worker-process.ts", shared.descriptor, { HOLD_MS: "0", LEASE_MS: "1000" })
          try {
            yield* eventually(
              Effect.map(queue.get(id), (info) => info.state === "succeeded"),
              "the reclaimed task to succeed",
              30_000
            )
          } finally {
            rescuer.kill("SIGTERM")
          }
          const info = yield* queue.get(id)
          assert.strictEqual(info.attempts, 2)
          const sql = yield* SqlClient.SqlClient
          const runs = yield* sql<{ pid: number }>`SELECT pid FROM test_exec WHERE task_id = ${id}`
          assert.deepStrictEqual(
            runs.map((row) => Number(row.pid)),
            [rescuer.process.pid]
          )
          assert.strictEqual(yield* Effect.promise(() => rescuer.exited), 0)
        }).pipe(Effect.provide(layer))
      },
      60_000
    )

    it.live(
      "two worker processes on one queue: every task runs exactly once, never concurrently",
      () => {
        const { createTable, layer, shared } = setup()
        return Effect.gen(function* () {
          yield* createTable
          const queue = yield* TaskQueue
          const n = 200
          yield* queue.enqueueMany(Array.from({ length: n }, (_, i) => Task.call(Track, { i })))
          const env = { HOLD_MS: "5", LEASE_MS: "10000", CONCURRENCY: "8" }
          const workers = [
            spawnFixture("worker-process.ts", shared.descriptor, env),
            spawnFixture("worker-process.ts", shared.descriptor, env)
          ]
          try {
            yield* eventually(
              Effect.map(queue.counts, (counts) => counts.succeeded === n),
              `${n} tasks to succeed`,
              45_000
            )
          } finally {
            for (const worker of workers) worker.kill("SIGTERM")
          }
          const sql = yield* SqlClient.SqlClient
          const rows = yield* sql<{ task_id: string; pid: number }>`SELECT task_id, pid FROM test_exec`
          assert.strictEqual(rows.length, n)
          assert.strictEqual(new Set(rows.map((row) => row.task_id)).size, n)
          const pids = new Set(rows.map((row) => Number(row.pid)))
          for (const pid of pids) {
            assert.isTrue(workers.some((worker) => worker.process.pid === pid))
          }
          for (const worker of workers) assert.strictEqual(yield* Effect.promise(() => worker.exited), 0)
        }).pipe(Effect.provide(layer))
      },
      60_000
    )
  })
}
