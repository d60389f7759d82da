/**
 * Retention: finished work is deleted after a while, so the task table and the other tables stop growing forever.
 *
 * What `prune` deletes (each kind by its own policy, see `Options` and `defaults`):
 * - finished tasks, per terminal state, older than `maxAge` (by finish time) and/or beyond the newest `maxCount` of
 *   that state. `dead` and `failed` tasks are kept longer by default: they are what an operator inspects and retries.
 *   A task whose chord is still running is kept (its chord may still need it).
 * - settled chords (completed, failed or cancelled, with no live body task left) older than `chords.maxAge` (by their
 *   last activity).
 * - finished runs (succeeded, failed or cancelled) older than `runs.maxAge` (by finish time), with their
 *   checkpoints and the reference workflow's rows of that run.
 * - the completions log: `CompletionBackend.prune`, by the backend's own policy (7 days by default; see
 *   docs/completion-backend.md). A stream's cursor behind pruned log rows fails with `CursorExpired`, never skips.
 *
 * Guarantees: only finished rows are ever deleted (each delete re-checks the state in its own statement, so a task
 * retried meanwhile is kept); deletes run in batches of `batchSize` rows, each its own short transaction, so no lock
 * is held for long and workers keep claiming and completing meanwhile. Every process may prune at once: the deletes
 * are idempotent. The `Reconciler` runs `prune` (step `retention.prune`, every `interval`) when the layer is built
 * with one; `baton prune` runs it once.
 *
 * Limits: a pruned task no longer holds its idempotency key (a recurring task's backfill that reaches back past the
 * retention of its finished tasks enqueues the occurrence again; see docs/operations.md); `TaskQueue.get` of a pruned
 * task fails with `TaskNotFound`.
 *
 * @since 0.2.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"

/** How long to keep one kind of finished row: older than `maxAge`, or beyond the newest `maxCount`, goes. */
export interface Policy {
  /** Delete rows finished longer ago than this (omitted: no age limit). */
  readonly maxAge?: Duration.DurationInput | undefined
  /** Keep at most this many rows (newest first; omitted: no count limit). */
  readonly maxCount?: number | undefined
}

/** Retention settings; an omitted field takes its default from `defaults`, an empty `Policy` `{}` keeps everything. */
export interface Options {
  /** Finished tasks, per terminal state. */
  readonly tasks?:
    | {
        readonly succeeded?: Policy | undefined
        readonly cancelled?: Policy | undefined
        readonly failed?: Policy | undefined
        readonly dead?: Policy | undefined
      }
    | undefined
  /** Settled chords (completed, failed or cancelled, no live body task). */
  readonly chords?: Policy | undefined
  /** Finished runs, with their checkpoints. */
  readonly runs?: Policy | undefined
  /** Rows deleted per statement (default 1000). */
  readonly batchSize?: number | undefined
  /** How often the Reconciler's step runs (default 1 minute). */
  readonly interval?: Duration.DurationInput | undefined
}

/** The defaults: succeeded and cancelled tasks 7 days (at most the newest 1,000,000 each), failed and dead tasks 30 days. */
export const defaults = {
  tasks: {
    succeeded: { maxAge: Duration.days(7), maxCount: 1_000_000 },
    cancelled: { maxAge: Duration.days(7), maxCount: 1_000_000 },
    failed: { maxAge: Duration.days(30) },
    dead: { maxAge: Duration.days(30) }
  },
  chords: { maxAge: Duration.days(7) },
  runs: { maxAge: Duration.days(30) },
  batchSize: 1000,
  interval: Duration.minutes(1)
} as const

/** What one `prune` deleted. */
export interface PruneReport {
  /** Tasks deleted, per terminal state. */
  readonly tasks: {
    readonly succeeded: number
    readonly cancelled: number
    readonly failed: number
    readonly dead: number
  }
  readonly chords: number
  readonly runs: number
  /** Rows of the completions log deleted (`CompletionBackend.prune`; 0 without a completion backend). */
  readonly completions: number
}

/** The name of the `Reconciler` step. */
export const stepName = "retention.prune"

/** Retention of finished work. */
export class Retention extends Context.Tag("baton/Retention")<
  Retention,
  {
    /** Applies every policy once, in bounded batches; what it deleted. */
    readonly prune: Effect.Effect<PruneReport, SqlError>
  }
>() {}

/** The total number of rows a report counts. */
export const total = (report: PruneReport): number =>
  report.tasks.succeeded +
  report.tasks.cancelled +
  report.tasks.failed +
  report.tasks.dead +
  report.chords +
  report.runs +
  report.completions
