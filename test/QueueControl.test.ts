/**
 * QueueControl: pause/resume, the rate limit and the global concurrency limit, enforced by `TaskQueue.claim` on every
 * backend; the rate limit across four workers on Postgres (limit 10/s, measured claims per second).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { QueueControl } from "../src/QueueControl.js"
import * as SqlQueueControl from "../src/SqlQueueControl.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import * as Worker from "../src/Worker.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Backends from "./support/backends.js"
import { eventually, pgAvailable } from "./support/backends.js"

const claimAll = (queues: ReadonlyArray<string>, limit = 100) =>
  Effect.flatMap(TaskQueue, (queue) => queue.claim({ queues, limit, leaseMs: 60_000, workerId: "w" }))

const enqueue = (queue: string, n: number) =>
  Effect.flatMap(TaskQueue, (tasks) =>
    tasks.enqueueRaw(Array.from({ length: n }, (_, i) => ({ name: "t", payload: i, queue })))
  )

for (const backend of Backends.all().filter((b) => b.name !== "sqlite")) {
  const layer = () =>
    Layer.mergeAll(SqlTaskQueue.layer, SqlQueueControl.layer).pipe(Layer.provideMerge(backend.storage()))

  describe(`QueueControl [${backend.name}]`, () => {
    it.effect("pause: nothing is claimed while paused (other queues still are); everything after resume", () =>
      Effect.gen(function* () {
        const control = yield* QueueControl
        yield* enqueue("p", 5)
        yield* enqueue("other", 2)
        yield* control.pause("p")
        assert.isTrue((yield* control.get("p")).paused)
        const whilePaused = yield* claimAll(["p", "other"])
        assert.deepStrictEqual(whilePaused.map((t) => t.queue).sort(), ["other", "other"])
        yield* enqueue("p", 1) // enqueue still works while paused
        assert.strictEqual((yield* claimAll(["p"])).length, 0)
        yield* control.resume("p")
        assert.deepStrictEqual(yield* control.list, [])
        assert.strictEqual((yield* claimAll(["p"])).length, 6)
      }).pipe(Effect.provide(layer()))
    )

    it.effect("rate limit: at most N claims per window across claimers; the next window allows N more", () =>
      Effect.gen(function* () {
        const control = yield* QueueControl
        yield* control.setRateLimit("r", { limit: 10, interval: "1 second" })
        yield* enqueue("r", 35)
        yield* TestClock.adjust("1 millis")
        const first = yield* Effect.all([claimAll(["r"]), claimAll(["r"]), claimAll(["r"])], {
          concurrency: "unbounded"
        })
        assert.strictEqual(first.flat().length, 10)
        yield* TestClock.adjust("500 millis")
        assert.strictEqual((yield* claimAll(["r"])).length, 0)
        yield* TestClock.adjust("600 millis")
        assert.strictEqual((yield* claimAll(["r"], 4)).length, 4)
        assert.strictEqual((yield* claimAll(["r"])).length, 6)
        const settings = yield* control.get("r")
        assert.deepStrictEqual(settings.rateLimit, { limit: 10, intervalMs: 1000 })
        // Removing the limit: the queue is claimed by the ordinary claim again (after the settings cache expires).
        yield* control.setRateLimit("r", undefined)
        yield* TestClock.adjust("2 seconds")
        assert.strictEqual((yield* claimAll(["r"])).length, 15)
      }).pipe(Effect.provide(layer()))
    )

    it.effect(
      "a repeated idempotency key while pending: replace updates payload and run-at, debounce pushes it later",
      () =>
        Effect.gen(function* () {
          const tasks = yield* TaskQueue
          const Ping = Task.make("ping", { payload: Schema.Number, success: Schema.Void, handler: () => Effect.void })
          const first = yield* tasks.enqueue(Ping, 1, { idempotencyKey: "r", delay: "1 minute" })
          const again = yield* tasks.enqueue(Ping, 2, { idempotencyKey: "r", replace: true })
          assert.strictEqual(again, first)
          const replaced = yield* tasks.get(first)
          assert.strictEqual(replaced.payload, 2)
          assert.strictEqual(replaced.runAt.getTime(), 0)
          // Without replace the first enqueue wins, as before.
          yield* tasks.enqueue(Ping, 3, { idempotencyKey: "r" })
          assert.strictEqual((yield* tasks.get(first)).payload, 2)

          const d = yield* tasks.enqueue(Ping, 1, { idempotencyKey: "d", debounce: "10 seconds", queue: "deb" })
          assert.strictEqual((yield* tasks.get(d)).runAt.getTime(), 10_000)
          yield* TestClock.adjust("5 seconds")
          assert.strictEqual(yield* tasks.enqueue(Ping, 2, { idempotencyKey: "d", debounce: "10 seconds" }), d)
          const pushed = yield* tasks.get(d)
          assert.strictEqual(pushed.runAt.getTime(), 15_000)
          assert.strictEqual(pushed.payload, 1)
          yield* TestClock.adjust("7 seconds")
          assert.strictEqual((yield* claimAll(["deb"])).length, 0)
          yield* TestClock.adjust("3 seconds")
          assert.strictEqual((yield* claimAll(["deb"])).length, 1)
          // Running: a repeat changes nothing.
          yield* tasks.enqueue(Ping, 9, { idempotencyKey: "d", debounce: "10 seconds", replace: true })
          assert.strictEqual((yield* tasks.get(d)).payload, 1)
          const bad = yield* Effect.flip(tasks.enqueue(Ping, 1, { replace: true }))
          assert.strictEqual(bad._tag, "InvalidInput")
        }).pipe(Effect.provide(layer()))
    )

    it.effect("concurrency limit: at most N running; a finished task frees a slot", () =>
      Effect.gen(function* () {
        const control = yield* QueueControl
        const queue = yield* TaskQueue
        yield* control.setConcurrencyLimit("c", 3)
        yield* enqueue("c", 10)
        const first = yield* claimAll(["c"])
        assert.strictEqual(first.length, 3)
        assert.strictEqual((yield* claimAll(["c"])).length, 0)
        yield* queue.complete([{ id: first[0]!.id, leaseId: first[0]!.leaseId, result: null }])
        assert.strictEqual((yield* claimAll(["c"])).length, 1)
        const bad = yield* Effect.flip(control.setConcurrencyLimit("c", 0))
        assert.strictEqual(bad._tag, "InvalidInput")
      }).pipe(Effect.provide(layer()))
    )
  })
}

// Four workers, each with its own claims on its own pool connections: the limit holds because every claim of the queue
// takes the queue's row lock in its transaction, whichever worker or process claims. In-process workers (spawning four
// processes costs 40 s on a loaded machine); the database does not know the difference.
describe.skipIf(!pgAvailable())("QueueControl rate limit across workers [pg]", () => {
  it.live("4 workers, limit 10/s: measured claims per second stay within the limit", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* (yield* QueueControl).setRateLimit("default", { limit: 10, interval: "1 second" })
      yield* (yield* TaskQueue).enqueueRaw(Array.from({ length: 200 }, (_, i) => ({ name: "tick", payload: i })))
      const Tick = Task.make("tick", { payload: Schema.Number, success: Schema.Void, handler: () => Effect.void })
      for (let i = 0; i < 4; i++) {
        yield* Worker.run({
          tasks: [Tick],
          concurrency: 5,
          workerId: `w${i}`,
          pollInterval: { min: "5 millis", max: "50 millis" }
        })
      }
      // About 3 s of claims (31 at 10/s: four windows).
      const claimed = sql<{ n: number }>`SELECT count(*)::int AS n FROM baton_tasks WHERE started_at IS NOT NULL`
      yield* eventually(
        Effect.map(claimed, (rows) => rows[0]!.n >= 31),
        "31 claims",
        15_000
      )
      const rows = yield* sql<{ started_at: string; worker_id: string }>`SELECT started_at, worker_id
        FROM baton_tasks WHERE started_at IS NOT NULL ORDER BY started_at`
      const times = rows.map((row) => Number(row.started_at))
      const span = times[times.length - 1]! - times[0]!
      // Fixed windows of 1 s, each opened by a claim: a span of T ms touches at most floor(T/1000) + 1 windows.
      assert.isAtMost(times.length, 10 * (Math.floor(span / 1000) + 1))
      const perSecond = (times.length - 10) / (span / 1000)
      assert.isAtMost(perSecond, 10.5)
      const workers = new Set(rows.map((row) => row.worker_id)).size
      console.log(`rate limit 10/s, 4 workers: ${times.length} claims over ${span} ms by ${workers} workers`)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(SqlTaskQueue.layer, SqlQueueControl.layer).pipe(Layer.provideMerge(Backends.postgres.storage()))
      )
    )
  )
})
