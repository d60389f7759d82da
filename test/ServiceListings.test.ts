/**
 * The read operations behind the dashboard, on every backend: `TaskQueue.list` (paging, filters, literal search),
 * `TaskQueue.queueStats` (depth per queue and state, oldest waiting task) and `ChordRegistry.list` (newest first,
 * state filter, counts).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { Square, Sum } from "./fixtures/chord-tasks.js"
import * as Backends from "./support/backends.js"

for (const backend of Backends.all()) {
  const layer = () => {
    const queue = SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))
    const completions = SqlCompletionBackend.layer.pipe(Layer.provideMerge(queue))
    return SqlChordRegistry.layerWith({ reconcileInterval: 0 }).pipe(Layer.provideMerge(completions))
  }

  describe(`service listings [${backend.name}]`, () => {
    it.effect("TaskQueue.list: newest first, paged, filtered; search is literal; total counts the filter", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const ids: Array<string> = []
        for (let i = 0; i < 30; i++) {
          // One enqueue per millisecond of the test clock: created_at orders them.
          const [id] = yield* queue.enqueueRaw([
            {
              name: i % 3 === 0 ? "report.build" : "mail.send",
              payload: { i },
              queue: i % 2 === 0 ? "even" : "odd",
              runId: i < 5 ? "run-a" : undefined
            }
          ])
          ids.push(id!)
          yield* TestClock.adjust("1 millis")
        }
        const [odd] = yield* queue.enqueueRaw([{ name: "100%_done", payload: {} }])

        const first = yield* queue.list({}, { limit: 10 })
        assert.strictEqual(first.total, 31)
        assert.deepStrictEqual(
          first.items.map((t) => t.id),
          [odd!, ...ids.slice(21).reverse()]
        )
        const second = yield* queue.list({}, { limit: 10, offset: 10 })
        assert.deepStrictEqual(
          second.items.map((t) => t.id),
          ids.slice(11, 21).reverse()
        )
        assert.strictEqual((yield* queue.list({}, { limit: 10, offset: 30 })).items.length, 1)

        const evenReports = yield* queue.list({ queue: "even", name: "report.build" }, { limit: 100 })
        assert.strictEqual(evenReports.total, 5)
        assert.isTrue(evenReports.items.every((t) => t.queue === "even" && t.name === "report.build"))
        assert.strictEqual((yield* queue.list({ runId: "run-a" })).total, 5)
        assert.strictEqual((yield* queue.list({ search: "port.bu" })).total, 10)
        assert.strictEqual((yield* queue.list({ search: "%" })).total, 1)
        assert.strictEqual((yield* queue.list({ search: "%_d" })).total, 1)
        assert.strictEqual((yield* queue.list({ search: "mail_send" })).total, 0)
        assert.strictEqual((yield* queue.list({ search: ids[7]! })).items[0]!.id, ids[7])
        assert.strictEqual((yield* queue.list({ state: "running" })).total, 0)
        const pending = (yield* queue.list({ state: "pending" }, { limit: 1 })).items[0]!
        assert.strictEqual(pending.attempts, 0)
        assert.isTrue(Option.isNone(pending.error))
      }).pipe(Effect.provide(layer()))
    )

    it.effect("TaskQueue.queueStats: depth per queue and state, the oldest runnable pending task", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* queue.enqueueRaw([{ name: "later", payload: {}, queue: "a", runAt: Date.now() + 3_600_000 }])
        const [first] = yield* queue.enqueueRaw([{ name: "first", payload: {}, queue: "a" }])
        yield* TestClock.adjust("5 millis")
        yield* queue.enqueueRaw([{ name: "second", payload: {}, queue: "a" }])
        yield* queue.enqueueRaw([{ name: "b1", payload: {}, queue: "b", maxAttempts: 1 }])
        yield* queue.claim({ queues: ["b"], limit: 1, leaseMs: -1, workerId: "w" })
        yield* queue.reclaimExpired
        const stats = yield* queue.queueStats
        assert.deepStrictEqual(
          stats.map((s) => s.queue),
          ["a", "b"]
        )
        const [a, b] = stats
        assert.deepStrictEqual(a!.counts, { pending: 3, running: 0, succeeded: 0, failed: 0, dead: 0, cancelled: 0 })
        assert.strictEqual(Option.getOrThrow(a!.oldestWaiting).id, first)
        assert.strictEqual(Option.getOrThrow(a!.oldestWaiting).name, "first")
        assert.strictEqual(b!.counts.dead, 1)
        assert.isTrue(Option.isNone(b!.oldestWaiting))
      }).pipe(Effect.provide(layer()))
    )

    it.effect("ChordRegistry.list: newest first, state filter, counts by state", () =>
      Effect.gen(function* () {
        const chords = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const made: Array<string> = []
        for (let i = 0; i < 5; i++) {
          const handle = yield* chords.chord({
            body: [Task.call(Square, { n: i })],
            callback: ChordRegistry.callback(Sum, { label: `c${i}` })
          })
          made.push(handle.chordId)
          yield* TestClock.adjust("1 millis")
        }
        assert.isTrue(yield* chords.cancel(made[1]!))
        // Complete chord 3's body: its callback is dispatched.
        const claimed = yield* queue.claim({ queues: ["default"], limit: 10, leaseMs: 60_000, workerId: "w" })
        const body = claimed.find((t) => t.chordId === made[3])!
        yield* queue.complete([{ id: body.id, leaseId: body.leaseId, result: 9 }])

        const all = yield* chords.list()
        assert.deepStrictEqual(all.counts, { running: 3, completed: 1, failed: 0, cancelled: 1 })
        assert.strictEqual(all.total, 5)
        assert.deepStrictEqual(
          all.items.map((c) => c.chordId),
          [...made].reverse()
        )
        const page = yield* chords.list({ state: "running", limit: 2, offset: 1 })
        assert.strictEqual(page.total, 3)
        assert.deepStrictEqual(
          page.items.map((c) => c.chordId),
          [made[2], made[0]]
        )
        const completed = yield* chords.list({ state: "completed" })
        assert.strictEqual(completed.items[0]!.chordId, made[3])
        assert.isDefined(completed.items[0]!.callbackTaskId)
        assert.isDefined(completed.items[0]!.dispatchedAt)
      }).pipe(Effect.provide(layer()))
    )
  })
}
