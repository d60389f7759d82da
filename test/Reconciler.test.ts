import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Reconciler from "../src/Reconciler.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"

const counterValue = (metric: Metric.Metric.Counter<number>, step: string) =>
  Metric.value(Metric.tagged(metric, "step", step)).pipe(Effect.map((state) => state.count))

describe("Reconciler", () => {
  it.scoped("runs every step in order; a failing or dying step is reported and counted, the rest still run", () =>
    Effect.gen(function* () {
      const reconciler = yield* Reconciler.make
      const order: Array<string> = []
      const step = (name: string, run: Effect.Effect<number, unknown>) =>
        reconciler.register({
          name,
          run: Effect.zipRight(
            Effect.sync(() => order.push(name)),
            run
          )
        })
      yield* step("test.first", Effect.succeed(2))
      yield* step("test.fails", Effect.fail(new Error("database is locked")))
      yield* step("test.dies", Effect.die("bug"))
      yield* step("test.last", Effect.succeed(0))
      const failuresBefore = yield* counterValue(Reconciler.reconcileFailures, "test.fails")
      const fixedBefore = yield* counterValue(Reconciler.reconciledItems, "test.first")
      const report = yield* reconciler.runOnce
      assert.deepStrictEqual(order, ["test.first", "test.fails", "test.dies", "test.last"])
      assert.deepStrictEqual(report, [
        { _tag: "Fixed", name: "test.first", fixed: 2 },
        { _tag: "Failed", name: "test.fails", message: "database is locked" },
        { _tag: "Failed", name: "test.dies", message: "bug" },
        { _tag: "Fixed", name: "test.last", fixed: 0 }
      ])
      assert.strictEqual((yield* counterValue(Reconciler.reconcileFailures, "test.fails")) - failuresBefore, 1)
      assert.strictEqual((yield* counterValue(Reconciler.reconciledItems, "test.first")) - fixedBefore, 2)
    })
  )

  it.scoped("registering a name again replaces the step; closing the registering scope removes it", () =>
    Effect.gen(function* () {
      const reconciler = yield* Reconciler.make
      yield* reconciler.register({ name: "chords.dispatch", run: Effect.succeed(1) })
      const scope = yield* Scope.make()
      yield* reconciler.register({ name: "chords.dispatch", run: Effect.succeed(7) }).pipe(Scope.extend(scope))
      yield* reconciler.register({ name: "checkpoints.expire", run: Effect.succeed(3) }).pipe(Scope.extend(scope))
      assert.deepStrictEqual(yield* reconciler.steps, ["chords.dispatch", "checkpoints.expire"])
      assert.deepStrictEqual(yield* reconciler.runOnce, [
        { _tag: "Fixed", name: "chords.dispatch", fixed: 7 },
        { _tag: "Fixed", name: "checkpoints.expire", fixed: 3 }
      ])
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(yield* reconciler.steps, [])
    })
  )

  it.scoped("a step with an interval runs at most that often", () =>
    Effect.gen(function* () {
      const reconciler = yield* Reconciler.make
      const runs = yield* Ref.make(0)
      yield* reconciler.register({ name: "slow", run: Ref.updateAndGet(runs, (n) => n + 1), interval: "1 minute" })
      yield* reconciler.runOnce
      assert.deepStrictEqual(yield* reconciler.runOnce, [{ _tag: "Skipped", name: "slow" }])
      yield* TestClock.adjust("61 seconds")
      yield* reconciler.runOnce
      assert.strictEqual(yield* Ref.get(runs), 2)
    })
  )

  it.scoped("run: a pass at once, then one per interval", () =>
    Effect.gen(function* () {
      const runs = yield* Ref.make(0)
      yield* Effect.gen(function* () {
        const reconciler = yield* Reconciler.Reconciler
        yield* reconciler.register({ name: "count", run: Ref.updateAndGet(runs, (n) => n + 1) })
        yield* Reconciler.run({ interval: "1 second" })
        yield* TestClock.adjust("0 millis")
        assert.strictEqual(yield* Ref.get(runs), 1)
        // Jittered between 0.8 and 1.2 intervals.
        yield* TestClock.adjust("1300 millis")
        assert.strictEqual(yield* Ref.get(runs), 2)
        yield* TestClock.adjust("1300 millis")
        assert.strictEqual(yield* Ref.get(runs), 3)
      }).pipe(Effect.provide(Reconciler.layerEmpty))
    })
  )

  it.scoped("the default layer reclaims expired leases and prunes the completions log", () =>
    Effect.gen(function* () {
      const queue = yield* TaskQueue
      const reconciler = yield* Reconciler.Reconciler
      assert.deepStrictEqual(yield* reconciler.steps, ["task.reclaim-expired-leases", "completions.prune"])
      const ids = yield* queue.enqueueRaw(
        Array.from({ length: 4 }, (_, i) => ({ name: "job", payload: i, queue: "q", maxAttempts: 3 }))
      )
      const claimed = yield* queue.claim({ queues: ["q"], limit: 4, leaseMs: 1000, workerId: "w" })
      yield* queue.complete(claimed.slice(0, 3).map((task) => ({ id: task.id, leaseId: task.leaseId, result: 1 })))
      // The fourth task's worker vanished: its lease expires.
      yield* TestClock.adjust("2 seconds")
      const report = yield* reconciler.runOnce
      assert.deepStrictEqual(report, [
        { _tag: "Fixed", name: "task.reclaim-expired-leases", fixed: 1 },
        { _tag: "Fixed", name: "completions.prune", fixed: 2 }
      ])
      assert.strictEqual((yield* queue.get(ids[3]!)).state, "pending")
    }).pipe(
      Effect.provide(
        Reconciler.layer.pipe(
          Layer.provideMerge(
            Layer.mergeAll(SqlTaskQueue.layer, SqlCompletionBackend.layerWith({ retention: { maxRows: 1 } }))
          ),
          Layer.provide(Storage.layerMemory)
        )
      )
    )
  )
  it.scoped("a Worker skips its own expired-lease pass while a running Reconciler has that step", () =>
    Effect.gen(function* () {
      const calls = yield* Ref.make(0)
      // The queue counts reclaim passes, whoever runs them.
      const counted = Layer.effect(
        TaskQueue,
        Effect.map(SqlTaskQueue.make, (queue) =>
          TaskQueue.of({
            ...queue,
            reclaimExpired: Effect.zipRight(
              Ref.update(calls, (n) => n + 1),
              queue.reclaimExpired
            )
          })
        )
      ).pipe(Layer.provide(Storage.layerMemory))
      const passes = (withReconciler: boolean) =>
        Effect.scoped(
          Effect.gen(function* () {
            yield* Ref.set(calls, 0)
            if (withReconciler) {
              const reconciler = yield* Reconciler.Reconciler
              yield* reconciler.register(Reconciler.reclaimExpiredLeases(yield* TaskQueue))
              yield* Reconciler.run({ interval: "1 hour" })
            }
            yield* Worker.run({ tasks: [], queues: ["none"], reclaimInterval: "100 millis" })
            yield* TestClock.adjust("0 millis")
            for (let i = 0; i < 10; i++) yield* TestClock.adjust("100 millis")
            return yield* Ref.get(calls)
          })
        ).pipe(Effect.provide(Layer.merge(Reconciler.layerEmpty, counted)))
      // Alone, the worker reclaims every 100 ms; with a running reconciler, only the reconciler's first pass runs.
      assert.isAtLeast(yield* passes(false), 10)
      assert.strictEqual(yield* passes(true), 1)
    })
  )
})
