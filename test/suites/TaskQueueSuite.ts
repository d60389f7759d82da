/**
 * TaskQueue + Worker conformance suite: the same behaviours on every backend.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Task from "../../src/Task.js"
import { type InvalidPayload, TaskQueue } from "../../src/TaskQueue.js"
import * as Worker from "../../src/Worker.js"
import { type Backend, eventually } from "../support/backends.js"

class Boom extends Schema.TaggedError<Boom>()("Boom", { reason: Schema.String }) {}

const Double = Task.make("double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ doubled: Schema.Number }),
  handler: ({ n }) => Effect.succeed({ doubled: n * 2 })
})

const AlwaysFails = Task.make("always-fails", {
  payload: Schema.Struct({ id: Schema.Number }),
  success: Schema.Void,
  failure: Boom,
  maxAttempts: 3,
  backoff: { base: "1 millis", factor: 2, max: "5 millis" },
  handler: () => Effect.fail(new Boom({ reason: "nope" }))
})

const Defect = Task.make("defect", {
  payload: Schema.Struct({}),
  success: Schema.Void,
  maxAttempts: 1,
  handler: () => Effect.die(new Error("kaboom"))
})

const Slow = Task.make("slow", {
  payload: Schema.Struct({}),
  success: Schema.Void,
  maxAttempts: 2,
  timeout: "20 millis",
  backoff: { base: "1 millis" },
  handler: () => Effect.never
})

/** Succeeds on the third attempt. */
const Flaky = Task.make("flaky", {
  payload: Schema.Struct({}),
  success: Schema.Number,
  failure: Boom,
  maxAttempts: 5,
  backoff: { base: "1 millis", max: "2 millis" },
  handler: () =>
    Effect.flatMap(Task.TaskContext, (ctx) =>
      ctx.attempt < 3 ? Effect.fail(new Boom({ reason: `attempt ${ctx.attempt}` })) : Effect.succeed(ctx.attempt)
    )
})

const waitForState = (id: string, states: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* eventually(
      Effect.map(queue.get(id), (info) => states.includes(info.state)),
      `task ${id} to reach ${states.join("|")}`
    )
    return yield* queue.get(id)
  })

const countRows = (table: "baton_tasks" | "baton_completions") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ n: number }>`SELECT count(*) AS n FROM ${sql(table)}`.pipe(Effect.map((rows) => Number(rows[0]!.n)))
  )

