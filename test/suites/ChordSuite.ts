/**
 * ChordRegistry conformance suite: the same behaviours on every backend (memory, SQLite file, Postgres).
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ChordRegistry from "../../src/ChordRegistry.js"
import { appendLog } from "../../src/internal/sql/completionLog.js"
import * as Reconciler from "../../src/Reconciler.js"
import * as SqlChordRegistry from "../../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Storage from "../../src/Storage.js"
import * as Task from "../../src/Task.js"
import { TaskQueue } from "../../src/TaskQueue.js"
import * as Worker from "../../src/Worker.js"
import { allTasks, Explode, Flaky, Nest, OnError, Square, Sum, Tally } from "../fixtures/chord-tasks.js"
import { type Backend, eventually } from "../support/backends.js"

const fast = { pollInterval: { min: "1 millis", max: "10 millis" } } as const

/**
 * Registry + completion backend + queue on a fresh storage (the production shape: the coordinator is driven by
 * completion events); the reconciler is driven by hand unless `options` says otherwise. `events: false` leaves the
 * completion backend out (the coordinator then polls).
 */
export const chordLayer = (
  backend: Backend,
  options: SqlChordRegistry.Options = { reconcileInterval: 0 },
  events = true
) => {
  const registry = SqlChordRegistry.layerWith({ pollInterval: { min: "1 millis", max: "10 millis" }, ...options })
  const base = SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))
  return events
    ? registry.pipe(
        Layer.provideMerge(SqlCompletionBackend.layerWith({ pollInterval: { min: "1 millis", max: "20 millis" } })),
        Layer.provideMerge(base)
      )
    : registry.pipe(Layer.provideMerge(base))
}

const runWorker = (options: Partial<Worker.WorkerOptions<typeof allTasks>> = {}) =>
  Worker.run({ tasks: allTasks, concurrency: 4, ...fast, ...options })

const count = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ n: number }>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(Effect.orDie(query(sql)), (rows) => Number(rows[0]?.n ?? 0)))

