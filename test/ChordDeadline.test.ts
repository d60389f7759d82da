/**
 * Chord deadlines, `ChordRegistry.awaitAll` and the time-to-callback metric.
 * - In process: a body that never finishes fails the chord at its deadline (reason `deadline`, body cancelled, onError
 *   once); a chord done in time is not touched; the reconciler pass expires too.
 * - Across processes: three worker processes, each with a chord coordinator, one of them running the body that never
 *   finishes; the producer's own registry does not enforce deadlines. The chord fails at its deadline exactly once.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { allTasks, Hang, OnError, Square, Sum } from "./fixtures/chord-tasks.js"
import { eventually, pgAvailable, sharedStorage } from "./support/backends.js"
import { spawnFixture } from "./support/process.js"

const layerOn = <E>(
  storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E>,
  options: SqlChordRegistry.Options
) =>
  SqlChordRegistry.layerWith({ pollInterval: { min: "1 millis", max: "10 millis" }, ...options }).pipe(
    Layer.provideMerge(SqlCompletionBackend.layerWith({ pollInterval: { min: "1 millis", max: "20 millis" } })),
    Layer.provideMerge(SqlTaskQueue.layer),
    Layer.provideMerge(storage)
  )

const rows = <A extends object>(query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<A>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.orDie(query(sql)))

describe("chord deadline (in process)", () => {
  it.live("a body that never finishes: the chord fails at its deadline, body cancelled, onError once", () =>
    Effect.gen(function* () {
      const registry = yield* ChordRegistry.ChordRegistry
      const queue = yield* TaskQueue
      // No grace period: the hanging handler would hold the worker's shutdown for the default 10 s.
      yield* Worker.run({
        tasks: allTasks,
        concurrency: 4,
        pollInterval: { min: "1 millis", max: "10 millis" },
        shutdownGracePeriod: 0
      })
      const before = (yield* Metric.value(ChordRegistry.timeToCallback)).count
      const handle = yield* registry.chord({
        body: [Task.call(Square, { n: 2 }), Task.call(Hang, { n: 1 })],
        callback: ChordRegistry.callback(Sum, { label: "late" }),
        onError: ChordRegistry.onError(OnError, { label: "late" }),
        deadline: "400 millis"
      })
      // A chord done in time, with a deadline too: completes normally.
      const inTime = yield* registry.chord({
        body: [Task.call(Square, { n: 3 })],
        callback: ChordRegistry.callback(Sum, { label: "in-time" }),
        // Far enough that a loaded machine still finishes it in time (a 400 ms one missed it at load 26).
        deadline: "30 seconds"
      })
      const exits = yield* ChordRegistry.awaitAll([handle, inTime], { mode: "exit" })
      assert.isTrue(Exit.isFailure(exits[0]!))
      assert.isTrue(Exit.isSuccess(exits[1]!))
      const failed = yield* Effect.flip(handle.await)
      assert.strictEqual(failed.reason, "deadline")
      assert.include(failed.message, "deadline")
      const info = yield* registry.get(handle.chordId)
      assert.strictEqual(info.state, "failed")
      assert.strictEqual(info.callbackTaskId, undefined)
      assert.isDefined(info.deadlineAt)
      assert.strictEqual(info.deadlineAt!.getTime() - info.createdAt.getTime(), 400)
      assert.isAtLeast(info.dispatchedAt!.getTime(), info.deadlineAt!.getTime())
      // The hanging body task is cancelled; the finished one keeps its result.
      const body = yield* queue.list({ chordId: handle.chordId })
      assert.deepStrictEqual(body.items.map((t) => `${t.name}:${t.state}`).sort(), [
        "chord-hang:cancelled",
        "chord-square:succeeded"
      ])
      const onError = yield* queue.get(info.errorTaskId!)
      assert.deepInclude(onError.payload as object, { label: "late" })
      assert.strictEqual((onError.payload as { failure: { reason: string } }).failure.reason, "deadline")
      // A later pass finds nothing more to do (the guard): no second onError.
      assert.strictEqual(yield* registry.reconcile, 0)
      const onErrors = yield* rows(
        (sql) => sql<{ id: string }>`SELECT id FROM baton_tasks WHERE name = 'chord-on-error'`
      )
      assert.strictEqual(onErrors.length, 1)
      // Both chords dispatched: the time-to-callback histogram counted them.
      assert.strictEqual((yield* Metric.value(ChordRegistry.timeToCallback)).count - before, 2)
      const both = yield* Effect.exit(ChordRegistry.awaitAll([inTime, handle]))
      assert.isTrue(Exit.isFailure(both))
    }).pipe(Effect.scoped, Effect.provide(layerOn(Storage.layerMemory, { reconcileInterval: "100 millis" })))
  )

  it.live("the reconciler pass expires a chord past its deadline; an invalid deadline is refused", () =>
    Effect.gen(function* () {
      const registry = yield* ChordRegistry.ChordRegistry
      const handle = yield* registry.chord({
        body: [Task.call(Hang, { n: 1 })],
        callback: ChordRegistry.callback(Sum, { label: "x" }),
        deadline: new Date(Date.now() - 1)
      })
      assert.strictEqual(yield* registry.reconcile, 1)
      assert.strictEqual(Option.getOrThrow((yield* registry.get(handle.chordId)).failure).reason, "deadline")
      const invalid = yield* Effect.flip(
        registry.chord({
          body: [Task.call(Hang, { n: 1 })],
          callback: ChordRegistry.callback(Sum, { label: "x" }),
          deadline: -5
        })
      )
      assert.strictEqual(invalid._tag, "InvalidInput")
    }).pipe(Effect.scoped, Effect.provide(layerOn(Storage.layerMemory, { reconcileInterval: 0 })))
  )
})

const kind: "pg" | "sqlite" = pgAvailable() ? "pg" : "sqlite"

describe(`chord deadline across three worker processes [${kind}]`, () => {
  it.live(
    "a body that never finishes fails at the deadline once; onError runs once",
    () => {
      const shared = sharedStorage(kind)
      return Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        // argv: workerId, concurrency, reconcile interval (ms), lease (ms), reclaim (ms), prefetch
        const workers = [1, 2, 3].map((i) =>
          spawnFixture("chord-worker.ts", shared.descriptor, {}, [`w${i}`, "2", "300", "30000", "5000", "0"])
        )
        try {
          yield* Effect.promise(() => Promise.all(workers.map((w, i) => w.waitForLine(`ready w${i + 1}`, 90_000))))
          const handle = yield* registry.chord({
            body: [Task.call(Hang, { n: 1 }), Task.call(Square, { n: 4 })],
            callback: ChordRegistry.callback(Sum, { label: "procs" }),
            onError: ChordRegistry.onError(OnError, { label: "procs" }),
            deadline: "1500 millis"
          })
          const failed = yield* Effect.flip(handle.await)
          assert.strictEqual(failed.reason, "deadline")
          const info = yield* registry.get(handle.chordId)
          assert.isAtLeast(info.dispatchedAt!.getTime(), info.deadlineAt!.getTime())
          // The onError task runs (in some worker process), once.
          yield* eventually(
            Effect.map(queue.get(info.errorTaskId!), (t) => t.state === "succeeded"),
            "the onError task to succeed"
          )
          const onError = yield* queue.get(info.errorTaskId!)
          assert.strictEqual(onError.attempts, 1)
          assert.deepStrictEqual(onError.result, Option.some("procs: deadline"))
          // Let every coordinator make further passes, then count: one failure, one onError, no callback.
          yield* Effect.sleep("800 millis")
          const onErrors = yield* rows(
            (sql) => sql<{ id: string }>`SELECT id FROM baton_tasks WHERE name = 'chord-on-error'`
          )
          assert.strictEqual(onErrors.length, 1)
          const events = yield* rows(
            (sql) => sql<{ kind: string }>`SELECT kind FROM baton_completions
            WHERE chord_id = ${handle.chordId} AND kind <> 'task' ORDER BY seq`
          )
          assert.deepStrictEqual(
            events.map((e) => e.kind),
            ["chord.failed", "chord.callback.enqueued"]
          )
          assert.strictEqual((yield* queue.list({ name: "chord-sum" })).total, 0)
          const hang = (yield* queue.list({ chordId: handle.chordId, name: "chord-hang" })).items[0]!
          assert.strictEqual(hang.state, "cancelled")
        } finally {
          for (const worker of workers) worker.kill("SIGKILL")
        }
      }).pipe(Effect.scoped, Effect.provide(layerOn(shared.layer, { reconcileInterval: 0 })))
    },
    120_000
  )
})
