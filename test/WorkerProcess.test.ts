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
          const holdMs = 5
          const env = { HOLD_MS: String(holdMs), LEASE_MS: "10000", CONCURRENCY: "8" }
          const workers = [
            spawnFixture("worker-process.ts", shared.descriptor, env),
            spawnFixture("worker-process.ts", shared.descriptor, env)
          ]
          try {
            // Both workers are running before the tasks exist, so both race for them from the start.
            yield* Effect.promise(() => Promise.all(workers.map((worker) => worker.waitForLine("ready"))))
            yield* queue.enqueueMany(Array.from({ length: n }, (_, i) => Task.call(Track, { i })))
            yield* eventually(
              Effect.map(queue.counts, (counts) => counts.succeeded === n),
              `${n} tasks to succeed`,
              45_000
            )
          } finally {
            for (const worker of workers) worker.kill("SIGTERM")
          }
          const sql = yield* SqlClient.SqlClient
          // One row per attempt that ran to its end (none is interrupted here: the workers stop once all succeeded).
          const rows = yield* sql<{ task_id: string; pid: number; started_at: number; finished_at: number }>`
            SELECT task_id, pid, started_at, finished_at FROM test_exec`
          // Never concurrently: a task's attempts (by their start and finish times) never overlap. Checked before the
          // counts, so that a duplicate that ran at the same time fails with this message.
          const attempts = new Map<string, Array<{ start: number; end: number }>>()
          for (const row of rows) {
            const start = Number(row.started_at)
            const end = Number(row.finished_at)
            assert.isAtLeast(end - start, holdMs - 1, `attempt of ${row.task_id} held for its ${holdMs} ms`)
            attempts.set(row.task_id, [...(attempts.get(row.task_id) ?? []), { start, end }])
          }
          for (const [task, runs] of attempts) {
            const sorted = [...runs].sort((a, b) => a.start - b.start)
            for (let i = 1; i < sorted.length; i++) {
              assert.isAtLeast(sorted[i]!.start, sorted[i - 1]!.end, `attempts of ${task} overlap`)
            }
          }
          // Exactly once.
          assert.strictEqual(rows.length, n)
          assert.strictEqual(new Set(rows.map((row) => row.task_id)).size, n)
          // Both processes ran tasks, and at the same time as each other: the claims really raced.
          const span = new Map<number, { start: number; end: number }>()
          for (const row of rows) {
            const pid = Number(row.pid)
            const seen = span.get(pid)
            span.set(pid, {
              start: Math.min(seen?.start ?? Infinity, Number(row.started_at)),
              end: Math.max(seen?.end ?? -Infinity, Number(row.finished_at))
            })
          }
          assert.sameMembers(
            [...span.keys()],
            workers.map((worker) => worker.process.pid!)
          )
          const [a, b] = [...span.values()]
          assert.isTrue(a!.start < b!.end && b!.start < a!.end, "the two processes' executions overlap in time")
          for (const worker of workers) assert.strictEqual(yield* Effect.promise(() => worker.exited), 0)
        }).pipe(Effect.provide(layer))
      },
      60_000
    )
  })
}
