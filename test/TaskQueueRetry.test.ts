/**
 * `TaskQueue.retry`: a dead or failed task goes back to pending and runs again; anything else is refused.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import * as ChordRegistryModule from "../src/ChordRegistry.js"
import { ChordRegistry } from "../src/ChordRegistry.js"
import { Explode, Sum } from "./fixtures/chord-tasks.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const Double = Task.make("double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) => Effect.succeed(n * 2)
})

for (const backend of Backends.all()) {
  const layer = () => {
    const queue = SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))
    const completions = SqlCompletionBackend.layer.pipe(Layer.provideMerge(queue))
    return SqlChordRegistry.layer.pipe(Layer.provideMerge(completions))
  }

  describe(`TaskQueue.retry [${backend.name}]`, () => {
    it.live("a dead task goes back to pending with its attempts reset, keeps its error, and then succeeds", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Double, { n: 4 }, { maxAttempts: 1 })
        yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: -1, workerId: "w1" })
        assert.strictEqual(yield* queue.reclaimExpired, 1)
        assert.strictEqual((yield* queue.get(id)).state, "dead")

        assert.isTrue(yield* queue.retry(id))
        const pending = yield* queue.get(id)
        assert.strictEqual(pending.state, "pending")
        assert.strictEqual(pending.attempts, 0)
        assert.strictEqual(Option.getOrThrow(pending.error).kind, "lease_expired")
        assert.isUndefined(pending.finishedAt)
        // A second retry of a task that is no longer dead is refused.
        assert.isFalse(yield* queue.retry(id))

        yield* Worker.run({ tasks: [Double], concurrency: 1 })
        yield* Backends.eventually(
          Effect.map(queue.get(id), (info) => info.state === "succeeded"),
          "the retried task to succeed"
        )
        assert.deepStrictEqual(Option.getOrThrow((yield* queue.get(id)).result), 8)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("pending, succeeded, unknown and chord body tasks are refused", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const chords = yield* ChordRegistry
        const pending = yield* queue.enqueue(Double, { n: 1 })
        assert.isFalse(yield* queue.retry(pending))
        assert.isFalse(yield* queue.retry("no-such-task"))
        // A body task that fails for good fails its chord; retrying it is refused (the chord already decided).
        const handle = yield* chords.chord({
          body: [Task.call(Explode, { n: 7 })],
          callback: ChordRegistryModule.callback(Sum, { label: "x" })
        })
        yield* Worker.run({ tasks: [Double, Explode, Sum], concurrency: 2 })
        yield* Backends.eventually(
          Effect.map(chords.get(handle.chordId), (info) => info.state === "failed"),
          "the chord to fail"
        )
        const [body] = yield* Effect.map(chords.get(handle.chordId), (info) => [
          Option.getOrThrow(info.failure).taskId!
        ])
        assert.include(["failed", "dead"], (yield* queue.get(body!)).state)
        assert.isFalse(yield* queue.retry(body!))
        yield* Backends.eventually(
          Effect.map(queue.get(pending), (info) => info.state === "succeeded"),
          "the plain task to succeed"
        )
        assert.isFalse(yield* queue.retry(pending))
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )
  })
}
