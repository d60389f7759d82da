/**
 * RunService: the durable record of a workflow run and its progress.
 *
 * A run is a row: its kind, its state (`running`, `succeeded`, `failed`, `cancelled`), how many of its batches are
 * confirmed (`completedBatches` of `totalBatches`), how many times it was started (`attempt`: 1, plus one per
 * resume), its last error and free-form metadata. The implementation on `@effect/sql` is `SqlRunService` (every
 * backend: Postgres, a SQLite file, SQLite `:memory:`).
 *
 * Guarantees:
 * - Progress only moves forward, and only over confirmed batches: `updateProgress(runId, k, total)` moves
 *   `completedBatches` from `c` to `k` only if every batch `c .. k-1` has a *completed* checkpoint row
 *   (`CheckpointCoordinator`), checked in the same statement that moves it. Anything else is a typed
 *   `ProgressRefused` and changes nothing; `k = c` is an idempotent no-op (a resumed run re-applies it).
 * - State moves are guarded: only a `running` run finishes, only a `running` run makes progress, and a terminal run
 *   is reopened (`reopen`, for a resume) only from `failed` or from `running` (a driver that died); `succeeded` and
 *   `cancelled` are final.
 * - Checkpoint scopes: a failed checkpoint stays failed for good (it keeps blocking), so a run that is resumed after
 *   a failure records its checkpoints under a new scope: `checkpointScope` is the run id itself until the first
 *   failure, then `<runId>#1`, `<runId>#2`, … (`reopen` of a failed run starts the next one). A batch is confirmed
 *   when its checkpoint is completed in any of the run's scopes (`checkpointScopes`).
 * - Every change commits before the call returns, and joins the caller's `sql.withTransaction` when there is one.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** A run's id. */
export const RunId = Schema.String.pipe(Schema.brand("baton/RunId"))
/** A run's id. */
export type RunId = typeof RunId.Type

/** The states of a run. `running` also covers a run whose driver died: `resume` picks it up. */
export const RunState = Schema.Literal("running", "succeeded", "failed", "cancelled")
/** The states of a run. */
export type RunState = typeof RunState.Type

/** A run as stored. */
export interface Run {
  readonly id: RunId
  /** What kind of workflow this is (e.g. `"extract"`). */
  readonly kind: string
  readonly state: RunState
  /** Batches whose checkpoint is confirmed and recorded as progress. */
  readonly completedBatches: number
  readonly totalBatches: number
  /** 1 for the first start, plus one per `reopen` (resume). */
  readonly attempt: number
  /** The `runId` under which this attempt creates its checkpoints (see the module doc). */
  readonly checkpointScope: string
  /** Every scope the run has used, oldest first (the last is `checkpointScope`). */
  readonly checkpointScopes: ReadonlyArray<string>
  /** The error that failed the run, if any. */
  readonly error: string | undefined
  /** Workflow-specific data given at creation (JSON). */
  readonly metadata: unknown
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly finishedAt: Date | undefined
}

/** No run has this id. */
export class RunNotFound extends Schema.TaggedError<RunNotFound>()("RunNotFound", {
  runId: Schema.String
}) {
  override get message(): string {
    return `no run with id "${this.runId}"`
  }
}

/** Why `updateProgress` refused to move a run's progress. */
export const ProgressRefusal = Schema.Literal("backwards", "unconfirmed-checkpoint", "out-of-range", "not-running")
/** Why `updateProgress` refused to move a run's progress. */
export type ProgressRefusal = typeof ProgressRefusal.Type

/** `updateProgress` refused: progress would move backwards, past an unconfirmed checkpoint, or the run is over. */
export class ProgressRefused extends Schema.TaggedError<ProgressRefused>()("ProgressRefused", {
  runId: Schema.String,
  reason: ProgressRefusal,
  /** Progress before the call. */
  current: Schema.Number,
  /** The progress asked for. */
  requested: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    return `progress of run ${this.runId} refused (${this.reason}): ${this.detail}`
  }
}

/** A state change that the run's current state does not allow (e.g. resuming a succeeded run). */
export class RunStateConflict extends Schema.TaggedError<RunStateConflict>()("RunStateConflict", {
  runId: Schema.String,
  from: RunState,
  to: RunState
}) {
  override get message(): string {
    return `run ${this.runId} is ${this.from}; it cannot become ${this.to}`
  }
}

/** The checkpoint scope of generation `generation` of run `runId` (0: the run id itself). */
export const checkpointScope = (runId: string, generation: number): string =>
  generation === 0 ? runId : `${runId}#${generation}`

/** Options of `createRun`. */
export interface CreateRunOptions {
  /** The workflow kind (e.g. `"extract"`). */
  readonly kind: string
  readonly totalBatches: number
  /** Choose the id (default a random UUID); an existing run with this id is returned unchanged. */
  readonly id?: string | undefined
  /** Workflow-specific data (must be JSON-serialisable). */
  readonly metadata?: unknown
}

/** Durable runs and their progress. */
export class RunService extends Context.Tag("baton/RunService")<
  RunService,
  {
    /** Creates a `running` run (or returns the existing one with the same id). */
    readonly createRun: (options: CreateRunOptions) => Effect.Effect<Run, SqlError>
    /** Reads a run. */
    readonly getRun: (runId: string) => Effect.Effect<Run, RunNotFound | SqlError>
    /** Lists runs, newest first (optionally only those in some states). */
    readonly listRuns: (options?: {
      readonly states?: ReadonlyArray<RunState> | undefined
      readonly limit?: number | undefined
    }) => Effect.Effect<ReadonlyArray<Run>, SqlError>
    /** Moves progress forward to `completed` of `total` batches, over confirmed checkpoints only. */
    readonly updateProgress: (
      runId: string,
      completed: number,
      total: number
    ) => Effect.Effect<Run, RunNotFound | ProgressRefused | SqlError>
    /** Ends a running run as succeeded, failed (with the error) or cancelled (also a failed one); repeating is a no-op. */
    readonly finish: (
      runId: string,
      state: Exclude<RunState, "running">,
      error?: string | undefined
    ) => Effect.Effect<Run, RunNotFound | RunStateConflict | SqlError>
    /** Makes a failed (or interrupted, still running) run running again for a resume; a failed one gets a new scope. */
    readonly reopen: (runId: string) => Effect.Effect<Run, RunNotFound | RunStateConflict | SqlError>
  }
>() {}
