/**
 * Keeping leases alive, reclaiming dead workers' leases, and stopping gracefully.
 *
 * - Heartbeat: every `heartbeatMs` (first after one period) extends the lease of every task in `held` (a failed
 *   heartbeat is retried with backoff within the period, `retry.ts`); a lease found lost (another worker may run
 *   the task) is logged, unless the task's outcome write is being retried (it may have committed).
 * - Reclaim: every `reclaimEvery`, hands back tasks whose leases expired (their worker died), unless a `Reconciler`
 *   running in this process covers that step.
 * - Shutdown: stops claiming, releases buffered tasks at once (attempt not counted), lets running handlers finish
 *   within the grace period and interrupts the rest (their attempts release them), then waits for the group commit
 *   to commit every success handed to it.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Reconciler from "../../Reconciler.js"
import type { ClaimedTask, TaskQueue, WorkerRegistration } from "../../TaskQueue.js"
import * as GroupCommit from "./groupCommit.js"
import * as LocalQueue from "./localQueue.js"
import * as Retry from "./retry.js"

/** The worker's row in the live-workers table (`TaskQueue.registerWorker`). */
export interface Presence {
  readonly registration: WorkerRegistration
}

/** Registers the worker as live; a failure is logged, not fatal (the worker runs, unlisted, and retries at heartbeats). */
export const register = (queue: TaskQueue["Type"], presence: Presence): Effect.Effect<void> =>
  queue
    .registerWorker(presence.registration)
    .pipe(Effect.catchAll((error) => Effect.logWarning("registering the worker failed", { error: error.message })))

/** Removes the worker's row (graceful shutdown); a failure is logged and the row expires on its own. */
export const deregister = (queue: TaskQueue["Type"], presence: Presence): Effect.Effect<void> =>
  queue
    .deregisterWorker(presence.registration.id)
    .pipe(Effect.catchAll((error) => Effect.logWarning("deregistering the worker failed", { error: error.message })))

/**
 * The heartbeat loop: the worker's live-workers row (re-registered if it was removed), then the leases it holds.
 * `leaseWrites` keeps the lease part apart from the group commits (it takes every permit; see `GroupCommit.run`).
 */
export const heartbeat = (options: {
  readonly queue: TaskQueue["Type"]
  readonly local: LocalQueue.LocalQueue
  readonly leaseWrites: Effect.Semaphore
  readonly leaseMs: number
  readonly heartbeatMs: number
  readonly presence?: Presence | undefined
}): Effect.Effect<unknown> => {
  const { heartbeatMs, leaseMs, leaseWrites, local, presence, queue } = options
  const alive =
    presence === undefined
      ? Effect.void
      : Effect.suspend(() =>
          queue.heartbeatWorker(presence.registration.id, local.held.size, presence.registration.ttlMs)
        ).pipe(
          Effect.flatMap((found) => (found ? Effect.void : register(queue, presence))),
          Effect.catchAll((error) => Effect.logWarning("worker heartbeat failed", { error: error.message }))
        )
  const beat = Effect.gen(function* () {
    yield* alive
    const leases = [...local.held.values()].map((task) => ({ id: task.id, leaseId: task.leaseId }))
    if (leases.length === 0) return
    const stillHeld = yield* leaseWrites.withPermits(GroupCommit.maxInFlight)(queue.heartbeat(leases, leaseMs))
    for (const lease of leases) {
      // A task whose outcome write is being retried may be gone from `running` because that write committed.
      if (!stillHeld.has(lease.id) && local.held.has(lease.id) && !local.retrying.has(lease.id)) {
        yield* Effect.logWarning("lease lost; the task may run again elsewhere", { taskId: lease.id })
      }
    }
  })
  // A failed heartbeat (a dropped connection) is retried at once with backoff, for up to one period, rather than
  // waiting a whole period with the leases unextended; each try re-reads `held`.
  return Retry.retrying("heartbeat", beat, Duration.millis(heartbeatMs)).pipe(
    Effect.catchAll((error) => Effect.logWarning("heartbeat failed", { error: error.message })),
    Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMs))),
    Effect.delay(Duration.millis(heartbeatMs))
  )
}

/**
 * The worker's own expired-lease pass. While a `Reconciler` runs in this process with the same step (as `Baton.layer*`
 * provide), it reclaims expired leases; this pass runs only when nothing else does.
 */
export const reclaimer = (
  queue: TaskQueue["Type"],
  reconciler: Option.Option<Reconciler.Reconciler["Type"]>,
  every: Duration.Duration
): Effect.Effect<unknown> => {
  const pass = Option.isNone(reconciler)
    ? queue.reclaimExpired
    : Effect.flatMap(reconciler.value.covers(Reconciler.reclaimStepName), (covered) =>
        covered ? Effect.succeed(0) : queue.reclaimExpired
      )
  return pass.pipe(
    Effect.tap((n) => (n > 0 ? Effect.logInfo("reclaimed tasks with expired leases", { count: n }) : Effect.void)),
    Effect.catchAll((error) => Effect.logWarning("reclaim failed", { error: error.message })),
    Effect.repeat(Schedule.spaced(every))
  )
}

/**
 * The graceful shutdown, run as the worker's scope closes, while the group-commit loop still runs (add it as the
 * last finalizer: finalizers run in reverse order).
 */
export const shutdown = (options: {
  readonly queue: TaskQueue["Type"]
  readonly local: LocalQueue.LocalQueue
  readonly completions: GroupCommit.Completions
  /** The claim loop's fiber. */
  readonly claimLoop: Fiber.RuntimeFiber<unknown>
  /** The slot fibers. */
  readonly running: FiberSet.FiberSet<void, never>
  readonly workerId: string
  readonly grace: Duration.Duration
}): Effect.Effect<void> => {
  const { claimLoop, completions, grace, local, queue, running, workerId } = options
  return Effect.gen(function* () {
    yield* Effect.logDebug("worker stopping: no more claims", { inFlight: local.active, buffered: local.buffered })
    local.accepting = false
    yield* Fiber.interrupt(claimLoop)
    // Claimed but never started: hand back at once (the attempt is not counted).
    const unstarted = (yield* Queue.takeAll(local.ready)).pipe(
      Chunk.filter((task) => task !== LocalQueue.stop)
    ) as Chunk.Chunk<ClaimedTask>
    local.buffered = 0
    // Idle slots end at once, busy ones after their task.
    yield* Queue.offerAll(
      local.ready,
      Array.from({ length: local.concurrency }, () => LocalQueue.stop)
    )
    const releasing = yield* Effect.fork(
      Effect.forEach(
        unstarted,
        (task) =>
          queue
            .release(task.id, task.leaseId, {
              attempt: task.attempt,
              kind: "interrupted",
              message: `worker ${workerId} shut down before the task started`
            })
            .pipe(Effect.ignore, Effect.ensuring(Effect.sync(() => local.held.delete(task.id)))),
        { concurrency: 4, discard: true }
      )
    )
    // Finalizers run uninterruptibly: the wait below must be made interruptible for its timeout to fire.
    const settled = yield* FiberSet.awaitEmpty(running).pipe(Effect.interruptible, Effect.timeout(grace), Effect.option)
    if (settled._tag === "None") {
      yield* Effect.logWarning("shutdown grace period over; releasing in-flight tasks", { inFlight: local.active })
    }
    yield* FiberSet.clear(running)
    // Every success handed to the group commit is committed before the group-commit loop stops.
    yield* GroupCommit.flush(completions, grace)
    yield* Fiber.join(releasing)
  })
}
