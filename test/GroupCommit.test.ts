/**
 * The worker's group commit under a backlog: while a large batch commits, the next batch commits at once (two in
 * flight, never more), and every completion still lands exactly once. The `complete` calls are observed through a
 * wrapped `TaskQueue` (the service the worker commits through); the first one is held until a second one is in flight.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const backends = Backends.pgAvailable() ? [Backends.memory, Backends.postgres] : [Backends.memory]

for (const backend of backends) {
  describe(`group commit [${backend.name}]`, () => {
    it.live("a second batch commits while a large one is in flight; never more than two; each task once", () =>
      Effect.gen(function* () {
        const total = 300
        const blocked = 100
        // The first `blocked` handler runs wait for each other, so their completions queue up at once (one large
        // batch); the rest return at once.
        let invocations = 0
        const allStarted = yield* Deferred.make<void>()
        const Step = Task.make("gc-step", {
          payload: Schema.Struct({ i: Schema.Number }),
          success: Schema.Number,
          handler: ({ i }) =>
            Effect.suspend(() => {
              const n = ++invocations
              if (n > blocked) return Effect.succeed(i)
              return Effect.as(
                Effect.zipRight(
                  n === blocked ? Deferred.succeed(allStarted, undefined) : Effect.void,
                  Deferred.await(allStarted)
                ),
                i
              )
            })
        })

        // The wrapped queue: counts `complete` calls in flight, holds the first until a second one is in flight.
        let inFlight = 0
        let maxInFlight = 0
        let calls = 0
        let firstBatch = 0
        const secondInFlight = yield* Deferred.make<void>()
        const base = yield* TaskQueue
        const wrapped = TaskQueue.of({
          ...base,
          complete: (completions) =>
            Effect.suspend(() => {
              const call = ++calls
              inFlight++
              maxInFlight = Math.max(maxInFlight, inFlight)
              if (call === 1) firstBatch = completions.length
              const hold =
                call === 1
                  ? Deferred.await(secondInFlight).pipe(Effect.timeout("10 seconds"), Effect.orDie)
                  : inFlight >= 2
                    ? Deferred.succeed(secondInFlight, undefined)
                    : Effect.void
              return Effect.zipRight(hold, base.complete(completions))
            }).pipe(
              Effect.ensuring(
                Effect.sync(() => {
                  inFlight--
                })
              )
            )
        })

        const ids = yield* base.enqueueMany(Array.from({ length: total }, (_, i) => Task.call(Step, { i })))
        yield* Worker.run({ tasks: [Step], concurrency: blocked }).pipe(Effect.provideService(TaskQueue, wrapped))
        yield* Backends.eventually(
          Effect.map(base.getMany(ids), (infos) => infos.every((info) => info.state === "succeeded")),
          "every task to succeed"
        )

        assert.isAtLeast(firstBatch, 64, "the held first batch is a large one")
        assert.isTrue(yield* Deferred.isDone(secondInFlight), "a second batch was in flight while the first was held")
        assert.strictEqual(maxInFlight, 2)
        // Each task completed once: one completion event per task, and its own result.
        const sql = yield* SqlClient.SqlClient
        const events = yield* sql<{ task_id: string; n: number }>`SELECT task_id, count(*) AS n FROM baton_completions
          WHERE kind = 'task' GROUP BY task_id`
        assert.strictEqual(events.length, total)
        assert.isTrue(events.every((row) => Number(row.n) === 1))
        const infos = yield* base.getMany(ids)
        assert.strictEqual(infos.length, total)
        assert.deepStrictEqual(
          infos.map((info) => info.result._tag === "Some" && info.result.value),
          infos.map((info) => (info.payload as { i: number }).i)
        )
      }).pipe(Effect.scoped, Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))))
    )
  })
}
