/**
 * Chords of chords (`ChordRegistry.nested`): an inner chord's callback task is the outer chord's body task.
 * - On every backend: the outer callback gets the inner callbacks' results in body order (two levels deep, with an
 *   empty inner chord), exactly one callback per chord; `list({ parent })` and `ChordInfo.parentChordId`.
 * - A failing inner chord (body failed, deadline) fails the outer once with reason `inner_failed` naming it; cancelling
 *   the outer cancels its running inner chords.
 * - Across processes: a worker SIGKILLed while it holds inner body tasks; the survivors finish; every level dispatches
 *   exactly once and the outer callback runs once with the inner results.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { allTasks, Explode, Hang, OnError, Square, Sum, Total } from "./fixtures/chord-tasks.js"
import * as Backends from "./support/backends.js"
import { spawnFixture } from "./support/process.js"

// A `Hang` handler never returns: no grace period to wait out when the test's worker shuts down.
const fast = { pollInterval: { min: "1 millis", max: "10 millis" }, shutdownGracePeriod: 0 } as const

const layerOn = <E>(storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E>) =>
  SqlChordRegistry.layerWith({ ...fast, reconcileInterval: "200 millis" }).pipe(
    Layer.provideMerge(SqlCompletionBackend.layerWith({ pollInterval: { min: "1 millis", max: "20 millis" } })),
    Layer.provideMerge(SqlTaskQueue.layer),
    Layer.provideMerge(storage)
  )

const rows = <A extends object>(query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<A>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.orDie(query(sql)))

/** Per chord: how many `chord.callback.enqueued` events it logged (exactly-once dispatch at every level). */
const dispatchEvents = rows(
  (sql) => sql<{ chord_id: string; n: number }>`SELECT chord_id, count(*) AS n FROM baton_completions
    WHERE kind = 'chord.callback.enqueued' GROUP BY chord_id`
)

/** outer[ A[1, 2] → Sum a, B[ C[3] → Sum c, D[] → Sum d ] → Total b ] → Total outer */
const twoLevels = (gate?: string) => ({
  body: [
    ChordRegistry.nested({
      body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: 2, ...(gate === undefined ? {} : { gate }) })],
      callback: ChordRegistry.callback(Sum, { label: "a" })
    }),
    ChordRegistry.nested({
      body: [
        ChordRegistry.nested({
          body: [Task.call(Square, { n: 3, ...(gate === undefined ? {} : { gate }) })],
          callback: ChordRegistry.callback(Sum, { label: "c" })
        }),
        ChordRegistry.nested({ body: [], callback: ChordRegistry.callback(Sum, { label: "d" }) })
      ],
      callback: ChordRegistry.callback(Total, { label: "b" })
    })
  ],
  callback: ChordRegistry.callback(Total, { label: "outer" })
})

const expectedResults = [
  { label: "a", sum: 5, count: 2 },
  { label: "b", sum: 9, count: 2 }
]

/** The outer callback ran once with the inner results; every chord (5) dispatched exactly once. */
const checkTwoLevels = (handle: ChordRegistry.ChordHandle) =>
  Effect.gen(function* () {
    const registry = yield* ChordRegistry.ChordRegistry
    const queue = yield* TaskQueue
    const callbackId = yield* handle.await
    const callback = yield* queue.get(callbackId)
    assert.deepStrictEqual(callback.payload, { results: expectedResults, label: "outer" })
    yield* Backends.eventually(
      Effect.map(queue.get(callbackId), (t) => t.state === "succeeded"),
      "the outer callback to succeed",
      30_000
    )
    assert.deepStrictEqual(Option.getOrThrow((yield* queue.get(callbackId)).result), {
      label: "outer",
      sum: 14,
      count: 2
    })
    const inner = yield* registry.list({ parent: handle.chordId })
    assert.deepStrictEqual(
      inner.items.map((c) => [c.parentIndex, c.state, c.callbackName]),
      [
        [0, "completed", "chord-sum"],
        [1, "completed", "chord-total"]
      ]
    )
    assert.strictEqual(inner.items[0]!.parentChordId, handle.chordId)
    // The inner callbacks are the outer chord's body tasks.
    const body = yield* queue.list({ chordId: handle.chordId })
    assert.deepStrictEqual(body.items.map((t) => t.id).sort(), inner.items.map((c) => c.callbackTaskId).sort())
    const deeper = yield* registry.list({ parent: inner.items[1]!.chordId })
    assert.deepStrictEqual(
      deeper.items.map((c) => c.state),
      ["completed", "completed"]
    )
    const events = yield* dispatchEvents
    const all = [handle.chordId, ...inner.items.map((c) => c.chordId), ...deeper.items.map((c) => c.chordId)]
    for (const id of all) assert.strictEqual(Number(events.find((e) => e.chord_id === id)?.n ?? 0), 1, id)
    const callbacks = yield* rows(
      (sql) => sql<{ name: string; n: number }>`SELECT name, count(*) AS n FROM baton_tasks
        WHERE name IN ('chord-sum', 'chord-total') GROUP BY name ORDER BY name`
    )
    assert.deepStrictEqual(
      callbacks.map((r) => [r.name, Number(r.n)]),
      [
        ["chord-sum", 3],
        ["chord-total", 2]
      ]
    )
    return callback
  })

