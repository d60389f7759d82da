/**
 * QueueControl: flow control per queue, shared by every worker of the database.
 *
 * - `pause(queue)` / `resume(queue)`: a paused queue is skipped by every claim that starts after `pause` committed;
 *   its tasks stay `pending` (nothing is lost, enqueue still works) and are claimed again after `resume`. Tasks
 *   already running finish normally.
 * - `setRateLimit(queue, { limit, interval })`: at most `limit` claims of the queue's tasks per fixed window of
 *   `interval`, across all workers and processes. Enforced in the claim's transaction: the claim that takes from a
 *   limited queue locks the queue's settings row, takes at most what the window has left, and moves the window's count
 *   in the same transaction.
 * - `setConcurrencyLimit(queue, n)`: at most `n` of the queue's tasks `running` at once across all workers (counted
 *   in that same claim transaction; a claimed task counts as running until it finishes or its lease is reclaimed).
 *
 * Limits: the rate limit counts claims, not completions (a retried task counts again); windows are fixed (a burst of
 * `limit` at the end of one window and `limit` at the start of the next is possible, never more than `limit` in any
 * one window). A worker notices that a queue gained a limit within `settingsCacheTtl` (1 s); until then it skips
 * that queue (the claim's own statement excludes every queue that has a setting), so a new limit is never exceeded,
 * only picked up late. Queues without settings claim through the unchanged single-statement claim.
 *
 * The implementation on `@effect/sql` is `SqlQueueControl`.
 *
 * @since 0.2.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type { InvalidInput } from "./TaskQueue.js"

/** A queue's flow-control settings. */
export interface QueueSettings {
  readonly queue: string
  readonly paused: boolean
  /** At most `limit` claims per `intervalMs` window (undefined: no rate limit). */
  readonly rateLimit: { readonly limit: number; readonly intervalMs: number } | undefined
  /** At most this many tasks running at once (undefined: no limit). */
  readonly concurrencyLimit: number | undefined
}

/** A rate limit: `limit` claims per `interval`. */
export interface RateLimit {
  readonly limit: number
  readonly interval: Duration.DurationInput
}

/** Flow control per queue. */
export class QueueControl extends Context.Tag("baton/QueueControl")<
  QueueControl,
  {
    /** Stops claims from the queue (its tasks stay pending); idempotent. */
    readonly pause: (queue: string) => Effect.Effect<void, InvalidInput | SqlError>
    /** Lets claims take from the queue again; idempotent. */
    readonly resume: (queue: string) => Effect.Effect<void, InvalidInput | SqlError>
    /** Sets (or with `undefined` removes) the queue's rate limit. */
    readonly setRateLimit: (queue: string, limit: RateLimit | undefined) => Effect.Effect<void, InvalidInput | SqlError>
    /** Sets (or with `undefined` removes) the queue's global concurrency limit. */
    readonly setConcurrencyLimit: (
      queue: string,
      limit: number | undefined
    ) => Effect.Effect<void, InvalidInput | SqlError>
    /** The queue's settings (a queue never configured: not paused, no limits). */
    readonly get: (queue: string) => Effect.Effect<QueueSettings, SqlError>
    /** Every queue that has a setting, sorted by name. */
    readonly list: Effect.Effect<ReadonlyArray<QueueSettings>, SqlError>
  }
>() {}

/** How long a worker's claim may use its cached view of which of its queues have settings. */
export const settingsCacheTtl = "1 second"
