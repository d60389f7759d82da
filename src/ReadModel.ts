/**
 * ReadModel: the read-only queries the applications (dashboard, CLI) need beyond what the services' own listings
 * (`TaskQueue.list` / `queueStats`, `ChordRegistry.list`, `RunService.listRuns`) offer, so that no application reads
 * Baton's tables itself.
 *
 * Contract:
 * - Reads only: no method changes anything or takes a lock, and every result is bounded (a page, a `limit`, or a
 *   `GROUP BY` over a fixed set of states, queues and outcomes).
 * - Checkpoints are read per *scope* (the `runId` a checkpoint was created under: a run's `checkpointScopes`), from
 *   the durable checkpoints. The in-memory `CheckpointCoordinator` forgets completed tokens by design, so a run's
 *   checkpoint history is a property of the durable store.
 * - Completion counts come from the durable completions log, so they cover what the log still retains (see
 *   `SqlCompletionBackend` retention).
 * - Times are `Date`s; durations and latencies are milliseconds.
 *
 * The implementation on `@effect/sql` is `SqlReadModel` (provided by every `Baton.layer*`).
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { ChordId, ChordState } from "./ChordRegistry.js"
import type { CompletionOutcome } from "./CompletionBackend.js"
import type { WorkerInfo } from "./TaskQueue.js"

/**
 * A stored checkpoint's state.
 *
 * @category schemas
 */
export const CheckpointState = Schema.Literal("pending", "completed", "failed")
/**
 * A stored checkpoint's state.
 *
 * @category schemas
 */
export type CheckpointState = typeof CheckpointState.Type

/**
 * The completed checkpoints of some scopes: how many, the first one's creation and the last one's completion.
 *
 * @category models
 */
export interface CheckpointStats {
  readonly completed: number
  readonly firstCreatedAt: Date | undefined
  readonly lastCompletedAt: Date | undefined
}

/**
 * One checkpoint as stored.
 *
 * @category models
 */
export interface CheckpointSummary {
  /** The scope (`runId`) it was created under. */
  readonly scope: string
  readonly batchIndex: number
  readonly state: CheckpointState
  /** The stored failure (its JSON value, or the text when it is not JSON); `null` when none. */
  readonly error: unknown
  readonly createdAt: Date
  readonly completedAt: Date | undefined
}

/**
 * A page of checkpoints and how many there are in all.
 *
 * @category models
 */
export interface CheckpointPage {
  readonly total: number
  readonly items: ReadonlyArray<CheckpointSummary>
}

/**
 * A chord found by its idempotency key.
 *
 * @category models
 */
export interface ChordByKey {
  readonly chordId: ChordId
  readonly idempotencyKey: string
  readonly state: ChordState
}

/**
 * Task completions of one queue with one outcome: since `since`, and the part of them since `recentSince`.
 *
 * @category models
 */
export interface CompletionCount {
  /** The task's queue (`undefined` for a completion logged without one). */
  readonly queue: string | undefined
  readonly outcome: CompletionOutcome
  readonly total: number
  readonly recent: number
}

/**
 * The unfinished tasks (pending or running) of one run in one queue.
 *
 * @category models
 */
export interface RunWork {
  readonly runId: string
  readonly queue: string
  readonly pending: number
  readonly running: number
}

/**
 * Whether the database's schema is what this code expects: every Baton migration it knows is applied.
 *
 * @category models
 */
export interface SchemaStatus {
  /** True when no known migration is missing. */
  readonly current: boolean
  /** Names of the applied migrations this code knows, in order. */
  readonly applied: ReadonlyArray<string>
  /** Names of the known migrations not applied. */
  readonly missing: ReadonlyArray<string>
}

/**
 * A page request.
 *
 * @category models
 */
export interface Page {
  readonly limit: number
  readonly offset: number
}

/**
 * Read-only queries for dashboards and tools.
 *
 * @category tags
 */
export class ReadModel extends Context.Tag("baton/ReadModel")<
  ReadModel,
  {
    /** Counts the completed checkpoints of the scopes, with the first creation and the last completion time. */
    readonly checkpointStats: (scopes: ReadonlyArray<string>) => Effect.Effect<CheckpointStats, SqlError>
    /** A page of the checkpoints of the scopes (batch order, then creation), and how many there are. */
    readonly checkpoints: (scopes: ReadonlyArray<string>, page: Page) => Effect.Effect<CheckpointPage, SqlError>
    /** The chords (of any namespace) whose idempotency key is one of `keys`. */
    readonly chordsByKey: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<ChordByKey>, SqlError>
    /** The chords in `state` whose idempotency key starts with `prefix`. */
    readonly chordsByKeyPrefix: (
      prefix: string,
      state: ChordState
    ) => Effect.Effect<ReadonlyArray<ChordByKey>, SqlError>
    /** How many chords there are in each state (every state present, 0 when none). */
    readonly chordCounts: Effect.Effect<Readonly<Record<ChordState, number>>, SqlError>
    /** Time to callback (last body completion → dispatch, ms) of the latest `limit` completed chords, newest first. */
    readonly chordLatencies: (limit: number) => Effect.Effect<ReadonlyArray<number>, SqlError>
    /** Task completions in the log per queue and outcome since `since`, with how many of them since `recentSince`. */
    readonly completionCounts: (options: {
      readonly since: Date
      readonly recentSince: Date
    }) => Effect.Effect<ReadonlyArray<CompletionCount>, SqlError>
    /** The live workers (registered by `Worker.run`, heartbeat not expired), oldest first. */
    readonly workers: Effect.Effect<ReadonlyArray<WorkerInfo>, SqlError>
    /** Pending and running tasks of these runs, per run and queue (a run with none is absent). */
    readonly runWork: (runIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<RunWork>, SqlError>
    /** Which of Baton's migrations are applied (`/healthz`); fails only if the database cannot be read. */
    readonly schemaStatus: Effect.Effect<SchemaStatus, SqlError>
  }
>() {}
