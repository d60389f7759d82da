/**
 * The chord callback hand-off (docs/chords.md): the transaction that completes a chord's last body task inserts the
 * callback already leased to the committing worker when that worker runs the callback's task and claims from its
 * queue, which starts it without a claim; otherwise the usual pending task. If the worker holding the handed-off callback
 * dies (a real child process, SIGKILL), the lease expires and the callback is reclaimed and runs exactly once.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlQueueControl from "../src/SqlQueueControl.js"
import { QueueControl } from "../src/QueueControl.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { Square, Sum } from "./fixtures/chord-tasks.js"
import { Hold } from "./fixtures/handoff-tasks.js"
import * as Backends from "./support/backends.js"
import { spawnScoped as spawn, waitLine as line } from "./support/process.js"

const fast = { pollInterval: { min: "1 millis", max: "10 millis" } } as const

const shared = (kind: "sqlite" | "pg") => {
  const { descriptor, layer } = Backends.sharedStorage(kind)
  return {
    descriptor,
    layer: SqlChordRegistry.layerWith({
      reconcileInterval: 0,
      pollInterval: { min: "1 millis", max: "20 millis" }
    }).pipe(
      Layer.provideMerge(SqlCompletionBackend.layerWith({ pollInterval: { min: "2 millis", max: "50 millis" } })),
      Layer.provideMerge(Layer.merge(SqlTaskQueue.layer, SqlQueueControl.layer)),
      Layer.provideMerge(layer)
    )
  }
}

const row = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      Effect.orDie(
        sql<{ state: string; worker_id: string | null; attempts: number }>`SELECT state, worker_id, attempts
          FROM baton_tasks WHERE id = ${id}`
      ),
      (rows) => rows[0]!
    )
  )

const count = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ n: number }>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(Effect.orDie(query(sql)), (rows) => Number(rows[0]?.n ?? 0)))

const handedOff = Effect.map(Metric.value(Worker.tasksHandedOff), (state) => state.count)

const waitState = (id: string, state: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* Backends.eventually(
      Effect.map(queue.get(id), (info) => info.state === state),
      `task ${id} to be ${state}`,
      20_000
    )
    return yield* queue.get(id)
  })

const kinds: ReadonlyArray<"sqlite" | "pg"> = Backends.pgAvailable() ? ["sqlite", "pg"] : ["sqlite"]

for (const kind of kinds) {
  describe(`chord callback hand-off [${kind}]`, () => {
    it.live("the worker that completes the last body task starts the callback without a claim", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const before = yield* handedOff
        const handle = yield* registry.chord({
          body: [1, 2, 3].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Sum, { label: "handoff" })
        })
        yield* Worker.run({ tasks: [Square, Sum], concurrency: 2, workerId: "w-handoff", ...fast })
        const callbackId = yield* handle.await
        const done = yield* waitState(callbackId, "succeeded")
        assert.deepStrictEqual(Option.getOrThrow(done.result), { label: "handoff", sum: 14, count: 3 })
        // Leased at insert to the committing worker: attempt 1 under its id, counted by the hand-off metric.
        const callback = yield* row(callbackId)
        assert.strictEqual(callback.worker_id, "w-handoff")
        assert.strictEqual(Number(callback.attempts), 1)
        assert.strictEqual((yield* handedOff) - before, 1)
      }).pipe(Effect.scoped, Effect.provide(shared(kind).layer))
    )

    it.live("a worker that does not claim from the callback's queue leaves the usual pending callback", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const before = yield* handedOff
        const handle = yield* registry.chord({
          body: [1, 2].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Sum, { label: "plain" }, { queue: "elsewhere" })
        })
        yield* Worker.run({ tasks: [Square, Sum], queues: ["default"], concurrency: 2, workerId: "w-bodies", ...fast })
        const callbackId = yield* handle.await
        const callback = yield* row(callbackId)
        assert.strictEqual(callback.state, "pending")
        assert.isNull(callback.worker_id)
        assert.strictEqual((yield* handedOff) - before, 0)
      }).pipe(Effect.scoped, Effect.provide(shared(kind).layer))
    )

    it.live("a paused callback queue is not bypassed: the callback stays pending until resumed", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const control = yield* QueueControl
        yield* control.pause("callbacks")
        const before = yield* handedOff
        const handle = yield* registry.chord({
          body: [1, 2].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Sum, { label: "paused" }, { queue: "callbacks" })
        })
        yield* Worker.run({ tasks: [Square, Sum], queues: ["default", "callbacks"], concurrency: 2, ...fast })
        const callbackId = yield* handle.await
        const callback = yield* row(callbackId)
        assert.strictEqual(callback.state, "pending")
        assert.strictEqual((yield* handedOff) - before, 0)
        yield* control.resume("callbacks")
        yield* waitState(callbackId, "succeeded")
      }).pipe(Effect.scoped, Effect.provide(shared(kind).layer))
    )

    it.live(
      "the handed-off callback of a SIGKILLed worker is reclaimed after its lease expires and runs exactly once",
      () => {
        const { descriptor, layer } = shared(kind)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          // A runs the bodies and gets the callback handed off; its callback handler hangs.
          const a = yield* spawn("handoff-worker.ts", descriptor, { BATON_TEST_HOLD: "1" }, ["A", "1500", "100000"])
          yield* line(a, "ready A", 60_000)
          const handle = yield* registry.chord({
            body: [1, 2, 3].map((n) => Task.call(Square, { n })),
            callback: ChordRegistry.callback(Hold, {})
          })
          const callbackId = yield* handle.await
          yield* line(a, `callback ${callbackId} 1`, 20_000)
          const held = yield* row(callbackId)
          assert.strictEqual(held.state, "running")
          assert.strictEqual(held.worker_id, "A")
          a.kill("SIGKILL")
          yield* Effect.promise(() => a.exited)
          // B reclaims the expired lease and runs the callback (attempt 2).
          const b = yield* spawn("handoff-worker.ts", descriptor, {}, ["B", "30000", "100"])
          yield* line(b, `callback ${callbackId} 2`, 60_000)
          const done = yield* waitState(callbackId, "succeeded")
          assert.deepStrictEqual(Option.getOrThrow(done.result), 14)
          assert.strictEqual(
            yield* count(
              (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE name = 'handoff-hold'`
            ),
            1
          )
          assert.strictEqual(
            yield* count(
              (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_completions
                WHERE task_id = ${callbackId} AND kind = 'task' AND outcome = 'succeeded'`
            ),
            1
          )
          assert.lengthOf(
            b.lines.filter((l) => l.startsWith(`callback ${callbackId}`)),
            1
          )
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      60_000
    )
  })
}
