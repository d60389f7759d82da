/**
 * Worker: claims tasks from a `TaskQueue` and runs their handlers.
 *
 * `Worker.run(options)` is scoped: it starts the worker in the current `Scope` and, when the scope closes, stops
 * claiming, lets in-flight handlers finish within `shutdownGracePeriod`, and hands the rest back to the queue
 * (`release`, the attempt not counted). While running it
 * - claims in batches under one lease, keeping a local queue of tasks ahead of its free slots (so a freed slot
 *   starts the next task without a round trip) sized to about two claim round trips' worth of work — large for
 *   fast tasks, near zero for slow ones, never more than `prefetch` — and extends the leases of everything it holds
 *   with a heartbeat,
 * - wakes on new work (in-process enqueues, NOTIFY on Postgres) and otherwise polls with exponential backoff,
 * - records each outcome distinctly: success, typed failure, defect, timeout (retried with the task's exponential
 *   backoff until `maxAttempts`, then `dead`), undecodable payload or unknown task name (`failed` at once, no
 *   retry), and interruption (released),
 * - batches completions: one transaction completes every task that finished meanwhile (group commit); a handler's
 *   slot frees when its success is queued for that commit (bounded), and shutdown waits for the commit.
 * A handler whose lease expired keeps running, but its completion is refused by the lease guard.
 *
 * This module holds the public API and composes the parts, each in `internal/worker/`: the local queue and the state
 * the parts share (`localQueue`), the claim loop and handler slots (`claimLoop`), one attempt → outcome (`attempt`),
 * the group commit (`groupCommit`), heartbeat, expired-lease pass and graceful shutdown (`lifecycle`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Os from "node:os"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as Attempt from "./internal/worker/attempt.js"
import * as ClaimLoop from "./internal/worker/claimLoop.js"
import * as GroupCommit from "./internal/worker/groupCommit.js"
import * as Handoff from "./internal/worker/handoff.js"
import * as Lifecycle from "./internal/worker/lifecycle.js"
import * as LocalQueue from "./internal/worker/localQueue.js"
import * as Outcomes from "./internal/worker/outcomes.js"
import * as Reconciler from "./Reconciler.js"
import * as Task from "./Task.js"
import * as Validate from "./internal/validate.js"
import { InvalidInput, TaskQueue } from "./TaskQueue.js"

/**
 * Worker settings.
 *
 * @category models
 */
export interface WorkerOptions<Tasks extends ReadonlyArray<Task.AnyTask>> {
  /**
   * The task implementations this worker runs (`Task.implement(contract, handler)` or `Task.make`); a claimed task
   * with no implementation here is failed at once as `unknown_task`.
   */
  readonly tasks: Tasks
  /** Handlers running at once (default 10). */
  readonly concurrency?: number | undefined
  /** Queues to claim from (default: the tasks' default queues, else "default"). */
  readonly queues?: ReadonlyArray<string> | undefined
  /** Lease length; a task whose worker stops heart-beating is reclaimed after it (default 30 s). */
  readonly leaseDuration?: Duration.DurationInput | undefined
  /** Heartbeat period (default a third of the lease). */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** Poll interval when idle: starts at `min`, doubles up to `max` (default 50 ms .. 1 s). */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /**
   * Most tasks claimed ahead of free handler slots (a local queue, like graphile-worker's `localQueue`): a slot
   * that frees starts the next task without a database round trip, and claims come in batches. Within this bound
   * the worker keeps about two claim round trips' worth of work buffered, measured as it runs (so slow tasks are
   * not hoarded away from other workers). Buffered tasks are leased (and heart-beaten) while they wait; a shutdown
   * hands them back without counting an attempt. Default 1000; 0 claims only for free slots.
   */
  readonly prefetch?: number | undefined
  /**
   * A `Worker.execute` span per task attempt. Default: only when a tracer is installed (e.g. an OpenTelemetry
   * layer); Effect's built-in tracer exports nowhere, and creating a span per task is a measurable share of the
   * worker's CPU at tens of thousands of tasks a second.
   */
  readonly spans?: boolean | undefined
  /** How long in-flight handlers may run after shutdown begins before they are released (default 10 s). */
  readonly shutdownGracePeriod?: Duration.DurationInput | undefined
  /**
   * Period of the worker's own pass reclaiming expired leases of other (dead) workers (default 5 s; 0 disables). The
   * pass is skipped while a `Reconciler` running in this process has that step (`Baton.layer*` run one).
   */
  readonly reclaimInterval?: Duration.DurationInput | undefined
  /** An id for logs, recorded on the tasks this worker claims and in the live-workers table (default random). */
  readonly workerId?: string | undefined
  /**
   * Least time between two progress writes of one task (`TaskContext.progress`; default 100 ms): a handler reporting
   * more often has only its latest value written, at most once per interval.
   */
  readonly progressInterval?: Duration.DurationInput | undefined
}

/**
 * A running worker.
 *
 * @category models
 */
