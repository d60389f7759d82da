/**
 * CompletionBackend: every terminal state change (a task finishing, a chord completing, a checkpoint resolving) as
 * an event on a filtered, resumable stream.
 *
 * Contract (every implementation):
 * - Events come from the durable completions log, which is appended in the same transaction as the state change it
 *   records: an event exists if and only if that change committed. There is no public `publish`.
 * - `subscribe(options)` succeeds once the subscription is active: every event that commits after it returned is
 *   delivered (so "subscribe, then re-read the state, then wait" never loses a wake-up).
 * - Delivery is in log order, without gaps and without duplicates, including across a reconnect of the live channel
 *   and at the seam between replay and live. Log order is commit order on SQLite and `(xid, seq)` order on Postgres
 *   (see docs/completion-backend.md): `sequence` numbers therefore increase on SQLite but may step back on Postgres.
 * - Resume after an event with its opaque `cursor` (`after`), or replay every event whose `sequence` is at least
 *   `fromSequence`. A resume point older than the retained log fails with `CursorExpired`; it never skips silently.
 * - `filter` is applied by the backend (in SQL), never after delivery. A filter the backend cannot apply fails the
 *   subscription with `FilterUnsupported`: a subscriber never receives an unfiltered stream (tenant isolation).
 *
 * The implementation on `@effect/sql` (Postgres, SQLite file, SQLite `:memory:`) is `SqlCompletionBackend`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import { type InvalidInput, TaskId } from "./internal/ids.js"

/**
 * What a log row records. `task`: a task reached a terminal state. `task.progress`: a running task's handler reported
 * progress (`TaskContext.progress`; outcome `running`, with `progress` and `message`; not a completion: filter with
 * `kinds: ["task"]` to see completions only). The chord and checkpoint modules append the others (in the
 * transaction that decides them).
 */
export const CompletionKind = Schema.Literal(
  "task",
  "task.progress",
  "chord.completed",
  "chord.failed",
  "chord.callback.enqueued",
  "checkpoint.completed",
  "checkpoint.failed"
)
/** What a log row records. */
export type CompletionKind = typeof CompletionKind.Type

/**
 * How it ended. Tasks use the first four; chord and checkpoint kinds use `succeeded` or `failed`; `task.progress`
 * events (the task is still running) use `running`.
 */
export const CompletionOutcome = Schema.Literal("succeeded", "failed", "dead", "cancelled", "running")
/** How it ended. */
export type CompletionOutcome = typeof CompletionOutcome.Type

/** An opaque resume point: pass an event's `cursor` as `after` to continue right after that event. */
export const Cursor = Schema.String.pipe(Schema.brand("baton/CompletionCursor"))
/** An opaque resume point. */
export type Cursor = typeof Cursor.Type

/**
 * One completion. Payloads and results are not carried (read them with `TaskQueue.get`); `taskId` is absent for
 * events that are not about one task (e.g. `chord.completed`).
 */
export const CompletionEvent = Schema.Struct({
  /** Position in the log (`seq`); unique, but only SQLite guarantees it increases in delivery order. */
  sequence: Schema.Number,
  /** Resume point right after this event. */
  cursor: Cursor,
  kind: CompletionKind,
  taskId: Schema.optional(TaskId),
  taskName: Schema.optional(Schema.String),
  queue: Schema.optional(Schema.String),
  namespace: Schema.String,
  tags: Schema.Array(Schema.String),
  outcome: CompletionOutcome,
  chordId: Schema.optional(Schema.String),
  runId: Schema.optional(Schema.String),
  /** `task.progress` only: the reported fraction, 0 to 1. */
  progress: Schema.optional(Schema.Number),
  /** `task.progress` only: the reported message, if any. */
  message: Schema.optional(Schema.String),
  /** When the state change was recorded (encoded as epoch milliseconds). */
  at: Schema.DateFromNumber
})
/** One completion. */
export type CompletionEvent = typeof CompletionEvent.Type

/** Which events a subscriber receives; every given field must match (AND). Applied in the backend's query. */
export interface CompletionFilter {
  /** Only this namespace (tenant). */
  readonly namespace?: string | undefined
  /** Only events carrying every one of these tags. */
  readonly tags?: ReadonlyArray<string> | undefined
  /** Only events of this task name. */
  readonly taskName?: string | undefined
  /** Only these kinds. */
  readonly kinds?: ReadonlyArray<CompletionKind> | undefined
}

/** Where a subscription starts. At most one of `fromSequence` and `after`; neither means "from now on". */
export interface SubscribeOptions {
  readonly filter?: CompletionFilter | undefined
  /**
   * Replay every event with `sequence >= fromSequence`, then continue live (`CursorExpired` if one of them was
   * pruned). `"oldest"`: from right after the newest pruned event (everything retained without a gap).
   */
  readonly fromSequence?: number | "oldest" | undefined
  /** Continue right after the event whose `cursor` this is (the sound way to resume on every backend). */
  readonly after?: Cursor | string | undefined
  /** Rows read per query (default 1000). */
  readonly batchSize?: number | undefined
}

/** The backend cannot apply this filter; nothing was subscribed (a filter is never dropped silently). */
export class FilterUnsupported extends Schema.TaggedError<FilterUnsupported>()("FilterUnsupported", {
  field: Schema.String,
  message: Schema.String
}) {}

/** The cursor is malformed, from another backend, or combined with `fromSequence`. */
export class InvalidCursor extends Schema.TaggedError<InvalidCursor>()("InvalidCursor", {
  cursor: Schema.String,
  message: Schema.String
}) {}

/** Events after the resume point were pruned by the retention policy: resuming would skip them. */
export class CursorExpired extends Schema.TaggedError<CursorExpired>()("CursorExpired", {
  /** The resume point asked for (a cursor, or `sequence >= n`). */
  requested: Schema.String,
  message: Schema.String
}) {}

/** Errors of starting a subscription (`InvalidInput`: `batchSize` out of range, 1 to 100,000). */
export type SubscribeError = FilterUnsupported | InvalidCursor | CursorExpired | InvalidInput | SqlError

/** Errors a running subscription's stream can fail with (pruning overtook it, or the database stayed unreachable). */
export type StreamError = CursorExpired | SqlError

/** The completion event stream. */
export class CompletionBackend extends Context.Tag("baton/CompletionBackend")<
  CompletionBackend,
  {
    /** Starts a subscription in the current scope; succeeds once it is active (events committed after are delivered). */
    readonly subscribe: (
      options?: SubscribeOptions
    ) => Effect.Effect<Stream.Stream<CompletionEvent, StreamError>, SubscribeError, Scope.Scope>
    /** `subscribe` as a self-contained stream (the subscription lives as long as the stream runs). */
    readonly stream: (options?: SubscribeOptions) => Stream.Stream<CompletionEvent, SubscribeError>
    /** Applies the retention policy once (oldest rows first, in short transactions); returns rows deleted. */
    readonly prune: Effect.Effect<number, SqlError>
  }
>() {}