for (const backend of Backends.all()) {
  describe(`chords of chords [${backend.name}]`, () => {
    it.live("the outer callback gets the inner callbacks' results, once per chord at every level", () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        yield* Worker.run({ tasks: allTasks, concurrency: 4, ...fast })
        const handle = yield* registry.chord({ ...twoLevels(), idempotencyKey: "two-levels" })
        yield* checkTwoLevels(handle)
        // The outer key makes the whole tree idempotent: nothing new is written.
        const again = yield* registry.chord({ ...twoLevels(), idempotencyKey: "two-levels" })
        assert.isFalse(again.created)
        assert.strictEqual(again.chordId, handle.chordId)
        assert.strictEqual((yield* registry.list()).total, 5)
      }).pipe(Effect.scoped, Effect.provide(layerOn(backend.storage())))
    )
  })
}

describe("chords of chords: failure", () => {
  it.live("a failing inner chord fails the outer once (reason inner_failed, naming it); onError once per level", () =>
    Effect.gen(function* () {
      const registry = yield* ChordRegistry.ChordRegistry
      const queue = yield* TaskQueue
      yield* Worker.run({ tasks: allTasks, concurrency: 4, ...fast })
      const handle = yield* registry.chord({
        body: [
          ChordRegistry.nested({
            body: [Task.call(Square, { n: 1 })],
            callback: ChordRegistry.callback(Sum, { label: "ok" })
          }),
          ChordRegistry.nested({
            body: [Task.call(Square, { n: 2 }), Task.call(Explode, { n: 7 })],
            callback: ChordRegistry.callback(Sum, { label: "bad" }),
            onError: ChordRegistry.onError(OnError, { label: "inner" })
          })
        ],
        callback: ChordRegistry.callback(Total, { label: "outer" }),
        onError: ChordRegistry.onError(OnError, { label: "outer" })
      })
      const failed = yield* Effect.flip(handle.await)
      const inner = (yield* registry.list({ parent: handle.chordId })).items
      const bad = inner[1]!
      assert.strictEqual(failed.reason, "inner_failed")
      assert.strictEqual(failed.innerChordId, bad.chordId)
      assert.strictEqual(failed.index, 1)
      assert.include(failed.message, bad.chordId)
      // The inner chord's own failure travels in error.error.
      assert.strictEqual((failed.error?.error as ChordRegistry.ChordFailure).reason, "body_failed")
      assert.strictEqual((failed.error?.error as ChordRegistry.ChordFailure).taskName, "chord-explode")
      assert.strictEqual(bad.state, "failed")
      assert.strictEqual(Option.getOrThrow(bad.failure).taskName, "chord-explode")
      // One onError per failed level, each run once; no outer callback.
      const info = yield* registry.get(handle.chordId)
      assert.strictEqual(info.state, "failed")
      assert.strictEqual(info.callbackTaskId, undefined)
      for (const id of [info.errorTaskId!, bad.errorTaskId!]) {
        yield* Backends.eventually(
          Effect.map(queue.get(id), (t) => t.state === "succeeded"),
          "onError to run"
        )
      }
      assert.deepStrictEqual(Option.getOrThrow((yield* queue.get(info.errorTaskId!)).result), "outer: chord-sum")
      const failedEvents = yield* rows(
        (sql) => sql<{ chord_id: string }>`SELECT chord_id FROM baton_completions
          WHERE kind = 'chord.failed' AND outcome = 'failed'`
      )
      assert.deepStrictEqual(failedEvents.map((e) => e.chord_id).sort(), [handle.chordId, bad.chordId].sort())
      // The other inner chord either finished first (its callback, an outer body task, then cancelled) or was
      // cancelled with the outer chord.
      assert.include(["completed", "cancelled"], inner[0]!.state)
      assert.strictEqual((yield* queue.list({ name: "chord-total" })).total, 0)
      assert.strictEqual((yield* queue.list({ name: "chord-on-error" })).total, 2)
      // A later reconciler pass finds nothing to do.
      assert.strictEqual(yield* registry.reconcile, 0)
    }).pipe(Effect.scoped, Effect.provide(layerOn(Storage.layerMemory)))
  )

  it.live("an inner chord past its deadline fails the outer; cancelling an outer cancels its inner chords", () =>
    Effect.gen(function* () {
      const registry = yield* ChordRegistry.ChordRegistry
      const queue = yield* TaskQueue
      yield* Worker.run({ tasks: allTasks, concurrency: 4, ...fast })
      const late = yield* registry.chord({
        body: [
          ChordRegistry.nested({
            body: [Task.call(Hang, { n: 1 })],
            callback: ChordRegistry.callback(Sum, { label: "late" }),
            deadline: "300 millis"
          })
        ],
        callback: ChordRegistry.callback(Total, { label: "outer" })
      })
      const failed = yield* Effect.flip(late.await)
      assert.strictEqual(failed.reason, "inner_failed")
      assert.strictEqual((failed.error?.error as ChordRegistry.ChordFailure).reason, "deadline")
      // Cancel: the running inner chord and its body are cancelled, no callback anywhere.
      const outer = yield* registry.chord({
        body: [
          ChordRegistry.nested({
            body: [Task.call(Hang, { n: 2 })],
            callback: ChordRegistry.callback(Sum, { label: "x" })
          })
        ],
        callback: ChordRegistry.callback(Total, { label: "cancelled" })
      })
      assert.isTrue(yield* registry.cancel(outer.chordId))
      assert.strictEqual((yield* Effect.flip(outer.await)).reason, "cancelled")
      const inner = (yield* registry.list({ parent: outer.chordId })).items[0]!
      assert.strictEqual(inner.state, "cancelled")
      const hang = (yield* queue.list({ chordId: inner.chordId })).items[0]!
      assert.strictEqual(hang.state, "cancelled")
      assert.strictEqual((yield* registry.get(outer.chordId)).cancelled, 1)
      assert.strictEqual((yield* queue.list({ name: "chord-total" })).total, 0)
    }).pipe(Effect.scoped, Effect.provide(layerOn(Storage.layerMemory)))
  )
})