export const taskQueueSuite = (backend: Backend) => {
  const layer = () => SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))

  describe(`TaskQueue [${backend.name}]`, () => {
    it.live("enqueue → worker → succeeded, with result and one completion event", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Double, { n: 21 }, { tags: ["a"], namespace: "tenant-1" })
        const pending = yield* queue.get(id)
        assert.strictEqual(pending.state, "pending")
        assert.deepStrictEqual(pending.payload, { n: 21 })
        assert.strictEqual(pending.namespace, "tenant-1")
        assert.deepStrictEqual(pending.tags, ["a"])
        yield* Worker.run({ tasks: [Double], concurrency: 2 })
        const done = yield* waitForState(id, ["succeeded"])
        assert.strictEqual(done.attempts, 1)
        assert.deepStrictEqual(Option.getOrThrow(done.result), { doubled: 42 })
        assert.isDefined(done.finishedAt)
        assert.deepStrictEqual(yield* queue.result(Double, id), Option.some({ doubled: 42 }))
        const sql = yield* SqlClient.SqlClient
        const events = yield* sql<{ task_id: string; outcome: string; namespace: string; tags: string }>`
          SELECT task_id, outcome, namespace, tags FROM baton_completions`
        assert.deepStrictEqual(events, [{ task_id: id, outcome: "succeeded", namespace: "tenant-1", tags: '["a"]' }])
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.effect("enqueue with an invalid payload fails at enqueue and stores nothing", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const error = yield* Effect.flip(queue.enqueue(Double, { n: "x" } as never))
        assert.strictEqual(error._tag, "InvalidPayload")
        assert.strictEqual((error as InvalidPayload).task, "double")
        assert.match(error.message, /n/)
        assert.strictEqual(yield* countRows("baton_tasks"), 0)
      }).pipe(Effect.provide(layer()))
    )

    it.effect("enqueueMany is all or nothing", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const ids = yield* queue.enqueueMany([Task.call(Double, { n: 1 }), Task.call(Double, { n: 2 })])
        assert.strictEqual(ids.length, 2)
        assert.notStrictEqual(ids[0], ids[1])
        const error = yield* Effect.flip(
          queue.enqueueMany([Task.call(Double, { n: 3 }), Task.call(Double, { n: "bad" } as never)])
        )
        assert.strictEqual(error._tag, "InvalidPayload")
        assert.strictEqual(yield* countRows("baton_tasks"), 2)
      }).pipe(Effect.provide(layer()))
    )

    it.effect("the same idempotency key yields the same task, even under concurrency", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const ids = yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) => queue.enqueue(Double, { n: i }, { idempotencyKey: "order-42" }),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(new Set(ids).size, 1)
        assert.strictEqual(yield* countRows("baton_tasks"), 1)
        // Keys are scoped by namespace.
        const other = yield* queue.enqueue(Double, { n: 1 }, { idempotencyKey: "order-42", namespace: "other" })
        assert.notStrictEqual(other, ids[0])
        // Within one enqueueMany too.
        const many = yield* queue.enqueueMany([
          Task.call(Double, { n: 1 }, { idempotencyKey: "k" }),
          Task.call(Double, { n: 2 }, { idempotencyKey: "k" })
        ])
        assert.strictEqual(many[0], many[1])
      }).pipe(Effect.provide(layer()))
    )

    it.effect("transactional outbox: a rolled-back transaction leaves no task, a committed one does", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const sql = yield* SqlClient.SqlClient
        const rolledBack = yield* sql
          .withTransaction(
            Effect.gen(function* () {
              const id = yield* queue.enqueue(Double, { n: 1 })
              // Visible inside the transaction...
              assert.strictEqual((yield* queue.get(id)).state, "pending")
              return yield* Effect.fail("abort" as const)
            })
          )
          .pipe(Effect.flip)
        assert.strictEqual(rolledBack, "abort")
        assert.strictEqual(yield* countRows("baton_tasks"), 0)
        const id = yield* sql.withTransaction(queue.enqueue(Double, { n: 2 }))
        assert.strictEqual((yield* queue.get(id)).state, "pending")
      }).pipe(Effect.provide(layer()))
    )

    it.live("a typed failure is retried with backoff, then the task is dead", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(AlwaysFails, { id: 1 })
        yield* Worker.run({ tasks: [AlwaysFails], pollInterval: { min: "1 millis", max: "5 millis" } })
        const info = yield* waitForState(id, ["dead"])
        assert.strictEqual(info.attempts, 3)
        const error = Option.getOrThrow(info.error)
        assert.strictEqual(error.kind, "failure")
        assert.strictEqual(error.attempt, 3)
        assert.deepStrictEqual(error.error, { _tag: "Boom", reason: "nope" })
        const sql = yield* SqlClient.SqlClient
        const events = yield* sql<{ outcome: string }>`SELECT outcome FROM baton_completions WHERE task_id = ${id}`
        assert.deepStrictEqual(events, [{ outcome: "dead" }])
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("a retried task that later succeeds records its attempts", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Flaky, {})
        yield* Worker.run({ tasks: [Flaky], pollInterval: { min: "1 millis", max: "5 millis" } })
        const info = yield* waitForState(id, ["succeeded"])
        assert.strictEqual(info.attempts, 3)
        assert.deepStrictEqual(yield* queue.result(Flaky, id), Option.some(3))
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("a handler's logs carry its task's annotations, each attempt its own", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const seen: Array<Record<string, unknown>> = []
        const capture = Logger.make(({ annotations, message }) => {
          if (Array.isArray(message) && message[0] === "handler ran") seen.push(Object.fromEntries(annotations))
        })
        const Logs = Task.make("logs", {
          payload: Schema.Struct({}),
          success: Schema.Void,
          failure: Boom,
          maxAttempts: 2,
          backoff: { base: "1 millis" },
          handler: () =>
            Effect.zipRight(
              Effect.log("handler ran"),
              Effect.flatMap(Task.TaskContext, (ctx) =>
                ctx.attempt < 2 ? Effect.fail(new Boom({ reason: "again" })) : Effect.void
              )
            )
        })
        const a = yield* queue.enqueue(Logs, {})
        const b = yield* queue.enqueue(Logs, {})
        yield* Worker.run({ tasks: [Logs], concurrency: 1, pollInterval: { min: "1 millis", max: "5 millis" } }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, capture))
        )
        yield* waitForState(a, ["succeeded"])
        yield* waitForState(b, ["succeeded"])
        const pick = ({ attempt, task, taskId }: Record<string, unknown>) => ({ taskId, task, attempt })
        assert.sameDeepMembers(seen.map(pick), [
          { taskId: a, task: "logs", attempt: "1" },
          { taskId: a, task: "logs", attempt: "2" },
          { taskId: b, task: "logs", attempt: "1" },
          { taskId: b, task: "logs", attempt: "2" }
        ])
        for (const annotations of seen) assert.isString(annotations.workerId)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("defects and timeouts are recorded distinctly", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const defect = yield* queue.enqueue(Defect, {})
        const slow = yield* queue.enqueue(Slow, {})
        yield* Worker.run({ tasks: [Defect, Slow], pollInterval: { min: "1 millis", max: "5 millis" } })
        const d = yield* waitForState(defect, ["dead"])
        assert.strictEqual(Option.getOrThrow(d.error).kind, "defect")
        assert.match(Option.getOrThrow(d.error).message, /kaboom/)
        const s = yield* waitForState(slow, ["dead"])
        assert.strictEqual(s.attempts, 2)
        assert.strictEqual(Option.getOrThrow(s.error).kind, "timeout")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("an undecodable payload fails permanently without retries; the worker keeps running", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        // Written by an older producer with another schema.
        const [bad] = yield* queue.enqueueRaw([{ name: "double", payload: { n: "not a number" }, maxAttempts: 5 }])
        const [unknown] = yield* queue.enqueueRaw([{ name: "no-such-task", payload: {} }])
        const good = yield* queue.enqueue(Double, { n: 5 })
        yield* Worker.run({ tasks: [Double], pollInterval: { min: "1 millis", max: "5 millis" } })
        const failed = yield* waitForState(bad!, ["failed"])
        assert.strictEqual(failed.attempts, 1)
        assert.strictEqual(Option.getOrThrow(failed.error).kind, "decode")
        assert.match(Option.getOrThrow(failed.error).message, /payload does not decode/)
        const missing = yield* waitForState(unknown!, ["failed"])
        assert.strictEqual(Option.getOrThrow(missing.error).kind, "unknown_task")
        assert.match(Option.getOrThrow(missing.error).message, /no-such-task/)
        assert.strictEqual((yield* waitForState(good, ["succeeded"])).state, "succeeded")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.effect("a duplicated completion is refused by the lease guard and counted once", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Double, { n: 1 })
        const [first] = yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: -1, workerId: "w1" })
        assert.strictEqual(first!.id, id)
        // The lease is already expired (leaseMs -1): the reconciler hands the task back, another worker claims it.
        assert.strictEqual(yield* queue.reclaimExpired, 1)
        const [second] = yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: 60_000, workerId: "w2" })
        assert.strictEqual(second!.id, id)
        assert.notStrictEqual(second!.leaseId, first!.leaseId)
        assert.strictEqual(second!.attempt, 2)
        // The first execution finishes late: refused.
        assert.deepStrictEqual(yield* queue.complete([{ id, leaseId: first!.leaseId, result: { doubled: 0 } }]), [
          false
        ])
        assert.deepStrictEqual(yield* queue.complete([{ id, leaseId: second!.leaseId, result: { doubled: 2 } }]), [
          true
        ])
        // And a replay of the winning completion is refused too.
        assert.deepStrictEqual(yield* queue.complete([{ id, leaseId: second!.leaseId, result: { doubled: 9 } }]), [
          false
        ])
        const info = yield* queue.get(id)
        assert.deepStrictEqual(Option.getOrThrow(info.result), { doubled: 2 })
        assert.strictEqual(yield* countRows("baton_completions"), 1)
      }).pipe(Effect.provide(layer()))
    )

    it.effect("a task out of attempts whose lease expired becomes dead with an event", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Double, { n: 1 }, { maxAttempts: 1 })
        yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: -1, workerId: "w1" })
        assert.strictEqual(yield* queue.reclaimExpired, 1)
        const info = yield* queue.get(id)
        assert.strictEqual(info.state, "dead")
        assert.strictEqual(Option.getOrThrow(info.error).kind, "lease_expired")
        assert.strictEqual(yield* countRows("baton_completions"), 1)
      }).pipe(Effect.provide(layer()))
    )

    it.effect("claims respect queues, run-at and priority", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const low = yield* queue.enqueue(Double, { n: 1 }, { priority: 0 })
        const high = yield* queue.enqueue(Double, { n: 2 }, { priority: 10 })
        const later = yield* queue.enqueue(Double, { n: 3 }, { delay: "1 hour" })
        const elsewhere = yield* queue.enqueue(Double, { n: 4 }, { queue: "other" })
        const claimed = yield* queue.claim({ queues: ["default"], limit: 10, leaseMs: 60_000, workerId: "w" })
        assert.deepStrictEqual(
          claimed.map((task) => task.id),
          [high, low]
        )
        assert.strictEqual((yield* queue.get(later)).state, "pending")
        const other = yield* queue.claim({ queues: ["other"], limit: 10, leaseMs: 60_000, workerId: "w" })
        assert.deepStrictEqual(
          other.map((task) => task.id),
          [elsewhere]
        )
      }).pipe(Effect.provide(layer()))
    )

    it.effect("cancel: a pending task becomes cancelled with an event; a finished one is untouched", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* queue.enqueue(Double, { n: 1 })
        assert.isTrue(yield* queue.cancel(id))
        assert.isFalse(yield* queue.cancel(id))
        assert.strictEqual((yield* queue.get(id)).state, "cancelled")
        assert.strictEqual(yield* countRows("baton_completions"), 1)
        // A running task's completion is refused after cancel.
        const running = yield* queue.enqueue(Double, { n: 2 })
        const [claimed] = yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: 60_000, workerId: "w" })
        assert.isTrue(yield* queue.cancel(running))
        assert.deepStrictEqual(yield* queue.complete([{ id: running, leaseId: claimed!.leaseId, result: null }]), [
          false
        ])
        assert.strictEqual((yield* queue.get(running)).state, "cancelled")
        const missing = yield* Effect.flip(queue.get("no-such-id"))
        assert.strictEqual(missing._tag, "TaskNotFound")
      }).pipe(Effect.provide(layer()))
    )

    it.live("graceful shutdown: in-flight tasks finish within the grace period, the rest are released", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const started = yield* Deferred.make<void>()
        const finish = yield* Deferred.make<void>()
        const Gate = Task.make("gate", {
          payload: Schema.Struct({ hold: Schema.Boolean }),
          success: Schema.Void,
          handler: ({ hold }) =>
            Effect.zipRight(Deferred.succeed(started, undefined), hold ? Effect.never : Deferred.await(finish))
        })
        // 1) finishes within the grace period
        const quick = yield* queue.enqueue(Gate, { hold: false })
        const scope1 = yield* Scope.make()
        yield* Worker.run({ tasks: [Gate], shutdownGracePeriod: "10 seconds" }).pipe(Scope.extend(scope1))
        yield* Deferred.await(started)
        const closing = yield* Effect.fork(Scope.close(scope1, Exit.void))
        yield* Deferred.succeed(finish, undefined)
        yield* closing.await
        assert.strictEqual((yield* queue.get(quick)).state, "succeeded")
        // 2) does not finish: released back to pending, the attempt not counted
        const stuck = yield* queue.enqueue(Gate, { hold: true })
        const started2 = yield* Ref.make(false)
        const scope2 = yield* Scope.make()
        yield* Worker.run({ tasks: [Gate], shutdownGracePeriod: "50 millis" }).pipe(Scope.extend(scope2))
        yield* eventually(
          Effect.map(queue.get(stuck), (info) => info.state === "running"),
          "the stuck task to start"
        )
        yield* Ref.set(started2, true)
        yield* Scope.close(scope2, Exit.void)
        const info = yield* queue.get(stuck)
        assert.strictEqual(info.state, "pending")
        assert.strictEqual(info.attempts, 0)
        assert.strictEqual(Option.getOrThrow(info.error).kind, "interrupted")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("many tasks with concurrency: each runs once and succeeds", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const runs = yield* Ref.make(new Map<number, number>())
        const Count = Task.make("count", {
          payload: Schema.Struct({ i: Schema.Number }),
          success: Schema.Number,
          handler: ({ i }) =>
            Effect.as(
              Ref.update(runs, (m) => new Map(m).set(i, (m.get(i) ?? 0) + 1)),
              i
            )
        })
        const n = 300
        yield* queue.enqueueMany(Array.from({ length: n }, (_, i) => Task.call(Count, { i })))
        yield* Worker.run({ tasks: [Count], concurrency: 8 })
        yield* Worker.run({ tasks: [Count], concurrency: 8 })
        yield* eventually(
          Effect.map(queue.counts, (c) => c.succeeded === n),
          `${n} tasks to succeed`
        )
        const seen = yield* Ref.get(runs)
        assert.strictEqual(seen.size, n)
        assert.isTrue([...seen.values()].every((count) => count === 1))
        assert.strictEqual(yield* countRows("baton_completions"), n)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )
  })
}
