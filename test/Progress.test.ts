/**
 * Progress from a running task (`TaskContext.progress` / `Task.progress`): stored on the task (`TaskQueue.get`),
 * emitted as `task.progress` events on the completion stream before the task's completion, invisible to subscribers
 * that filter on `kinds: ["task"]`, throttled per task (last value wins), refused once the attempt is over.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { CompletionBackend, type CompletionEvent } from "../src/CompletionBackend.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const layerFor = (backend: Backends.Backend) =>
  Layer.mergeAll(SqlTaskQueue.layer, SqlCompletionBackend.layer).pipe(Layer.provideMerge(backend.storage()))

const backends = Backends.pgAvailable() ? [Backends.memory, Backends.postgres] : [Backends.memory, Backends.sqlite]

for (const backend of backends) {
  describe(`progress [${backend.name}]`, () => {
    it.scopedLive(
      "reports are stored, streamed as task.progress before the completion, and hidden from kinds: [task]",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const completions = yield* CompletionBackend
          const reported = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const Slow = Task.make("progress.slow", {
            payload: Schema.Struct({}),
            success: Schema.Number,
            handler: () =>
              Effect.gen(function* () {
                yield* Task.progress(0.25, "reading")
                const context = yield* Task.TaskContext
                yield* context.progress(0.5, "halfway")
                yield* Deferred.succeed(reported, undefined)
                yield* Deferred.await(release)
                yield* Task.progress(7, "x".repeat(500)) // clamped to 1, message cut to 200 characters
                return 1
              })
          })
          const all = yield* completions.subscribe({ filter: { taskName: "progress.slow" } })
          const onlyTasks = yield* completions.subscribe({ filter: { kinds: ["task"] } })
          const collected = yield* Effect.fork(
            all.pipe(
              Stream.takeUntil((event) => event.kind === "task"),
              Stream.runCollect
            )
          )
          const completionsOnly = yield* Effect.fork(Stream.runCollect(Stream.take(onlyTasks, 1)))
          yield* Worker.run({ tasks: [Slow], pollInterval: { min: "5 millis", max: "20 millis" } })
          const id = yield* queue.enqueue(Slow, {})
          yield* Deferred.await(reported)
          // The second report is throttled (at most one write per 100 ms): it lands shortly after.
          yield* Backends.eventually(
            Effect.map(queue.get(id), (info) => info.progress?.message === "halfway"),
            "the latest progress to be stored"
          )
          const running = yield* queue.get(id)
          assert.strictEqual(running.state, "running")
          assert.strictEqual(running.progress?.value, 0.5)
          assert.instanceOf(running.progress?.at, Date)
          yield* Deferred.succeed(release, undefined)

          const events = Chunk.toReadonlyArray(yield* Fiber.join(collected))
          const progress = events.filter((event) => event.kind === "task.progress")
          // Back-to-back reports coalesce (the last value wins): 0.25 may be overtaken by 0.5 before it is written;
          // 0.5 is written while the handler waits, the final 1 before the completion.
          const values = progress.map((event) => event.progress)
          assert.deepStrictEqual(values.slice(-2), [0.5, 1])
          assert.includeMembers([0.25, 0.5, 1], values)
          assert.deepStrictEqual(progress.map((event) => event.message?.length).slice(-2), [7, 200])
          for (const event of progress) {
            assert.strictEqual(event.taskId, id)
            assert.strictEqual(event.outcome, "running")
            assert.strictEqual(event.queue, "default")
          }
          const last: CompletionEvent = events.at(-1)!
          assert.strictEqual(last.kind, "task")
          assert.strictEqual(last.outcome, "succeeded")
          assert.isUndefined(last.progress)
          // A subscriber that asked for completions only never sees progress.
          const first = Chunk.toReadonlyArray(yield* Fiber.join(completionsOnly))
          assert.deepStrictEqual(
            first.map((event) => [event.kind, event.taskId]),
            [["task", id]]
          )
          const done = yield* queue.get(id)
          assert.strictEqual(done.state, "succeeded")
          assert.strictEqual(done.progress?.value, 1)
          assert.strictEqual(done.progress?.message?.length, 200)
        }).pipe(Effect.provide(layerFor(backend))),
      20_000
    )

    it.scopedLive(
      "a chatty handler is throttled: few writes, the last value wins; late reports are ignored",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const completions = yield* CompletionBackend
          let leaked: ((value: number) => Effect.Effect<void>) | undefined
          const Chatty = Task.make("progress.chatty", {
            payload: Schema.Struct({ n: Schema.Number }),
            success: Schema.Number,
            handler: ({ n }) =>
              Effect.gen(function* () {
                const context = yield* Task.TaskContext
                leaked = (value) => context.progress(value)
                for (let i = 1; i <= n; i++) yield* context.progress(i / n, `step ${i}`)
                return n
              })
          })
          const stream = yield* completions.subscribe({ filter: { taskName: "progress.chatty" } })
          const collected = yield* Effect.fork(
            stream.pipe(
              Stream.takeUntil((event) => event.kind === "task"),
              Stream.runCollect
            )
          )
          yield* Worker.run({ tasks: [Chatty], pollInterval: { min: "5 millis", max: "20 millis" } })
          const id = yield* queue.enqueue(Chatty, { n: 5000 })
          const events = Chunk.toReadonlyArray(yield* Fiber.join(collected))
          const progress = events.filter((event) => event.kind === "task.progress")
          // 5,000 reports in a tight loop: at most one write per 100 ms plus the final flush.
          assert.isAtLeast(progress.length, 1)
          assert.isAtMost(progress.length, 10)
          assert.deepStrictEqual([progress.at(-1)!.progress, progress.at(-1)!.message], [1, "step 5000"])
          assert.strictEqual(events.at(-1)!.kind, "task")
          const info = yield* queue.get(id)
          assert.deepStrictEqual([info.progress?.value, info.progress?.message], [1, "step 5000"])
          // After the attempt: a report is ignored (nothing written, no event).
          yield* leaked!(0.1)
          assert.strictEqual((yield* queue.get(id)).progress?.value, 1)
          // The guard itself: a report under a lease that is no longer held is refused.
          assert.isFalse(yield* queue.progress(id, "not-the-lease", 0.3, undefined))
        }).pipe(Effect.provide(layerFor(backend))),
      20_000
    )
  })
}