/** A `continue` callback over inner chords: each slot's outcome (an inner callback's result, or its failure). */
const Outcomes = Task.make("chord-outcomes", {
  payload: ChordRegistry.outcomesPayload(Sum.success),
  success: Schema.Array(Schema.String),
  handler: ({ results }) =>
    Effect.succeed(results.map((r) => (r._tag === "Success" ? `ok ${r.value.sum}` : `${r.state}: ${r.error.message}`)))
})

describe("chords of chords: policy continue", () => {
  it.live("a failed inner chord is a Failure outcome of the outer callback, which still runs once", () =>
    Effect.gen(function* () {
      const registry = yield* ChordRegistry.ChordRegistry
      const queue = yield* TaskQueue
      yield* Worker.run({ tasks: [...allTasks, Outcomes], concurrency: 4, ...fast })
      const handle = yield* registry.chord({
        body: [
          ChordRegistry.nested({
            body: [Task.call(Square, { n: 3 })],
            callback: ChordRegistry.callback(Sum, { label: "ok" })
          }),
          ChordRegistry.nested({
            body: [Task.call(Explode, { n: 1 })],
            callback: ChordRegistry.callback(Sum, { label: "bad" })
          })
        ],
        callback: ChordRegistry.callback(Outcomes, {}),
        failurePolicy: "continue"
      })
      const callbackId = yield* handle.await
      yield* Backends.eventually(
        Effect.map(queue.get(callbackId), (t) => t.state === "succeeded"),
        "the outer callback to succeed"
      )
      const bad = (yield* registry.list({ parent: handle.chordId })).items[1]!
      assert.deepStrictEqual(Option.getOrThrow((yield* queue.get(callbackId)).result), [
        "ok 9",
        `failed: inner chord ${bad.chordId} failed (body_failed)`
      ])
    }).pipe(Effect.scoped, Effect.provide(layerOn(Storage.layerMemory)))
  )
})

