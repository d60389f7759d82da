/**
 * The worker's local queue and the state its parts share.
 *
 * One `LocalQueue` per worker holds every task whose lease the worker holds (`held`: buffered, running, or waiting
 * for its completion to commit), the tasks claimed ahead of free handler slots (`ready`), and the counters the claim
 * loop sizes its claims by. The parts that touch it (claim loop, slots, attempts, group commit, heartbeat, shutdown)
 * all run on one JavaScript thread and change it only between effects, so plain mutable fields are safe; they are
 * fields of one object passed to each part (not variables captured by one closure) so that who changes what is
 * visible, and so that the hot path pays no `Ref` per task.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type { ClaimedTask } from "../../TaskQueue.js"

/** The marker a slot takes from `ready` to end (one per slot, offered at shutdown). */
export const stop: unique symbol = Symbol.for("baton/Worker/stop")

/** State shared by the worker's parts (see the module comment). */
export interface LocalQueue {
  /** Handler slots. */
  readonly concurrency: number
  /** Upper bound of `prefetch` (the `prefetch` option). */
  readonly maxPrefetch: number
  /** Every task whose lease this worker holds: buffered, running, or waiting for its completion to commit. */
  readonly held: Map<string, ClaimedTask>
  /**
   * Tasks whose outcome write failed and is being retried (`retry.ts`): the heartbeat does not report them lost, as
   * the failed try may have committed before its reply was lost.
   */
  readonly retrying: Set<string>
  /** Claimed tasks waiting for a free handler slot, and `stop` markers at shutdown. */
  readonly ready: Queue.Queue<ClaimedTask | typeof stop>
  /** Signalled when enough slots and buffer room freed for a claim (sliding, size 1). */
  readonly needWork: Queue.Queue<void>
  /** Signalled when new work may be on the worker's queues (sliding, size 1). */
  readonly wake: Queue.Queue<void>
  /** Tasks in `ready`. */
  buffered: number
  /** Handlers running now. */
  active: number
  /** Handler runs finished so far (the rate the local queue is sized by). */
  finished: number
  /** False once shutdown began: no more claims are asked for. */
  accepting: boolean
  /** The local queue's current target: starts at `concurrency`, then follows the measured task rate x claim time. */
  prefetch: number
}

/** A local queue for `concurrency` slots buffering at most `maxPrefetch` tasks. */
export const make = (concurrency: number, maxPrefetch: number): Effect.Effect<LocalQueue> =>
  Effect.gen(function* () {
    return {
      concurrency,
      maxPrefetch,
      held: new Map(),
      retrying: new Set(),
      ready: yield* Queue.unbounded<ClaimedTask | typeof stop>(),
      needWork: yield* Queue.sliding<void>(1),
      wake: yield* Queue.sliding<void>(1),
      buffered: 0,
      active: 0,
      finished: 0,
      accepting: true,
      prefetch: Math.min(concurrency, maxPrefetch)
    }
  })

/** Tasks the worker may hold unstarted or running: its slots plus the current prefetch target. */
export const capacity = (local: LocalQueue): number => local.concurrency + local.prefetch

/** Claim in batches of at least this many once work is flowing (a claim is a round trip and a commit). */
export const minClaim = (local: LocalQueue): number => Math.max(1, Math.floor(local.prefetch / 2))

/** Room for a claim right now (slots and buffer not yet taken). */
export const free = (local: LocalQueue): number => capacity(local) - local.active - local.buffered

/** Wakes the claim loop if a claim of at least `minClaim` tasks now fits (called when a handler run ends). */
export const askForWork = (local: LocalQueue): void => {
  if (local.accepting && free(local) >= minClaim(local)) Queue.unsafeOffer(local.needWork, undefined)
}
