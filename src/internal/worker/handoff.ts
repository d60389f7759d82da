/**
 * The chord callback hand-off, worker side: the offer a group commit makes for its transaction, and the tasks that
 * transaction handed over turned into local-queue entries once it committed (`src/internal/sql/handoff.ts` has the
 * statement side and the argument).
 *
 * A handed-off task enters `held` (the heartbeat extends its lease) and `ready` like a claimed one, so a free slot
 * starts it at once: no NOTIFY, no claim round trip. A worker that stops accepting (shutdown) offers nothing; a task
 * handed over by a commit that was in flight when shutdown began is not taken: its lease expires and it is reclaimed
 * like any task.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import type { HandoffOffer } from "../sql/handoff.js"
import * as LocalQueue from "./localQueue.js"

/** Counter of tasks (chord callbacks) a worker received already leased from its own completing transaction. */
export const tasksHandedOff = Metric.counter("baton_worker_tasks_handed_off_total", {
  description: "Tasks a worker started without a claim: handed over by its own completing transaction"
})

/** What a worker offers to take for one completing transaction (a fresh offer for each try of a commit). */
export const offer = (options: {
  readonly local: LocalQueue.LocalQueue
  readonly workerId: string
  readonly leaseMs: number
  readonly names: ReadonlySet<string>
  readonly queues: ReadonlySet<string>
}): HandoffOffer | undefined => {
  const { local } = options
  // Room: a free slot (or buffer room), so the handed task does not wait behind a full local queue.
  const free = local.accepting ? Math.min(local.concurrency - local.active, LocalQueue.free(local)) : 0
  if (free <= 0) return undefined
  return {
    workerId: options.workerId,
    leaseMs: options.leaseMs,
    names: options.names,
    queues: options.queues,
    free,
    handed: []
  }
}

/** After the commit: the handed-over tasks into `held` and `ready` (no interruption point in between). */
export const accept = (local: LocalQueue.LocalQueue, offer: HandoffOffer | undefined): Effect.Effect<void> =>
  // Shutdown began while the commit was in flight: the slots may be gone, so the tasks are left to their lease.
  offer === undefined || offer.handed.length === 0 || !local.accepting
    ? Effect.void
    : Effect.suspend(() => {
        for (const task of offer.handed) {
          local.held.set(task.id, task)
          local.buffered++
          Queue.unsafeOffer(local.ready, task)
        }
        return Metric.incrementBy(tasksHandedOff, offer.handed.length)
      })
