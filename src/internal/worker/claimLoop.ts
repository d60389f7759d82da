/**
 * Claiming work into the local queue, and the slots that run it.
 *
 * - The claim loop claims in batches under one lease into `ready`, keeping about two claim round trips' worth of
 *   work buffered ahead of the free slots (measured as it runs: large for fast tasks, near zero for slow ones, never
 *   more than `maxPrefetch`). It claims again when a claim of at least `minClaim` fits (`needWork`), waits for new
 *   work (`wake`) or the shortest poll after a partial claim, and polls with exponential backoff when idle.
 * - A claimed batch enters `held` and `ready` without an interruption point after the claim, so a shutdown that
 *   interrupts the loop never strands a claimed task outside them. The worker picks each claim's lease id: a claim
 *   that fails (a dropped connection) is looked up by it on a fresh connection (`TaskQueue.claimed`, retried with
 *   backoff), so a claim that committed before its reply was lost does not strand its tasks until the lease expires.
 * - `concurrency` long-lived slot fibers take tasks from `ready` one after another (no fiber per task) until they
 *   take a `stop` marker.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { ClaimedTask, TaskQueue } from "../../TaskQueue.js"
import * as LocalQueue from "./localQueue.js"
import * as Retry from "./retry.js"

/** The claim loop (runs until interrupted). */
export const run = (options: {
  readonly queue: TaskQueue["Type"]
  readonly local: LocalQueue.LocalQueue
  readonly queues: ReadonlyArray<string>
  readonly leaseMs: number
  readonly workerId: string
  readonly pollMin: Duration.Duration
  readonly pollMax: Duration.Duration
}): Effect.Effect<never> => {
  const { leaseMs, local, pollMax, pollMin, queue, queues, workerId } = options
  const { ready, wake } = local
  return Effect.gen(function* () {
    let idle = pollMin
    let rate = 0 // handler runs per millisecond (moving average)
    let claimMs = 1 // claim round trip (moving average)
    let sampledAt = yield* Clock.currentTimeMillis
    let sampledFinished = 0
    while (true) {
      const now = yield* Clock.currentTimeMillis
      if (now - sampledAt >= 5) {
        const recent = (local.finished - sampledFinished) / (now - sampledAt)
        rate = rate === 0 ? recent : rate * 0.7 + recent * 0.3
        sampledAt = now
        sampledFinished = local.finished
        local.prefetch = Math.min(local.maxPrefetch, Math.ceil(2 * rate * claimMs))
      }
      const free = LocalQueue.free(local)
      if (free < LocalQueue.minClaim(local)) {
        yield* Queue.take(local.needWork)
        continue
      }
      // Claim and buffer without an interruption point in between, so a shutdown never strands a claimed task
      // outside `held` (the shutdown releases what is still buffered).
      // The worker picks the lease id, so a claim that committed but whose reply was lost (a dropped connection)
      // is found again by it, instead of stranding its tasks until the lease expires.
      const leaseId = crypto.randomUUID()
      const claimed = yield* Effect.uninterruptible(
        queue.claim({ queues, limit: free, leaseMs, workerId, leaseId }).pipe(
          Effect.catchAll((error) =>
            Effect.zipRight(
              Effect.logWarning("claim failed; looking for its lease on a fresh connection", { error: error.message }),
              Retry.retrying("recovering a failed claim", queue.claimed(leaseId), Duration.millis(leaseMs)).pipe(
                Effect.catchAll((error) =>
                  Effect.as(Effect.logWarning("claim recovery failed; backing off", { error: error.message }), [])
                )
              )
            )
          ),
          Effect.tap((claimed) =>
            Effect.sync(() => {
              for (const task of claimed) {
                local.held.set(task.id, task)
                local.buffered++
                Queue.unsafeOffer(ready, task)
              }
            })
          )
        )
      )
      const claimedAt = yield* Clock.currentTimeMillis
      claimMs = claimMs * 0.7 + Math.max(0.1, claimedAt - now) * 0.3
      if (claimed.length === 0) {
        yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(idle))
        idle = Duration.min(Duration.times(idle, 2), pollMax)
        continue
      }
      idle = pollMin
      // The queue had fewer runnable tasks than asked for: a freed slot would only find it empty again, so wait for
      // new work (or the shortest poll, for tasks whose run_at comes due). Asking again as soon as a slot freed cost
      // an empty claim per task at light load, which a new task's claim could then wait behind.
      if (claimed.length < free) yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(pollMin))
    }
  })
}

/**
 * One handler slot: runs buffered tasks with `execute` one after another until it takes a `stop` marker. Fork it
 * from the fiber that has the handlers' requirements (`Task.Requirements<Tasks>`).
 */
export const slot = (
  local: LocalQueue.LocalQueue,
  execute: (task: ClaimedTask) => Effect.Effect<void>
): Effect.Effect<void> =>
  Effect.gen(function* () {
    while (true) {
      const next = yield* Queue.take(local.ready)
      if (next === LocalQueue.stop) return
      local.buffered--
      local.active++
      // A defect here would be a Baton bug (handlers' own are caught): it is logged by the attempt's exit handler,
      // and the slot lives on.
      yield* Effect.exit(execute(next))
    }
  })

/** Forwards the queue's wake-ups (in-process enqueues, NOTIFY on Postgres) for `queues` to the claim loop. */
export const forwardWakeups = (
  queue: TaskQueue["Type"],
  local: LocalQueue.LocalQueue,
  queues: ReadonlyArray<string>
): Effect.Effect<void> =>
  queue.wakeups.pipe(
    Stream.filter((name) => queues.includes(name)),
    Stream.runForEach(() => Queue.offer(local.wake, undefined))
  )