export interface WorkerHandle {
  readonly workerId: string
  /** Tasks whose outcome this worker recorded (succeeded, failed, dead, retried). */
  readonly processed: Effect.Effect<number>
  /** Handlers running now. */
  readonly inFlight: Effect.Effect<number>
}

/**
 * Counter of task outcomes recorded by workers, tagged with `outcome`.
 *
 * @category metrics
 */
export const tasksProcessed = Outcomes.tasksProcessed

/**
 * Counter of tasks a worker started without a claim: chord callbacks its own completing transaction dispatched and
 * inserted already leased to it (docs/chords.md, "The callback hand-off").
 *
 * @category metrics
 */
export const tasksHandedOff = Handoff.tasksHandedOff

/**
 * Delay before retry number `attempt` (1-based) with exponential backoff, computed with `Schedule`.
 *
 * @category retries
 */
export const retryDelay: (
  backoff: { readonly baseMs: number; readonly factor: number; readonly maxMs: number },
  attempt: number
) => Effect.Effect<number> = Attempt.retryDelay

// Effect's default tracer: spans that go nowhere unless a tracer layer replaces it.
const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * Starts a worker in the current scope.
 *
 * @category constructors
 */
export const run = <const Tasks extends ReadonlyArray<Task.AnyTask>>(
  options: WorkerOptions<Tasks>
): Effect.Effect<WorkerHandle, InvalidInput, Scope.Scope | TaskQueue | Task.Requirements<Tasks[number]>> =>
  Effect.gen(function* () {
    const settings = yield* checkOptions(options)
    const queue = yield* TaskQueue
    const registry = new Map<string, Task.AnyTask>(options.tasks.map((task) => [task.name, task]))
    const workerId = options.workerId ?? `worker-${crypto.randomUUID().slice(0, 8)}`
    const concurrency = settings.concurrency
    const spans = options.spans ?? (yield* Effect.tracer) !== builtInTracer
    const queues = options.queues ?? [...new Set(options.tasks.map((task) => task.defaults.queue ?? "default"))].sort()
    const reclaimEvery = Duration.millis(settings.reclaimMs)

    const annotate = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(Effect.annotateLogs({ workerId }), Effect.annotateSpans({ workerId }))

    // The state the parts share, passed to each: the local queue (and the leases held), outcome counts, the
    // completions waiting for the group commit, and the lock the group commit and the heartbeat take in turn.
    const local = yield* LocalQueue.make(concurrency, settings.prefetch)
    const outcomes = yield* Outcomes.make
    const completions = yield* GroupCommit.make(concurrency)
    const leaseWrites = yield* Effect.makeSemaphore(GroupCommit.maxInFlight)
    const running = yield* FiberSet.make<void, never>()
    const execute = Attempt.make({
      queue,
      registry,
      workerId,
      spans,
      local,
      completions,
      outcomes,
      leaseMs: settings.leaseMs,
      progressMs: settings.progressMs
    })

    // Live workers: registered now, kept alive by the heartbeat below, removed at graceful shutdown (the last
    // finalizer to run, after the group commit's flush), gone for readers once `leaseMs` passes without a heartbeat.
    const presence: Lifecycle.Presence = {
      registration: {
        id: workerId,
        host: Os.hostname(),
        pid: process.pid,
        queues,
        concurrency,
        ttlMs: settings.leaseMs
      }
    }
    yield* Lifecycle.register(queue, presence)
    yield* Effect.addFinalizer(() => annotate(Lifecycle.deregister(queue, presence)))

    // Finalizers run in reverse order: the last one added (shutdown) runs first, while the group commit still runs.
    yield* Effect.forkScoped(
      annotate(
        GroupCommit.run({
          queue,
          completions,
          local,
          leaseWrites,
          outcomes,
          leaseMs: settings.leaseMs,
          handoff: { workerId, names: new Set(registry.keys()), queues: new Set(queues) }
        })
      )
    )
    yield* Effect.forkScoped(
      annotate(
        Lifecycle.heartbeat({
          queue,
          local,
          leaseWrites,
          leaseMs: settings.leaseMs,
          heartbeatMs: settings.heartbeatMs,
          presence
        })
      )
    )
    if (Duration.toMillis(reclaimEvery) > 0) {
      const reconciler = yield* Effect.serviceOption(Reconciler.Reconciler)
      yield* Effect.forkScoped(annotate(Lifecycle.reclaimer(queue, reconciler, reclaimEvery)))
    }
    yield* Effect.forkScoped(ClaimLoop.forwardWakeups(queue, local, queues))
    // The slots are forked from this fiber, so they carry the handlers' requirements (`Task.Requirements<Tasks>`).
    for (let i = 0; i < concurrency; i++) yield* FiberSet.run(running, annotate(ClaimLoop.slot(local, execute)))
    const claimLoop = yield* Effect.forkScoped(
      annotate(
        ClaimLoop.run({
          queue,
          local,
          queues,
          leaseMs: settings.leaseMs,
          workerId,
          pollMin: Duration.millis(settings.pollMinMs),
          pollMax: Duration.millis(settings.pollMaxMs)
        })
      )
    )
    yield* Effect.addFinalizer(() =>
      annotate(
        Lifecycle.shutdown({
          queue,
          local,
          completions,
          claimLoop,
          running,
          workerId,
          grace: Duration.millis(settings.graceMs)
        })
      )
    )
    yield* Effect.logDebug("worker started", { queues: queues.join(","), concurrency, maxPrefetch: settings.prefetch })
    return {
      workerId,
      processed: Ref.get(outcomes.processed),
      inFlight: Effect.sync(() => local.active)
    }
  })

