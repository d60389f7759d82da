/**
 * Reconciler: the periodic safety net behind event-driven work.
 *
 * Events make Baton fast; the reconciler makes it correct when an event was missed or a process died mid-way. It
 * runs named steps, each an idempotent scan that finds work a missed event would have left undone and does it:
 * - `task.reclaim-expired-leases`: tasks whose worker stopped heart-beating go back to the queue (`dead` when out of
 *   attempts) — `TaskQueue.reclaimExpired`,
 * - `completions.prune`: the completions log's retention policy — `CompletionBackend.prune` (once a minute),
 * and whatever other modules register (e.g. chords whose body finished without a dispatched callback, and
 * `retention.prune`, the retention of finished work, registered by `SqlRetention`).
 *
 * Guarantees: steps run one at a time, in registration order; a failing or dying step is logged and counted and the
 * others still run; `runOnce` calls never overlap in one process. Every worker process may run it: steps must be
 * safe to run concurrently across processes (they are guarded by the same database conditions as the normal path).
 * Each step is measured with Effect metrics tagged `step`: items fixed, failures, and duration.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { CompletionBackend } from "./CompletionBackend.js"
import { TaskQueue } from "./TaskQueue.js"

/** One reconcile scan. */
export interface ReconcileStep {
  /** Unique name (`area.what`), used in logs and as the metrics' `step` tag. */
  readonly name: string
  /** One idempotent pass; succeeds with the number of items it fixed. */
  readonly run: Effect.Effect<number, unknown>
  /** Run at most this often (default: on every reconciler pass). */
  readonly interval?: Duration.DurationInput | undefined
}

/** What one step did in one pass. */
export type StepReport =
  | { readonly _tag: "Fixed"; readonly name: string; readonly fixed: number }
  | { readonly _tag: "Failed"; readonly name: string; readonly message: string }
  | { readonly _tag: "Skipped"; readonly name: string }

/** Items fixed by reconcile steps, tagged `step`. */
export const reconciledItems = Metric.counter("baton_reconciled_items_total", {
  description: "Items a reconcile step found undone and fixed"
})

/** Failed reconcile step passes, tagged `step`. */
export const reconcileFailures = Metric.counter("baton_reconcile_failures_total", {
  description: "Reconcile step passes that failed"
})

/** Duration of reconcile step passes, tagged `step`. */
export const reconcileDuration = Metric.timer("baton_reconcile_step_duration", "Duration of a reconcile step pass")

/** The reconciler. */
export class Reconciler extends Context.Tag("baton/Reconciler")<
  Reconciler,
  {
    /** Adds a step (replacing one of the same name) until the current scope closes. */
    readonly register: (step: ReconcileStep) => Effect.Effect<void, never, Scope.Scope>
    /** Runs every due step once, in registration order; failures are reported, logged and counted, never raised. */
    readonly runOnce: Effect.Effect<ReadonlyArray<StepReport>>
    /** The names of the registered steps, in order. */
    readonly steps: Effect.Effect<ReadonlyArray<string>>
    /** Counts a periodic runner (`Reconciler.run`) as active until the current scope closes. */
    readonly running: Effect.Effect<void, never, Scope.Scope>
    /** True while a periodic runner is active and `step` is registered (so nobody else needs to run it). */
    readonly covers: (step: string) => Effect.Effect<boolean>
  }
>() {}

const describe = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : typeof error === "object" ? JSON.stringify(error) : String(error)
}

