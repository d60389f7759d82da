/**
 * `TaskQueue.await` / `awaitResult` / `awaitAll`: driven by the completion stream, from any process. A real child
 * process awaits tasks its parent enqueued and then runs (succeeded), kills (dead) and cancels (cancelled); in
 * process, an await started before the work resolves when it completes, and `awaitAll` waits on 10,000 tasks with
 * one subscription.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { CompletionBackend } from "../src/CompletionBackend.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import * as TaskQueue from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { Explode, Stamp } from "./fixtures/await-tasks.js"
import { eventually, pgAvailable, sharedStorage } from "./support/backends.js"
import { spawnFixture } from "./support/process.js"

const kinds: ReadonlyArray<"sqlite" | "pg"> = pgAvailable() ? ["sqlite", "pg"] : ["sqlite"]

const services = <E, R>(storage: Layer.Layer<Storage.Storage | import("@effect/sql/SqlClient").SqlClient, E, R>) =>
  SqlCompletionBackend.layerWith({ pollInterval: { min: "2 millis", max: "50 millis" } }).pipe(
    Layer.provideMerge(SqlTaskQueue.layer),
    Layer.provideMerge(storage)
  )

const fastWorker = { pollInterval: { min: "2 millis", max: "20 millis" } } as const

for (const kind of kinds) {
  describe(`TaskQueue.await from another process [${kind}]`, () => {
    it.live(
      "a child process awaits a succeeded (decoded result), a dead and a cancelled task, and all four with awaitAll",
      () => {
        const shared = sharedStorage(kind)
        return Effect.gen(function* () {
          const queue = yield* TaskQueue.TaskQueue
          const at = Date.UTC(2026, 0, 2, 3, 4, 5)
          const stampId = yield* queue.enqueue(Stamp, { at }, { queue: "await" })
          const deadId = yield* queue.enqueue(Explode, {}, { queue: "await", maxAttempts: 1 })
          const cancelledId = yield* queue.enqueue(Stamp, { at }, { queue: "nobody" })
          const missingId = "no-such-task"
          const child = spawnFixture("task-awaiter.ts", shared.descriptor, {}, [
            stampId,
            deadId,
            cancelledId,
            missingId
          ])
          yield* Effect.promise(() => child.waitForLine("waiting"))
          // The work happens only now, while the child waits.
          assert.isTrue(yield* queue.cancel(cancelledId))
          yield* Worker.run({ tasks: [Stamp, Explode], queues: ["await"], concurrency: 2, ...fastWorker })
          const all = yield* Effect.promise(() => child.waitForLine(/^all /, 30_000))
          assert.strictEqual(yield* Effect.promise(() => child.exited), 0)
          assert.include(child.lines, `stamp ${new Date(at).toISOString()}`)
          const dead = child.lines.find((line) => line.startsWith("dead "))
          assert.match(dead ?? "", /^dead dead task \S+ \(await\.explode\) ended dead/)
          assert.include(child.lines, "cancelled cancelled")
          assert.strictEqual(all, "all succeeded,dead,cancelled,TaskNotFound")
        }).pipe(Effect.scoped, Effect.provide(services(shared.layer)))
      },
      30_000
    )
  })
}

describe("TaskQueue.await in process", () => {
  it.live("an await started before the task runs resolves when it completes; a failed task is a typed error", () =>
    Effect.gen(function* () {
      const release = yield* Deferred.make<void>()
      const Gate = Task.make("await.gate", {
        payload: Schema.Struct({ n: Schema.Number }),
        success: Schema.Number,
        handler: ({ n }) => Effect.as(Deferred.await(release), n * 2)
      })
      const queue = yield* TaskQueue.TaskQueue
      const id = yield* queue.enqueue(Gate, { n: 21 })
      const waiting = yield* Effect.fork(TaskQueue.awaitResult(Gate, id))
      yield* Worker.run({ tasks: [Gate], ...fastWorker })
      // Still running (held at the gate): the await has not resolved.
      yield* eventually(
        Effect.map(queue.get(id), (info) => info.state === "running"),
        "the task is running"
      )
      assert.isTrue(Option.isNone(yield* Fiber.poll(waiting)))
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(yield* Fiber.join(waiting), 42)

      const failing = yield* queue.enqueue(Explode, {}, { maxAttempts: 1 })
      yield* Worker.run({ tasks: [Explode], ...fastWorker })
      const error = yield* Effect.flip(TaskQueue.await(failing))
      assert.strictEqual(error._tag, "TaskFailed")
      if (error._tag === "TaskFailed") {
        assert.strictEqual(error.state, "dead")
        assert.strictEqual(error.error?.kind, "failure")
        assert.deepStrictEqual(error.error?.error, { _tag: "Boom", reason: "kaboom" })
      }
    }).pipe(Effect.scoped, Effect.provide(services(Storage.layerMemory)))
  )

  it.effect(
    "getMany reads found tasks only; a claim under a chosen lease id is found again with claimed(leaseId)",
    () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue.TaskQueue
        const ids = yield* queue.enqueueMany([Task.call(Stamp, { at: 1 }), Task.call(Stamp, { at: 2 })])
        const infos = yield* queue.getMany([...ids, "missing", ids[0]!])
        assert.deepStrictEqual(infos.map((info) => info.id).sort(), [...ids].sort())
        const leaseId = "lease-chosen-by-the-worker"
        const claimed = yield* queue.claim({ queues: ["default"], limit: 10, leaseMs: 30_000, workerId: "w", leaseId })
        assert.deepStrictEqual(
          claimed.map((task) => task.leaseId),
          [leaseId, leaseId]
        )
        const found = yield* queue.claimed(leaseId)
        assert.deepStrictEqual(found.map((task) => task.id).sort(), claimed.map((task) => task.id).sort())
        assert.deepStrictEqual(yield* queue.claimed("another-lease"), [])
      }).pipe(Effect.provide(services(Storage.layerMemory)))
  )

  it.live(
    "awaitAll waits on 10,000 tasks with one subscription, an Exit per id in input order",
    () =>
      Effect.gen(function* () {
        const subscriptions = yield* Ref.make(0)
        const Echo = Task.make("await.echo", {
          payload: Schema.Struct({ i: Schema.Number }),
          success: Schema.Number,
          handler: ({ i }) => (i % 1000 === 999 ? Effect.die("unlucky") : Effect.succeed(i))
        })
        const counting = Layer.effect(
          CompletionBackend,
          Effect.map(CompletionBackend, (backend) =>
            CompletionBackend.of({
              ...backend,
              subscribe: (options) =>
                Effect.zipRight(
                  Ref.update(subscriptions, (n) => n + 1),
                  backend.subscribe(options)
                )
            })
          )
        )
        return yield* Effect.gen(function* () {
          const queue = yield* TaskQueue.TaskQueue
          const ids = yield* queue.enqueueMany(
            Array.from({ length: 10_000 }, (_, i) => Task.call(Echo, { i }, { maxAttempts: 1 }))
          )
          const waiting = yield* Effect.fork(TaskQueue.awaitAll(ids))
          yield* Worker.run({ tasks: [Echo], concurrency: 50, ...fastWorker })
          const exits = yield* Fiber.join(waiting)
          assert.strictEqual(exits.length, 10_000)
          assert.strictEqual(yield* Ref.get(subscriptions), 1)
          for (let i = 0; i < exits.length; i++) {
            const exit = exits[i]!
            if (i % 1000 === 999) assert.isTrue(Exit.isFailure(exit), `task ${i} should have died`)
            else if (Exit.isSuccess(exit))
              assert.deepStrictEqual([exit.value.id, exit.value.result], [ids[i], Option.some(i)])
            else assert.fail(`task ${i} failed`)
          }
        }).pipe(Effect.provide(counting.pipe(Layer.provideMerge(services(Storage.layerMemory)))))
      }).pipe(Effect.scoped),
    30_000
  )
})