/**
 * Most handlers one worker runs at once.
 *
 * @category limits
 */
export const maxConcurrency = 10_000
/**
 * Most tasks one worker buffers ahead of its free slots.
 *
 * @category limits
 */
export const maxPrefetch = 100_000

/** Checks the settings (each field named in the error, with its allowed range) and fills in the defaults. */
const checkOptions = (options: WorkerOptions<ReadonlyArray<Task.AnyTask>>) =>
  Effect.gen(function* () {
    const fail = (field: string, message: string) => Effect.fail(new InvalidInput({ field, message }))
    const int = (field: string, value: number | undefined, fallback: number, min: number, max: number) => {
      const problem = value === undefined ? undefined : Validate.integer(field, value, min, max)
      return problem === undefined ? Effect.succeed(value ?? fallback) : fail(field, problem)
    }
    const ms = (field: string, value: Duration.DurationInput | undefined, fallback: number, min: number) => {
      if (value === undefined) return Effect.succeed(fallback)
      const checked = Validate.duration(field, value, min, Validate.maxDurationMs)
      return checked.problem === undefined ? Effect.succeed(checked.ms) : fail(field, checked.problem)
    }
    if (!Array.isArray(options.tasks)) return yield* fail("tasks", "tasks must be an array of Task.make(...) values")
    for (const [i, task] of options.tasks.entries()) {
      const problem = Validate.name(`tasks[${i}].name`, (task as Task.AnyTask | undefined)?.name)
      if (problem !== undefined) return yield* fail("tasks", problem)
      if (!Task.isTask(task)) {
        return yield* fail(
          "tasks",
          `tasks[${i}] ("${task.name}") is a contract without a handler: pass Task.implement(contract, handler)`
        )
      }
    }
    if (options.queues !== undefined) {
      const problem =
        options.queues.length === 0
          ? "queues must not be empty (omit it for the tasks' queues)"
          : Validate.tags("queues", options.queues)
      if (problem !== undefined) return yield* fail("queues", problem)
    }
    if (options.workerId !== undefined) {
      const problem = Validate.name("workerId", options.workerId)
      if (problem !== undefined) return yield* fail("workerId", problem)
    }
    const concurrency = yield* int("concurrency", options.concurrency, 10, 1, maxConcurrency)
    const prefetch = yield* int("prefetch", options.prefetch, 1000, 0, maxPrefetch)
    const leaseMs = yield* ms("leaseDuration", options.leaseDuration, 30_000, 10)
    const heartbeatMs = yield* ms(
      "heartbeatInterval",
      options.heartbeatInterval,
      Math.min(Math.max(10, Math.floor(leaseMs / 3)), leaseMs - 1),
      1
    )
    if (heartbeatMs >= leaseMs) {
      return yield* fail(
        "heartbeatInterval",
        `heartbeatInterval (${heartbeatMs} ms) must be shorter than leaseDuration (${leaseMs} ms)`
      )
    }
    const pollMinMs = yield* ms("pollInterval.min", options.pollInterval?.min, 50, 1)
    const pollMaxMs = yield* ms("pollInterval.max", options.pollInterval?.max, Math.max(1000, pollMinMs), 1)
    if (pollMaxMs < pollMinMs) {
      return yield* fail(
        "pollInterval.max",
        `pollInterval.max (${pollMaxMs} ms) is below pollInterval.min (${pollMinMs} ms)`
      )
    }
    const graceMs = yield* ms("shutdownGracePeriod", options.shutdownGracePeriod, 10_000, 0)
    const reclaimMs = yield* ms("reclaimInterval", options.reclaimInterval, 5000, 0)
    const progressMs = yield* ms("progressInterval", options.progressInterval, 100, 0)
    return { concurrency, prefetch, leaseMs, heartbeatMs, pollMinMs, pollMaxMs, graceMs, reclaimMs, progressMs }
  })

/**
 * A layer running a worker for the lifetime of the layer (graceful shutdown when it is released).
 *
 * @category layers
 */
export const layer = <const Tasks extends ReadonlyArray<Task.AnyTask>>(
  options: WorkerOptions<Tasks>
): Layer.Layer<never, InvalidInput, TaskQueue | Task.Requirements<Tasks[number]>> => Layer.scopedDiscard(run(options))