/** Builds a reconciler with no steps. */
export const make: Effect.Effect<Reconciler["Type"]> = Effect.gen(function* () {
  const registered: Array<{ readonly step: ReconcileStep; lastRun: number | undefined }> = []
  const lock = yield* Effect.makeSemaphore(1)
  let runners = 0

  const register = (step: ReconcileStep) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const entry = { step, lastRun: undefined }
        const index = registered.findIndex((existing) => existing.step.name === step.name)
        if (index >= 0) registered[index] = entry
        else registered.push(entry)
        return entry
      }),
      (entry) =>
        Effect.sync(() => {
          const index = registered.indexOf(entry)
          if (index >= 0) registered.splice(index, 1)
        })
    ).pipe(Effect.asVoid)

  const runStep = (entry: (typeof registered)[number]): Effect.Effect<StepReport> =>
    Effect.gen(function* () {
      const { step } = entry
      const now = yield* Clock.currentTimeMillis
      const every = step.interval === undefined ? 0 : Duration.toMillis(Duration.decode(step.interval))
      if (entry.lastRun !== undefined && now - entry.lastRun < every) {
        return { _tag: "Skipped", name: step.name } as const
      }
      entry.lastRun = now
      const exit = yield* step.run.pipe(
        Metric.trackDuration(Metric.tagged(reconcileDuration, "step", step.name)),
        Effect.withSpan("Reconciler.step", { attributes: { step: step.name } }),
        Effect.exit
      )
      if (Exit.isSuccess(exit)) {
        const fixed = exit.value
        if (fixed > 0) {
          yield* Metric.incrementBy(Metric.tagged(reconciledItems, "step", step.name), fixed)
          yield* Effect.logInfo("reconciler fixed items", { step: step.name, fixed })
        }
        return { _tag: "Fixed", name: step.name, fixed } as const
      }
      if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
      const message = describe(exit.cause)
      yield* Metric.increment(Metric.tagged(reconcileFailures, "step", step.name))
      yield* Effect.logWarning("reconcile step failed", { step: step.name, cause: Cause.pretty(exit.cause) })
      return { _tag: "Failed", name: step.name, message } as const
    })

  const runOnce = lock
    .withPermits(1)(Effect.suspend(() => Effect.forEach([...registered], runStep)))
    .pipe(Effect.withSpan("Reconciler.runOnce"))

  return Reconciler.of({
    register,
    runOnce,
    steps: Effect.sync(() => registered.map((entry) => entry.step.name)),
    running: Effect.acquireRelease(
      Effect.sync(() => {
        runners++
      }),
      () =>
        Effect.sync(() => {
          runners--
        })
    ),
    covers: (step) => Effect.sync(() => runners > 0 && registered.some((entry) => entry.step.name === step))
  })
})

/** Name of the expired-leases step (a `Worker` skips its own reclaim pass while a running reconciler has it). */
export const reclaimStepName = "task.reclaim-expired-leases"

/** Step: hand tasks with expired leases back to the queue. */
export const reclaimExpiredLeases = (queue: TaskQueue["Type"]): ReconcileStep => ({
  name: reclaimStepName,
  run: queue.reclaimExpired
})

/** Step: apply the completions log's retention policy (once a minute by default). */
export const pruneCompletions = (
  completions: CompletionBackend["Type"],
  interval: Duration.DurationInput = Duration.minutes(1)
): ReconcileStep => ({
  name: "completions.prune",
  run: completions.prune,
  interval
})

/** The reconciler with Baton's built-in steps (expired leases, completions retention) registered. */
export const layer: Layer.Layer<Reconciler, never, TaskQueue | CompletionBackend> = Layer.scoped(
  Reconciler,
  Effect.gen(function* () {
    const reconciler = yield* make
    yield* reconciler.register(reclaimExpiredLeases(yield* TaskQueue))
    yield* reconciler.register(pruneCompletions(yield* CompletionBackend))
    return reconciler
  })
)

/** A reconciler with no steps (register your own). */
export const layerEmpty: Layer.Layer<Reconciler> = Layer.effect(Reconciler, make)

/** Options of the periodic run. */
export interface RunOptions {
  /** Time between passes (default 5 s, jittered so that workers spread out). */
  readonly interval?: Duration.DurationInput | undefined
}

/** Runs a pass now and then every `interval` in the current scope (what each worker process does). */
export const run = (options: RunOptions = {}): Effect.Effect<void, never, Reconciler | Scope.Scope> =>
  Effect.gen(function* () {
    const reconciler = yield* Reconciler
    const interval = Duration.decode(options.interval ?? Duration.seconds(5))
    yield* reconciler.running
    yield* reconciler.runOnce.pipe(
      Effect.repeat(Schedule.spaced(interval).pipe(Schedule.jittered)),
      Effect.annotateLogs({ service: "Reconciler" }),
      Effect.forkScoped
    )
  })

/** A layer running the reconciler periodically for its lifetime. */
export const layerRun = (options: RunOptions = {}): Layer.Layer<never, never, Reconciler> =>
  Layer.scopedDiscard(run(options))