const kind: "pg" | "sqlite" = Backends.pgAvailable() ? "pg" : "sqlite"

describe(`chords of chords across worker processes [${kind}]`, () => {
  it.live(
    "a worker SIGKILLed holding inner body tasks: survivors finish, each level dispatches once, outer callback once",
    () => {
      const shared = Backends.sharedStorage(kind)
      return Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const gate = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "baton-gate-")), "open")
        // argv: workerId, concurrency, reconcile interval (ms), lease (ms), reclaim (ms), prefetch
        const ids = ["w1", "w2", "w3"]
        const workers = yield* Effect.forEach(ids, (id) =>
          Effect.acquireRelease(
            Effect.sync(() => spawnFixture("chord-worker.ts", shared.descriptor, {}, [id, "4", "300", "300", "50"])),
            (child) => Effect.sync(() => child.kill("SIGKILL"))
          )
        )
        yield* Effect.promise(() => Promise.all(workers.map((w, i) => w.waitForLine(`ready ${ids[i]}`, 90_000))))
        const handle = yield* registry.chord(twoLevels(gate))
        // The gated body tasks (n = 2 in A, n = 3 in C) are held once the rest of the tree ran: kill their workers.
        const holding = yield* Backends.eventually(
          Effect.map(
            rows(
              (sql) => sql<{ worker_id: string }>`SELECT worker_id FROM baton_tasks
                WHERE name = 'chord-square' AND state = 'running' AND payload LIKE '%gate%'`
            ),
            (running) => running.length === 2
          ),
          "the gated body tasks to be running",
          30_000
        ).pipe(
          Effect.zipRight(
            rows(
              (sql) => sql<{ worker_id: string }>`SELECT DISTINCT worker_id FROM baton_tasks
                WHERE name = 'chord-square' AND payload LIKE '%gate%'`
            )
          )
        )
        const doomed = holding.map((row) => row.worker_id)
        for (const id of doomed) workers[ids.indexOf(id)]!.kill("SIGKILL")
        yield* Effect.promise(() => Promise.all(doomed.map((id) => workers[ids.indexOf(id)]!.exited)))
        fs.writeFileSync(gate, "")
        const callback = yield* checkTwoLevels(handle)
        // The outer callback ran exactly once (one attempt), and the gated tasks were rerun by a survivor.
        assert.strictEqual((yield* queue.get(callback.id)).attempts, 1)
        const gated = yield* rows(
          (sql) => sql<{ attempts: number; worker_id: string }>`SELECT attempts, worker_id FROM baton_tasks
            WHERE name = 'chord-square' AND payload LIKE '%gate%'`
        )
        assert.strictEqual(gated.length, 2)
        for (const row of gated) {
          // At least one attempt in a killed worker (more if a lease ran out on this loaded machine meanwhile).
          assert.isAtLeast(Number(row.attempts), 2)
          assert.notInclude(doomed, row.worker_id)
        }
        assert.isFalse((yield* registry.get(handle.chordId)).healed)
      }).pipe(Effect.scoped, Effect.provide(layerOn(shared.layer)))
    },
    // Three worker processes start in 5-25 s depending on the machine's load; the test itself is a few seconds.
    120_000
  )
})
