/**
 * Retention: policies by age and by count per state (dead kept longer), only finished rows deleted; pruning under
 * concurrent load loses no unfinished task; the completion stream's cursors stay sound (a cursor behind pruned log
 * rows gets `CursorExpired`, "oldest" resumes without a gap).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Baton from "../src/Baton.js"
import { CompletionBackend } from "../src/CompletionBackend.js"
import { Retention } from "../src/Retention.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlRetention from "../src/SqlRetention.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"
import { eventually } from "./support/backends.js"

const stack = (backend: Backends.Backend, logMaxAge: Duration.DurationInput) => {
  const queue = SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))
  return SqlCompletionBackend.layerWith({ retention: { maxAge: logMaxAge } }).pipe(Layer.provideMerge(queue))
}

const claim = (limit: number) =>
  Effect.flatMap(TaskQueue, (queue) => queue.claim({ queues: ["default"], limit, leaseMs: 3_600_000, workerId: "w" }))

for (const backend of Backends.all().filter((b) => b.name !== "sqlite")) {
  describe(`Retention [${backend.name}]`, () => {
    it.effect("by age and by count per state; dead kept longer; pending and running never pruned", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* queue.enqueueRaw(Array.from({ length: 8 }, (_, i) => ({ name: "t", payload: i })))
        yield* TestClock.adjust("1 millis")
        const held = yield* claim(6)
        yield* queue.complete(held.slice(0, 3).map((t) => ({ id: t.id, leaseId: t.leaseId, result: 1 })))
        const dead = held[3]!
        yield* queue.fail(dead.id, dead.leaseId, { kind: "failure", message: "x", attempt: 1 }, { _tag: "Dead" })
        yield* queue.cancel(held[4]!.id)
        yield* TestClock.adjust("2 hours")
        const [fresh] = yield* queue.enqueueRaw([{ name: "fresh", payload: 0, priority: 9 }])
        const [freshClaim] = yield* claim(1)
        assert.strictEqual(freshClaim!.id, fresh)
        yield* queue.complete([{ id: freshClaim!.id, leaseId: freshClaim!.leaseId, result: 2 }])
        yield* TestClock.adjust("1 millis")

        const retention = yield* SqlRetention.make({
          tasks: { succeeded: { maxAge: "1 hour" }, cancelled: { maxAge: "1 hour" } }
        })
        const report = yield* retention.prune
        assert.deepStrictEqual(report.tasks, { succeeded: 3, cancelled: 1, failed: 0, dead: 0 })
        const counts = yield* queue.counts
        assert.deepStrictEqual(counts, { pending: 2, running: 1, succeeded: 1, failed: 0, dead: 1, cancelled: 0 })
        assert.strictEqual((yield* queue.get(fresh!)).state, "succeeded")

        // By count: keep the newest 0 succeeded; dead by the default (30 days) only after 30 days.
        const byCount = yield* SqlRetention.make({ tasks: { succeeded: { maxCount: 0 } } })
        assert.strictEqual((yield* byCount.prune).tasks.succeeded, 1)
        yield* TestClock.adjust("31 days")
        assert.strictEqual((yield* byCount.prune).tasks.dead, 1)
        const after = yield* queue.counts
        assert.deepStrictEqual(after, { pending: 2, running: 1, succeeded: 0, failed: 0, dead: 0, cancelled: 0 })
      }).pipe(Effect.scoped, Effect.provide(stack(backend, "7 days")))
    )

    it.live("pruning under concurrent load loses no unfinished task", () =>
      Effect.gen(function* () {
        const executed = yield* Ref.make(new Set<string>())
        const Work = Task.make("retention-work", {
          payload: Schema.Number,
          success: Schema.Number,
          handler: (n) =>
            Effect.gen(function* () {
              const ctx = yield* Task.TaskContext
              yield* Ref.update(executed, (set) => new Set(set).add(ctx.taskId))
              return n
            })
        })
        const queue = yield* TaskQueue
        const retention = yield* SqlRetention.make({
          tasks: { succeeded: { maxAge: 0 }, cancelled: { maxAge: 0 }, failed: { maxAge: 0 }, dead: { maxAge: 0 } },
          batchSize: 7
        })
        yield* Worker.run({ tasks: [Work], concurrency: 8, pollInterval: { min: "2 millis", max: "20 millis" } })
        const pruned = yield* Ref.make(0)
        const pruner = yield* retention.prune.pipe(
          Effect.tap((report) => Ref.update(pruned, (n) => n + report.tasks.succeeded)),
          Effect.repeat(Schedule.spaced("5 millis")),
          Effect.fork
        )
        const ids: Array<string> = []
        for (let round = 0; round < 10; round++) {
          ids.push(...(yield* queue.enqueueMany(Array.from({ length: 30 }, (_, i) => Task.call(Work, round * 30 + i)))))
        }
        yield* eventually(
          Effect.map(Ref.get(executed), (set) => set.size === ids.length),
          "every task executed",
          15_000
        )
        // Every task finished is pruned in the end, and every one was executed first: nothing unfinished went.
        yield* eventually(
          Effect.map(Ref.get(pruned), (n) => n === ids.length),
          "every finished task pruned",
          15_000
        )
        yield* Fiber.interrupt(pruner)
        const done = yield* Ref.get(executed)
        assert.isTrue(ids.every((id) => done.has(id)))
        const counts = yield* queue.counts
        assert.strictEqual(
          Object.values(counts).reduce((a, b) => a + b, 0),
          0
        )
      }).pipe(Effect.scoped, Effect.provide(stack(backend, "7 days")))
    )

    it.live("the stream's cursors stay sound: a cursor behind pruned log rows fails with CursorExpired", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const completions = yield* CompletionBackend
        yield* queue.enqueueRaw(Array.from({ length: 3 }, (_, i) => ({ name: "t", payload: i })))
        const held = yield* claim(3)
        yield* queue.complete(held.map((t) => ({ id: t.id, leaseId: t.leaseId, result: 1 })))
        const first = yield* completions.subscribe({ fromSequence: "oldest" }).pipe(
          Effect.flatMap((stream) => Stream.runCollect(Stream.take(stream, 1))),
          Effect.map(Chunk.unsafeHead),
          Effect.scoped
        )
        const retention = yield* SqlRetention.make({})
        // The log keeps events 1 ms here: prune until its rows are gone.
        yield* eventually(
          Effect.map(retention.prune, (report) => report.completions > 0),
          "the log pruned",
          5_000
        )
        const expired = yield* Effect.flip(Effect.scoped(completions.subscribe({ after: first.cursor })))
        assert.strictEqual(expired._tag, "CursorExpired")
        // "oldest" resumes right after the newest pruned event, without a gap.
        yield* queue.enqueueRaw([{ name: "later", payload: 0 }])
        const [later] = yield* claim(1)
        yield* queue.complete([{ id: later!.id, leaseId: later!.leaseId, result: 1 }])
        const resumed = yield* completions.subscribe({ fromSequence: "oldest" }).pipe(
          Effect.flatMap((stream) => Stream.runCollect(Stream.take(stream, 1))),
          Effect.map(Chunk.unsafeHead),
          Effect.scoped
        )
        assert.strictEqual(resumed.taskName, "later")
      }).pipe(Effect.scoped, Effect.provide(stack(backend, "1 millis")))
    )
  })
}

it.effect("Retention.prune in Baton's layers reports every kind", () =>
  Effect.gen(function* () {
    const report = yield* (yield* Retention).prune
    assert.deepStrictEqual(report, {
      tasks: { succeeded: 0, cancelled: 0, failed: 0, dead: 0 },
      chords: 0,
      runs: 0,
      completions: 0
    })
  }).pipe(Effect.provide(Baton.layerMemory))
)