const tasksNamed = (name: string) =>
  count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE name = ${name}`)

const chordEvents = (chordId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.orDie(
      sql<{ kind: string; outcome: string; task_id: string | null }>`SELECT kind, outcome, task_id
        FROM baton_completions WHERE chord_id = ${chordId} AND kind <> 'task' ORDER BY seq`
    )
  )

const waitTask = (id: string, states: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* eventually(
      Effect.map(queue.get(id), (info) => states.includes(info.state)),
      `task ${id} to reach ${states.join("|")}`
    )
    return yield* queue.get(id)
  })

const gateFile = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "baton-gate-")), "open")

export const chordSuite = (backend: Backend) => {
  describe(`ChordRegistry [${backend.name}]`, () => {
    it.live("the callback gets the body results in body order, once; handle, get and events agree", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        // Priorities reverse the execution order, so completion order differs from body order.
        const body = [1, 2, 3, 4, 5].map((n) => Task.call(Square, { n }, { priority: n }))
        const handle = yield* registry.chord({
          body,
          callback: ChordRegistry.callback(Sum, { label: "squares" }),
          tags: ["t1"],
          namespace: "tenant-a"
        })
        assert.isTrue(handle.created)
        const before = yield* registry.get(handle.chordId)
        assert.strictEqual(before.state, "running")
        assert.strictEqual(before.expected, 5)
        assert.strictEqual(before.succeeded, 0)
        yield* runWorker({ concurrency: 1 })
        const callbackId = yield* handle.await
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "completed")
        assert.strictEqual(info.succeeded, 5)
        assert.strictEqual(info.failed + info.cancelled, 0)
        assert.strictEqual(info.callbackTaskId, callbackId)
        assert.isFalse(info.healed)
        assert.isDefined(info.dispatchedAt)
        assert.isTrue(Option.isNone(info.failure))
        const callback = yield* queue.get(callbackId)
        assert.strictEqual(callback.name, "chord-sum")
        assert.deepStrictEqual(callback.payload, { results: [1, 4, 9, 16, 25], label: "squares" })
        assert.strictEqual(callback.namespace, "tenant-a")
        assert.deepStrictEqual(callback.tags, ["t1"])
        // Completion order really was reversed.
        const sql = yield* SqlClient.SqlClient
        // (By the completions log's order, which follows the order the handlers finished in, also within one group
        // commit, whose tasks share their finished_at.)
        const order = yield* sql<{ chord_index: number }>`SELECT t.chord_index FROM baton_completions c
          JOIN baton_tasks t ON t.id = c.task_id
          WHERE c.chord_id = ${handle.chordId} AND c.kind = 'task' ORDER BY c.seq`
        assert.deepStrictEqual(
          order.map((row) => Number(row.chord_index)),
          [4, 3, 2, 1, 0]
        )
        const done = yield* waitTask(callbackId, ["succeeded"])
        assert.deepStrictEqual(Option.getOrThrow(done.result), { label: "squares", sum: 55, count: 5 })
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
        const events = yield* chordEvents(handle.chordId)
        assert.deepStrictEqual(
          events.map((e) => [e.kind, e.outcome]),
          [
            ["chord.completed", "succeeded"],
            ["chord.callback.enqueued", "succeeded"]
          ]
        )
        assert.strictEqual(events[1]!.task_id, callbackId)
        // Body tasks run in the chord's namespace, with its tags, and know their chord.
        const bodyTask = yield* sql<{ namespace: string; tags: string }>`SELECT namespace, tags FROM baton_tasks
          WHERE chord_id = ${handle.chordId} LIMIT 1`
        assert.deepStrictEqual(bodyTask[0], { namespace: "tenant-a", tags: '["t1"]' })
        // Awaiting an ended chord from the registry (any process can) returns at once.
        assert.strictEqual(yield* registry.await(handle.chordId), callbackId)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("a callback whose idempotency key another task holds: the chord completes pointing at that task", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const existing = yield* queue.enqueue(
          Sum,
          { label: "first", results: [] },
          { idempotencyKey: "sum-once", delay: "1 hour" }
        )
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 }), Task.call(Square, { n: 3 })],
          callback: ChordRegistry.callback(Sum, { label: "second" }, { idempotencyKey: "sum-once" })
        })
        yield* runWorker()
        assert.strictEqual(yield* handle.await, existing)
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "completed")
        assert.deepStrictEqual([info.succeeded, info.failed], [2, 0])
        assert.strictEqual(yield* tasksNamed(Sum.name), 1)
        assert.deepStrictEqual(
          (yield* chordEvents(handle.chordId)).map((e) => [e.kind, e.task_id]),
          [
            ["chord.completed", null],
            ["chord.callback.enqueued", existing]
          ]
        )
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("a chord sealed without a dispatch template (before migration 0012) completes the same way", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [1, 2, 3].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Sum, { label: "old" }, { priority: 3 })
        })
        const [row] = yield* sql<{ callback: string }>`SELECT callback FROM baton_chords WHERE id = ${handle.chordId}`
        const sealed = JSON.parse(row!.callback) as Record<string, unknown>
        assert.isDefined(sealed.fast)
        delete sealed.fast
        yield* sql`UPDATE baton_chords SET callback = ${JSON.stringify(sealed)} WHERE id = ${handle.chordId}`
        yield* runWorker()
        const callbackId = yield* handle.await
        const callback = yield* queue.get(callbackId)
        assert.deepStrictEqual(callback.payload, { label: "old", results: [1, 4, 9] })
        assert.strictEqual(callback.priority, 3)
        const done = yield* waitTask(callbackId, ["succeeded"])
        assert.deepStrictEqual(Option.getOrThrow(done.result), { label: "old", sum: 14, count: 3 })
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.effect("an invalid body or callback payload fails before anything is written", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const bad = yield* Effect.flip(
          registry.chord({
            body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: "x" } as never)],
            callback: ChordRegistry.callback(Sum, { label: "x" })
          })
        )
        assert.strictEqual(bad._tag, "InvalidPayload")
        const badArgs = yield* Effect.flip(
          registry.chord({
            body: [Task.call(Square, { n: 1 })],
            callback: ChordRegistry.callback(Sum, { label: 42 } as never)
          })
        )
        assert.strictEqual(badArgs._tag, "InvalidPayload")
        // A callback whose payload has no `results` field is refused (the type check is bypassed here on purpose).
        const noResults = yield* Effect.flip(
          registry.chord({
            body: [Task.call(Square, { n: 1 })],
            callback: ChordRegistry.callback(Square as never, { n: 1 } as never)
          } as never)
        )
        assert.strictEqual(noResults._tag, "InvalidPayload")
        assert.match(noResults.message, /results/)
        assert.strictEqual(yield* count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks`), 0)
        assert.strictEqual(yield* count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords`), 0)
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.live("an empty body dispatches the callback at once with [] (in the creating transaction)", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const handle = yield* registry.chord({ body: [], callback: ChordRegistry.callback(Sum, { label: "none" }) })
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "completed")
        assert.strictEqual(info.expected, 0)
        const callbackId = info.callbackTaskId!
        assert.deepStrictEqual((yield* queue.get(callbackId)).payload, { results: [], label: "none" })
        assert.strictEqual(yield* handle.await, callbackId)
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.effect("a rolled-back caller transaction leaves no chord and no body task", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        const error = yield* sql
          .withTransaction(
            Effect.zipRight(
              registry.chord({
                body: [Task.call(Square, { n: 1 })],
                callback: ChordRegistry.callback(Sum, { label: "x" })
              }),
              Effect.fail("abort" as const)
            )
          )
          .pipe(Effect.flip)
        assert.strictEqual(error, "abort")
        assert.strictEqual(yield* count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords`), 0)
        assert.strictEqual(yield* count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks`), 0)
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.effect("the same idempotencyKey returns the existing chord, even under concurrency", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const handles = yield* Effect.forEach(
          Array.from({ length: 12 }, (_, i) => i),
          (i) =>
            registry.chord({
              body: [Task.call(Square, { n: i }), Task.call(Square, { n: i + 1 })],
              callback: ChordRegistry.callback(Sum, { label: `k${i}` }),
              idempotencyKey: "batch-7"
            }),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(new Set(handles.map((h) => h.chordId)).size, 1)
        assert.strictEqual(handles.filter((h) => h.created).length, 1)
        assert.strictEqual(yield* tasksNamed("chord-square"), 2)
        // Keys are scoped by namespace.
        const other = yield* registry.chord({
          body: [Task.call(Square, { n: 1 })],
          callback: ChordRegistry.callback(Sum, { label: "o" }),
          idempotencyKey: "batch-7",
          namespace: "other"
        })
        assert.isTrue(other.created)
        assert.notStrictEqual(other.chordId, handles[0]!.chordId)
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.live("a body task that fails for good fails the chord: siblings cancelled, no callback, onError once", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        // The failing task runs first (priority); with one slot the others are still pending when it fails.
        const handle = yield* registry.chord({
          body: [
            Task.call(Square, { n: 1 }),
            Task.call(Explode, { n: 2 }, { priority: 10 }),
            Task.call(Square, { n: 3 }),
            Task.call(Square, { n: 4 })
          ],
          callback: ChordRegistry.callback(Sum, { label: "never" }),
          onError: ChordRegistry.onError(OnError, { label: "oops" })
        })
        yield* runWorker({ concurrency: 1 })
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error._tag, "ChordFailed")
        assert.strictEqual(error.reason, "body_failed")
        assert.strictEqual(error.taskName, "chord-explode")
        assert.strictEqual(error.index, 1)
        assert.strictEqual(error.taskState, "dead")
        assert.strictEqual(error.error?.kind, "failure")
        assert.deepStrictEqual(error.error?.error, { _tag: "Boom", reason: "no 2" })
        assert.match(error.message, /chord-explode/)
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "failed")
        assert.strictEqual(info.callbackTaskId, undefined)
        assert.strictEqual(Option.getOrThrow(info.failure).taskId, error.taskId)
        assert.strictEqual(info.failed, 1)
        assert.strictEqual(info.cancelled, 3)
        const sql = yield* SqlClient.SqlClient
        const states = yield* sql<{ state: string }>`SELECT state FROM baton_tasks
          WHERE chord_id = ${handle.chordId} ORDER BY chord_index`
        assert.deepStrictEqual(
          states.map((s) => s.state),
          ["cancelled", "dead", "cancelled", "cancelled"]
        )
        assert.strictEqual(yield* tasksNamed("chord-sum"), 0)
        assert.strictEqual(yield* tasksNamed("chord-on-error"), 1)
        const errorTask = yield* waitTask(info.errorTaskId!, ["succeeded"])
        assert.strictEqual(Option.getOrThrow(errorTask.result), "oops: chord-explode")
        assert.strictEqual((errorTask.payload as { failure: { index: number } }).failure.index, 1)
        const events = yield* chordEvents(handle.chordId)
        assert.deepStrictEqual(
          events.map((e) => [e.kind, e.outcome]),
          [
            ["chord.failed", "failed"],
            ["chord.callback.enqueued", "failed"]
          ]
        )
        // The cancelled siblings are completion events too.
        const cancelled = yield* count(
          (sql) =>
            sql<{ n: number }>`SELECT count(*) AS n FROM baton_completions
            WHERE chord_id = ${handle.chordId} AND kind = 'task' AND outcome = 'cancelled'`
        )
        assert.strictEqual(cancelled, 3)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("a body task that dies after its retries fails the chord", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 1 }), Task.call(Flaky, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "never" })
        })
        yield* runWorker()
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error.taskState, "dead")
        assert.strictEqual(error.error?.attempt, 2)
        assert.strictEqual(yield* tasksNamed("chord-sum"), 0)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("failurePolicy continue waits for the whole body and passes every outcome in order", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 }), Task.call(Explode, { n: 3 }), Task.call(Square, { n: 4 })],
          callback: ChordRegistry.callback(Tally, {}),
          failurePolicy: "continue"
        })
        yield* runWorker()
        const callbackId = yield* handle.await
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "completed")
        assert.deepStrictEqual([info.succeeded, info.failed, info.cancelled], [2, 1, 0])
        const payload = (yield* queue.get(callbackId)).payload as {
          results: ReadonlyArray<{ _tag: string; value?: number; state?: string; error?: { error: unknown } }>
        }
        assert.deepStrictEqual(
          payload.results.map((r) => r._tag),
          ["Success", "Failure", "Success"]
        )
        assert.strictEqual(payload.results[0]!.value, 4)
        assert.strictEqual(payload.results[1]!.state, "dead")
        assert.deepStrictEqual(payload.results[1]!.error!.error, { _tag: "Boom", reason: "no 3" })
        const done = yield* waitTask(callbackId, ["succeeded"])
        assert.deepStrictEqual(Option.getOrThrow(done.result), { ok: 2, failed: 1 })
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("cancel: body cancelled, no callback, no onError; await fails; a second cancel is refused", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "x" }),
          onError: ChordRegistry.onError(OnError, { label: "y" })
        })
        assert.isTrue(yield* registry.cancel(handle.chordId))
        assert.isFalse(yield* registry.cancel(handle.chordId))
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error.reason, "cancelled")
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "cancelled")
        assert.strictEqual(info.cancelled, 2)
        const queue = yield* TaskQueue
        assert.strictEqual((yield* queue.counts).cancelled, 2)
        assert.strictEqual(yield* tasksNamed("chord-sum"), 0)
        assert.strictEqual(yield* tasksNamed("chord-on-error"), 0)
        const events = yield* chordEvents(handle.chordId)
        assert.deepStrictEqual(
          events.map((e) => [e.kind, e.outcome]),
          [["chord.failed", "cancelled"]]
        )
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.live("cancelling one body task by hand fails the chord (policy fail)", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "x" })
        })
        const sql = yield* SqlClient.SqlClient
        const ids = yield* sql<{ id: string }>`SELECT id FROM baton_tasks WHERE chord_id = ${handle.chordId}
          ORDER BY chord_index`
        assert.isTrue(yield* queue.cancel(ids[1]!.id))
        const error = yield* Effect.flip(handle.await)
        assert.strictEqual(error.reason, "body_failed")
        assert.strictEqual(error.taskState, "cancelled")
        assert.strictEqual(error.index, 1)
        assert.strictEqual((yield* queue.get(ids[0]!.id)).state, "cancelled")
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.effect("a body task executed twice is counted once (the stale lease's completion is refused)", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 3 }), Task.call(Square, { n: 5 })],
          callback: ChordRegistry.callback(Sum, { label: "twice" })
        })
        const claim = (limit: number) => queue.claim({ queues: ["default"], limit, leaseMs: 60_000, workerId: "w" })
        const first = yield* claim(1)
        const a = first[0]!
        // a's lease expires while its handler "still runs"; it is handed back and claimed again under a new lease.
        yield* sql`UPDATE baton_tasks SET lease_expires_at = -1 WHERE id = ${a.id}`
        assert.strictEqual(yield* queue.reclaimExpired, 1)
        const second = yield* claim(2)
        const again = second.find((t) => t.id === a.id)!
        const b = second.find((t) => t.id !== a.id)!
        assert.notStrictEqual(again.leaseId, a.leaseId)
        const value = a.payload.includes('"n":3') ? 9 : 25
        assert.deepStrictEqual(yield* queue.complete([{ id: a.id, leaseId: again.leaseId, result: value }]), [true])
        // The first execution finishes late: refused, not counted.
        assert.deepStrictEqual(yield* queue.complete([{ id: a.id, leaseId: a.leaseId, result: value }]), [false])
        let info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.succeeded, 1)
        assert.strictEqual(info.state, "running")
        // Both executions of b race in one batch: one counts.
        const bValue = value === 9 ? 25 : 9
        assert.deepStrictEqual(
          yield* queue.complete([
            { id: b.id, leaseId: b.leaseId, result: bValue },
            { id: b.id, leaseId: "stale-lease", result: bValue }
          ]),
          [true, true]
        )
        info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.succeeded, 2)
        assert.strictEqual(info.state, "completed")
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
        const queueInfo = yield* queue.get(info.callbackTaskId!)
        assert.deepStrictEqual(queueInfo.payload, { results: [9, 25], label: "twice" })
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.live("the reconciler dispatches a chord left complete but undispatched, once, and counts it as healed", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 }), Task.call(Square, { n: 3 })],
          callback: ChordRegistry.callback(Sum, { label: "healed" })
        })
        // Fault injection: the body completed and the counter reached expected, but nothing dispatched (the state a
        // "count, commit, then dispatch" design leaves when the worker dies in between).
        yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = CASE WHEN chord_index = 0 THEN '4' ELSE '9' END,
          finished_at = 1 WHERE chord_id = ${handle.chordId}`
        yield* sql`UPDATE baton_chords SET succeeded = expected, last_body_at = 1 WHERE id = ${handle.chordId}`
        const healedBefore = (yield* Metric.value(ChordRegistry.chordsHealed)).count
        const passes = yield* Effect.all([registry.reconcile, registry.reconcile, registry.reconcile], {
          concurrency: "unbounded"
        })
        assert.strictEqual(
          passes.reduce((a, b) => a + b, 0),
          1
        )
        assert.strictEqual((yield* Metric.value(ChordRegistry.chordsHealed)).count - healedBefore, 1)
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "completed")
        assert.isTrue(info.healed)
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
        const queue = yield* TaskQueue
        assert.deepStrictEqual((yield* queue.get(info.callbackTaskId!)).payload, {
          results: [4, 9],
          label: "healed"
        })
        assert.strictEqual(yield* registry.reconcile, 0)
        assert.strictEqual(yield* handle.await, info.callbackTaskId)
      }).pipe(Effect.provide(chordLayer(backend)))
    )

    it.effect("the reconciler recounts a stale chord whose counters missed completions", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 }), Task.call(Explode, { n: 3 })],
          callback: ChordRegistry.callback(Sum, { label: "stale" }),
          onError: ChordRegistry.onError(OnError, { label: "e" })
        })
        // Terminal transitions that bypassed the ledger entirely (counters still 0), long ago.
        yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = '4', finished_at = 1
          WHERE chord_id = ${handle.chordId} AND chord_index = 0`
        yield* sql`UPDATE baton_tasks SET state = 'failed', finished_at = 2,
          error = '{"kind":"failure","message":"x","attempt":1}'
          WHERE chord_id = ${handle.chordId} AND chord_index = 1`
        yield* sql`UPDATE baton_chords SET created_at = -1000 WHERE id = ${handle.chordId}`
        assert.strictEqual(yield* registry.reconcile, 1)
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.state, "failed")
        assert.deepStrictEqual([info.succeeded, info.failed], [1, 1])
        assert.strictEqual(Option.getOrThrow(info.failure).index, 1)
        assert.strictEqual(yield* tasksNamed("chord-on-error"), 1)
      }).pipe(Effect.provide(chordLayer(backend, { reconcileInterval: 0, staleAfter: "1 millis" })))
    )

    it.live("the coordinator's own reconciler heals without being asked", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "auto" })
        })
        yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = '4', finished_at = 1
          WHERE chord_id = ${handle.chordId}`
        yield* sql`UPDATE baton_chords SET succeeded = 1, last_body_at = 1 WHERE id = ${handle.chordId}`
        const callbackId = yield* handle.await
        assert.isTrue((yield* registry.get(handle.chordId)).healed)
        assert.isString(callbackId)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend, { reconcileInterval: "20 millis" })))
    )

    it.live("exactly once under a race: 8 workers complete the last body tasks at the same moment", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const gate = gateFile()
        const handle = yield* registry.chord({
          body: Array.from({ length: 16 }, (_, n) => Task.call(Square, { n, gate })),
          callback: ChordRegistry.callback(Sum, { label: "race" })
        })
        // 8 independent workers (each its own completion batches), 2 slots each: all 16 handlers wait at the gate.
        for (let i = 0; i < 8; i++) yield* runWorker({ concurrency: 2, prefetch: 0, workerId: `racer-${i}` })
        const queue = yield* TaskQueue
        yield* eventually(
          Effect.map(queue.counts, (c) => c.running === 16),
          "all 16 body tasks running"
        )
        // Reconciler passes race the completions too.
        const reconcilers = yield* Effect.fork(
          Effect.all(
            Array.from({ length: 8 }, () => Effect.repeatN(registry.reconcile, 20)),
            { concurrency: "unbounded" }
          )
        )
        fs.writeFileSync(gate, "")
        const callbackId = yield* handle.await
        yield* reconcilers.await
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
        const info = yield* registry.get(handle.chordId)
        assert.strictEqual(info.succeeded, 16)
        assert.strictEqual(info.callbackTaskId, callbackId)
        const events = yield* chordEvents(handle.chordId)
        assert.strictEqual(events.filter((e) => e.kind === "chord.callback.enqueued").length, 1)
        assert.deepStrictEqual((yield* queue.get(callbackId)).payload, {
          results: Array.from({ length: 16 }, (_, n) => n * n),
          label: "race"
        })
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("exactly once under a race: 8 fibers dispatch the same due chord", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        for (let round = 0; round < 5; round++) {
          const handle = yield* registry.chord({
            body: [Task.call(Square, { n: round })],
            callback: ChordRegistry.callback(Sum, { label: `r${round}` })
          })
          yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = '1', finished_at = 1
            WHERE chord_id = ${handle.chordId}`
          yield* sql`UPDATE baton_chords SET succeeded = 1 WHERE id = ${handle.chordId}`
          const start = yield* Deferred.make<void>()
          const passes = yield* Effect.all(
            Array.from({ length: 8 }, () => Effect.zipRight(Deferred.await(start), registry.reconcile)),
            { concurrency: "unbounded" }
          ).pipe(Effect.fork)
          yield* Deferred.succeed(start, undefined)
          const healed = yield* passes.await
          assert.isTrue(Exit.isSuccess(healed))
          if (Exit.isSuccess(healed))
            assert.strictEqual(
              healed.value.reduce((a, b) => a + b, 0),
              1
            )
        }
        assert.strictEqual(yield* tasksNamed("chord-sum"), 5)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("nested chords: a callback creates a chord whose callback runs too", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const outer = yield* registry.chord({
          body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Nest, { depth: 3 })
        })
        yield* runWorker()
        const nestId = yield* outer.await
        const nest = yield* waitTask(nestId, ["succeeded"])
        const innerId = Option.getOrThrow(nest.result) as string
        const innerCallback = yield* registry.await(innerId)
        const inner = yield* waitTask(innerCallback, ["succeeded"])
        // outer sum = 1 + 4 = 5; inner body = [5², 3²]
        assert.deepStrictEqual(Option.getOrThrow(inner.result), { label: "inner-of-5", sum: 34, count: 2 })
        assert.strictEqual((yield* registry.get(innerId)).state, "completed")
        assert.strictEqual(yield* tasksNamed("chord-nest"), 1)
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
        assert.strictEqual((yield* queue.get(nestId)).attempts, 1)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("handle continuations fire once on the chord's end; late ones run with the latched outcome", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 7 })],
          callback: ChordRegistry.callback(Sum, { label: "c" })
        })
        const fired = yield* Deferred.make<Exit.Exit<string, ChordRegistry.ChordFailed>>()
        yield* handle.continuations.addOrRunNow("notify", (exit) => Deferred.succeed(fired, exit))
        yield* runWorker()
        const exit = yield* Deferred.await(fired)
        assert.isTrue(Exit.isSuccess(exit))
        const late = yield* handle.continuations.addOrRunNow("late", () => Effect.void)
        assert.strictEqual(late._tag, "Fired")
        const refused = yield* Effect.flip(handle.continuations.addOrFailIfDone("later", () => Effect.void))
        assert.strictEqual(refused._tag, "AlreadyStopped")
        // Another handle on the same chord (as another part of the program would get it) sees the same outcome.
        const other = yield* registry.handle(handle.chordId)
        assert.strictEqual(yield* other.await, yield* handle.await)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.live("without a completion backend the coordinator polls: awaits still resolve", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 }), Task.call(Square, { n: 3 })],
          callback: ChordRegistry.callback(Sum, { label: "polled" })
        })
        yield* runWorker()
        const callbackId = yield* handle.await
        const queue = yield* TaskQueue
        assert.deepStrictEqual((yield* queue.get(callbackId)).payload, { results: [4, 9], label: "polled" })
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend, { reconcileInterval: 0 }, false)))
    )

    it.live("a body completion event for a complete but undispatched chord is dispatched by the coordinator", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "event" })
        })
        // Fault injection as above, then the completion event the lost dispatch would have followed. The periodic
        // reconciler is off: only the event-driven check can dispatch it.
        yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = '4', finished_at = 1
          WHERE chord_id = ${handle.chordId}`
        yield* sql`UPDATE baton_chords SET succeeded = 1, last_body_at = 1 WHERE id = ${handle.chordId}`
        const storage = yield* Storage.Storage
        const bodyId = (yield* sql<{ id: string }>`SELECT id FROM baton_tasks WHERE chord_id = ${handle.chordId}`)[0]!
          .id
        yield* sql.withTransaction(
          appendLog(sql, storage.dialect, storage.channelPrefix, [
            {
              kind: "task",
              task_id: bodyId,
              task_name: "chord-square",
              queue: "default",
              namespace: "default",
              tags: "[]",
              outcome: "succeeded",
              chord_id: handle.chordId,
              run_id: null,
              at: 1
            }
          ])
        )
        const callbackId = yield* handle.await
        const info = yield* registry.get(handle.chordId)
        assert.isTrue(info.healed)
        assert.strictEqual(info.callbackTaskId, callbackId)
        assert.strictEqual(yield* tasksNamed("chord-sum"), 1)
      }).pipe(Effect.scoped, Effect.provide(chordLayer(backend)))
    )

    it.effect("with a Reconciler service, the pass is its step and heals through it", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const reconciler = yield* Reconciler.Reconciler
        const sql = yield* SqlClient.SqlClient
        assert.deepStrictEqual(yield* reconciler.steps, [SqlChordRegistry.reconcileStepName])
        const handle = yield* registry.chord({
          body: [Task.call(Square, { n: 2 })],
          callback: ChordRegistry.callback(Sum, { label: "step" })
        })
        yield* sql`UPDATE baton_tasks SET state = 'succeeded', result = '4', finished_at = 1
          WHERE chord_id = ${handle.chordId}`
        yield* sql`UPDATE baton_chords SET succeeded = 1, last_body_at = 1 WHERE id = ${handle.chordId}`
        const reports = yield* reconciler.runOnce
        assert.deepStrictEqual(reports, [{ _tag: "Fixed", name: SqlChordRegistry.reconcileStepName, fixed: 1 }])
        assert.strictEqual((yield* registry.get(handle.chordId)).state, "completed")
      }).pipe(
        Effect.provide(
          SqlChordRegistry.layerWith({ reconcileInterval: "1 millis" }).pipe(
            Layer.provideMerge(Reconciler.layerEmpty),
            Layer.provideMerge(SqlTaskQueue.layer),
            Layer.provideMerge(backend.storage())
          )
        )
      )
    )

    it.effect("get / await of an unknown chord fail with ChordNotFound", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        assert.strictEqual((yield* Effect.flip(registry.get("nope")))._tag, "ChordNotFound")
        assert.strictEqual((yield* Effect.flip(registry.await("nope")))._tag, "ChordNotFound")
      }).pipe(Effect.provide(chordLayer(backend)))
    )
  })
}
