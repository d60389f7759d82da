/**
 * ChordRegistry: fan-in callbacks (a group of body tasks plus one callback task) dispatched exactly once,
 * whichever process is alive.
 *
 * Contract:
 * - `chord(spec)` writes the chord row ("sealed": expected count, callback spec, failure policy) and every body task
 *   in ONE transaction (it joins the caller's `sql.withTransaction` if there is one): a producer crash leaves either a
 *   whole chord or none. The same `idempotencyKey` (within a namespace) returns the existing chord.
 * - The callback task is enqueued once every body task succeeded, with the body results in body order: its payload is
 *   `{ ...args, results }` where `results[i]` is body task i's result (see `callbackPayload`). With
 *   `failurePolicy: "continue"` it waits for the whole body and `results[i]` is body task i's outcome (see
 *   `outcomesPayload` and `BodyOutcome`).
 * - Failure (`failurePolicy: "fail"`, the default): the first body task that ends for good without succeeding (failed,
 *   dead — retries exhausted — or cancelled) fails the chord: the pending body tasks are cancelled, the callback is
 *   never enqueued, the `onError` task (if any) is enqueued exactly once with `{ ...args, failure }` (see
 *   `errorPayload`), and the failure is readable through `get` and raised by `await` as `ChordFailed`.
 * - `cancel` ends a running chord: body tasks cancelled, neither callback nor `onError` enqueued.
 * - An empty body dispatches the callback at once (in the creating transaction) with `results: []`.
 * - Chords of chords: a body entry may be an inner chord (`nested(spec)`), created in the same transaction; its callback
 *   task is the outer chord's body task at that position, so the outer callback gets the inner callbacks' results and
 *   each level dispatches exactly once. An inner chord that fails (or is cancelled, or misses its deadline) fails its
 *   body slot, and so the outer chord (policy `fail`: reason `inner_failed`, `innerChordId` naming it); an outer chord
 *   that fails or is cancelled cancels its running inner chords.
 * - `get` and `await` work from any process; `await` subscribes before it reads, so a chord that ends between the two
 *   is not missed.
 *
 * Guarantees (how they are enforced is in docs/chords.md):
 * - A body task's completion is counted once: the chord's counter moves in the same transaction as the task's own
 *   guarded terminal transition (`... WHERE id AND lease_id AND state = 'running' RETURNING`), so a task that ran
 *   twice (expired lease) is refused the second time and counted once. Counting is O(1) per completion.
 * - Exactly-once dispatch: one conditional update (`... WHERE state = 'running' AND dispatched_at IS NULL RETURNING`)
 *   and the insert of the callback (or `onError`) task commit in the same transaction — never "marked but not
 *   enqueued". Dispatch does not depend on the producer: the transaction that records the last body completion
 *   dispatches, and every registry runs a coordinator whose reconciler dispatches anything left behind (counted by the
 *   `baton_chord_healed_total` metric: a non-zero value means something skipped the normal path).
 *
 * The implementation on `@effect/sql` is in `SqlChordRegistry`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Continuations from "./Continuations.js"
import type * as Task from "./Task.js"
import { type InvalidInput, type InvalidPayload, TaskError, type TaskId } from "./TaskQueue.js"

/** A chord's id. */
export const ChordId = Schema.String.pipe(Schema.brand("baton/ChordId"))
/** A chord's id. */
export type ChordId = typeof ChordId.Type

/** `running` until dispatched; then `completed` (callback enqueued), `failed` or `cancelled`. */
export const ChordState = Schema.Literal("running", "completed", "failed", "cancelled")
/** The states of a chord. */
export type ChordState = typeof ChordState.Type

/** `fail` (default): the first body failure fails the chord. `continue`: wait for all, pass every outcome. */
export const FailurePolicy = Schema.Literal("fail", "continue")
/** How a chord reacts to a body task that fails for good. */
export type FailurePolicy = typeof FailurePolicy.Type

/**
 * Why a chord failed: one of its body tasks failed for good, the chord was cancelled, its body was not done by its
 * `deadline`, or one of its inner chords (`nested`) failed or was cancelled.
 */
export const FailureReason = Schema.Literal("body_failed", "cancelled", "deadline", "inner_failed")
/** Why a chord failed. */
export type FailureReason = typeof FailureReason.Type

/** What is known about a chord's failure: for `body_failed`, the failing body task and its recorded error. */
export const ChordFailure = Schema.Struct({
  chordId: Schema.String,
  reason: FailureReason,
  /** The body task that failed (first to fail for good). */
  taskId: Schema.optional(Schema.String),
  /** Its task name. */
  taskName: Schema.optional(Schema.String),
  /** Its position in the body (0-based). */
  index: Schema.optional(Schema.Number),
  /** Its state when it ended: failed, dead or cancelled. */
  taskState: Schema.optional(Schema.String),
  /**
   * Its last recorded error (the typed failure, encoded, is in `error.error`). For `inner_failed`, the inner chord's
   * `ChordFailure` is in `error.error`.
   */
  error: Schema.optional(TaskError),
  /** The inner chord (`nested`) that filled the failing body slot, if that slot was one. */
  innerChordId: Schema.optional(Schema.String)
})
/** What is known about a chord's failure. */
export type ChordFailure = typeof ChordFailure.Type

/** The chord ended without its callback: a body task failed for good (default policy), or the chord was cancelled. */
export class ChordFailed extends Schema.TaggedError<ChordFailed>()("ChordFailed", ChordFailure.fields) {
  override get message(): string {
    if (this.reason === "cancelled") return `chord ${this.chordId} was cancelled`
    if (this.reason === "deadline") return `chord ${this.chordId} failed: its body was not done by its deadline`
    if (this.reason === "inner_failed") {
      const why = this.error === undefined ? "" : `: ${this.error.message}`
      return `chord ${this.chordId} failed: inner chord ${this.innerChordId ?? "?"} (body ${this.index ?? "?"}) ended ${this.taskState ?? "failed"}${why}`
    }
    const where = `body task ${this.index ?? "?"} (${this.taskName ?? "?"} ${this.taskId ?? "?"})`
    const why = this.error === undefined ? "" : `: ${this.error.kind}: ${this.error.message}`
    return `chord ${this.chordId} failed: ${where} ended ${this.taskState ?? "failed"}${why}`
  }
}

/** No chord has this id. */
export class ChordNotFound extends Schema.TaggedError<ChordNotFound>()("ChordNotFound", {
  chordId: Schema.String
}) {}

/** One body task's outcome, as a `failurePolicy: "continue"` callback receives it. */
export const BodyOutcome = <A, I, R>(value: Schema.Schema<A, I, R>) =>
  Schema.Union(
    Schema.TaggedStruct("Success", { taskId: Schema.String, value }),
    Schema.TaggedStruct("Failure", { taskId: Schema.String, state: Schema.String, error: TaskError })
  )
/** One body task's outcome. */
export type BodyOutcome<A> =
  | { readonly _tag: "Success"; readonly taskId: string; readonly value: A }
  | { readonly _tag: "Failure"; readonly taskId: string; readonly state: string; readonly error: TaskError }

/**
 * The payload Schema of a callback: `fields` plus `results`, the body results in body order. `result` must be the body
 * tasks' `success` Schema (or one with the same encoded form): results are passed in their stored, encoded form.
 */
export const callbackPayload = <A, I, R, const Fields extends Schema.Struct.Fields = {}>(
  result: Schema.Schema<A, I, R>,
  fields?: Fields
) => Schema.Struct({ ...(fields ?? ({} as Fields)), results: Schema.Array(result) })

/** The payload Schema of a `failurePolicy: "continue"` callback: `fields` plus `results`, each body outcome. */
export const outcomesPayload = <A, I, R, const Fields extends Schema.Struct.Fields = {}>(
  result: Schema.Schema<A, I, R>,
  fields?: Fields
) => Schema.Struct({ ...(fields ?? ({} as Fields)), results: Schema.Array(BodyOutcome(result)) })

/** The payload Schema of an `onError` task: `fields` plus `failure`. */
export const errorPayload = <const Fields extends Schema.Struct.Fields = {}>(fields?: Fields) =>
  Schema.Struct({ ...(fields ?? ({} as Fields)), failure: ChordFailure })

type PayloadEncoded<T> = Task.PayloadEncoded<T>
type SuccessEncoded<T> = Task.SuccessEncoded<T>
type ResultsOf<P> = P extends { readonly results: ReadonlyArray<infer R> } ? R : never

/** The payload fields a callback call supplies (the chord fills in `results`). */
export type CallbackArgs<T extends Task.Any> = Omit<Task.Payload<T>, "results">
/** The payload fields an `onError` call supplies (the chord fills in `failure`). */
export type ErrorArgs<T extends Task.Any> = Omit<Task.Payload<T>, "failure">

/** A callback task with the payload fields other than `results`. Build it with `callback`. */
export interface CallbackCall<T extends Task.Any = Task.Any> {
  readonly _tag: "ChordCallback"
  readonly task: T
  readonly args: CallbackArgs<T>
  readonly options: Task.EnqueueOptions
}

/** An `onError` task with the payload fields other than `failure`. Build it with `onError`. */
export interface ErrorCall<T extends Task.Any = Task.Any> {
  readonly _tag: "ChordErrorCallback"
  readonly task: T
  readonly args: ErrorArgs<T>
  readonly options: Task.EnqueueOptions
}

/** Builds a callback call: `task`'s payload must have a `results` array field (see `callbackPayload`). */
export const callback = <T extends Task.Any>(
  task: T,
  args: CallbackArgs<T>,
  options: Task.EnqueueOptions = {}
): CallbackCall<T> => ({ _tag: "ChordCallback", task, args, options })

/** Builds an `onError` call: `task`'s payload must have a `failure: ChordFailure` field (see `errorPayload`). */
export const onError = <T extends Task.Any>(
  task: T,
  args: ErrorArgs<T>,
  options: Task.EnqueueOptions = {}
): ErrorCall<T> => ({ _tag: "ChordErrorCallback", task, args, options })

/**
 * An inner chord as one entry of an outer chord's body (a chord of chords). Build it with `nested`. Its `task` is its
 * callback task: the callback's result is the outer body result at that position.
 */
export interface ChordCall<CB extends Task.Any = Task.Any> {
  readonly _tag: "ChordCall"
  /** The inner chord's callback task (its success type is what the outer callback receives). */
  readonly task: CB
  readonly spec: ChordSpec<ReadonlyArray<BodyEntry>, Task.Any, Task.Any, FailurePolicy>
}

/** One entry of a chord's body: a task call, or an inner chord (`nested`). */
export type BodyEntry = Task.TaskCall | ChordCall

/**
 * An inner chord, for an outer chord's body: created in the outer chord's transaction, its callback task becomes the
 * outer body task at this position (so the outer callback gets the inner callback's result). The inner chord's own
 * `idempotencyKey` and its callback's are ignored (the outer chord's key makes creation idempotent); its namespace
 * defaults to the outer chord's and the outer chord's tags are added to its own. It can have its own `onError`,
 * `failurePolicy` and `deadline`, and its body may hold inner chords in turn.
 */
export const nested = <
  Body extends ReadonlyArray<BodyEntry>,
  CB extends Task.Any,
  EB extends Task.Any = never,
  P extends FailurePolicy = "fail"
>(
  spec: ChordSpec<Body, CB, EB, P> & CheckSpec<Body, CB, EB, P>
): ChordCall<CB> => ({
  _tag: "ChordCall",
  task: spec.callback.task,
  spec: spec as unknown as ChordCall<CB>["spec"]
})

/** What a chord is made of, and how it behaves. */
export interface ChordSpec<
  Body extends ReadonlyArray<BodyEntry>,
  CB extends Task.Any,
  EB extends Task.Any,
  P extends FailurePolicy
> {
  /**
   * The body tasks, in order; body task i's result becomes `results[i]`. Their own idempotency keys are ignored. An
   * entry may be an inner chord (`nested`): its callback's result becomes `results[i]`.
   */
  readonly body: Body
  /** Enqueued exactly once when the body is complete (policy `fail`: all succeeded). */
  readonly callback: CallbackCall<CB>
  /** Enqueued exactly once if the chord fails (policy `fail` only; not on `cancel`). */
  readonly onError?: ErrorCall<EB> | undefined
  /** Default `fail`. */
  readonly failurePolicy?: P | undefined
  /** Namespace of the chord and the default namespace of its tasks (default "default"). */
  readonly namespace?: string | undefined
  /** Labels of the chord, added to its tasks' own tags. */
  readonly tags?: ReadonlyArray<string> | undefined
  /** Same key (within a namespace) → the existing chord; nothing new is written. */
  readonly idempotencyKey?: string | undefined
  /**
   * Fan-in deadline: a duration from the chord's creation, or a point in time. If the body is not all done by then, the
   * chord fails with reason `deadline` (pending body tasks cancelled, no callback, `onError` enqueued once) — enforced
   * by the coordinator of whichever process holds a `ChordRegistry`, under the same guard as dispatch.
   */
  readonly deadline?: Duration.DurationInput | Date | undefined
}

/** The task type(s) of a body. */
export type BodyTasks<Body extends ReadonlyArray<BodyEntry>> = Body[number]["task"]

type Expected<Body extends ReadonlyArray<BodyEntry>, P> = P extends "continue"
  ? BodyOutcome<Task.Success<BodyTasks<Body>>>
  : Task.Success<BodyTasks<Body>>
type ExpectedEncoded<Body extends ReadonlyArray<BodyEntry>, P> = P extends "continue"
  ? BodyOutcome<SuccessEncoded<BodyTasks<Body>>>
  : SuccessEncoded<BodyTasks<Body>>

/**
 * Type-level check that the callback's `results` element accepts the body's results (decoded and encoded) and that the
 * `onError` task takes a `failure`. A mismatch turns into a required property naming the problem.
 */
export type CheckSpec<
  Body extends ReadonlyArray<BodyEntry>,
  CB extends Task.Any,
  EB extends Task.Any,
  P extends FailurePolicy
> = ([Expected<Body, P>] extends [ResultsOf<Task.Payload<CB>>]
  ? [ExpectedEncoded<Body, P>] extends [ResultsOf<PayloadEncoded<CB>>]
    ? unknown
    : { readonly "callback's encoded results do not match the body tasks' encoded success": never }
  : { readonly "callback's results element does not accept the body tasks' success type": never }) &
  ([EB] extends [never]
    ? unknown
    : [Task.Payload<EB>] extends [{ readonly failure: ChordFailure }]
      ? unknown
      : { readonly "onError task's payload has no failure: ChordFailure field": never })

/** Everything known about a chord. */
export interface ChordInfo {
  readonly chordId: ChordId
  readonly state: ChordState
  readonly namespace: string
  readonly tags: ReadonlyArray<string>
  readonly failurePolicy: FailurePolicy
  readonly idempotencyKey: string | undefined
  /** Number of body tasks. */
  readonly expected: number
  /** Body tasks that succeeded / failed or died / were cancelled (each counted once). */
  readonly succeeded: number
  readonly failed: number
  readonly cancelled: number
  /** The callback's task name. */
  readonly callbackName: string
  /** The callback task, once enqueued. */
  readonly callbackTaskId: TaskId | undefined
  /** The `onError` task, once enqueued. */
  readonly errorTaskId: TaskId | undefined
  /** Why the chord failed (failed or cancelled chords). */
  readonly failure: Option.Option<ChordFailure>
  /** True when the reconciler, not the last body completion, dispatched it. */
  readonly healed: boolean
  readonly createdAt: Date
  /** When the last body completion so far was recorded. */
  readonly lastBodyAt: Date | undefined
  /** When the chord was dispatched (callback or onError enqueued, or cancelled). */
  readonly dispatchedAt: Date | undefined
  /** The fan-in deadline, if it has one. */
  readonly deadlineAt: Date | undefined
  /** For an inner chord (`nested`): the outer chord whose body slot it fills. */
  readonly parentChordId: ChordId | undefined
  /** For an inner chord: its position in the outer chord's body. */
  readonly parentIndex: number | undefined
}

/** Options of `list`. */
export interface ListOptions {
  /** Only chords in this state. */
  readonly state?: ChordState | undefined
  /** Page size (default 50, at most 1,000). */
  readonly limit?: number | undefined
  /** Chords to skip (default 0). */
  readonly offset?: number | undefined
  /** Only the inner chords of this outer chord (`nested`), in body order instead of newest first. */
  readonly parent?: string | undefined
}

/** A page of chords, newest first, with the number of chords in each state. */
export interface ChordPage {
  /** Chords in each state (all of them, not only this page). */
  readonly counts: Readonly<Record<ChordState, number>>
  /** Chords matching the state filter. */
  readonly total: number
  readonly items: ReadonlyArray<ChordInfo>
}

/** A chord in flight, as its producer (or anyone who looked it up) sees it. */
export interface ChordHandle {
  readonly chordId: ChordId
  /** False when an existing chord was returned for the same idempotency key. */
  readonly created: boolean
  /** Waits for the chord to end: the callback's task id, or `ChordFailed`. */
  readonly await: Effect.Effect<TaskId, ChordFailed>
  /** Named callbacks run in this process when the chord ends (latched: late ones see the outcome). */
  readonly continuations: Continuations.Continuations<TaskId, ChordFailed>
}

/** The chord registry. */
export class ChordRegistry extends Context.Tag("baton/ChordRegistry")<
  ChordRegistry,
  {
    /** Writes the chord and its body tasks in one transaction (joins the caller's); same key → the existing chord. */
    readonly chord: <
      Body extends ReadonlyArray<BodyEntry>,
      CB extends Task.Any,
      EB extends Task.Any = never,
      P extends FailurePolicy = "fail"
    >(
      spec: ChordSpec<Body, CB, EB, P> & CheckSpec<Body, CB, EB, P>
    ) => Effect.Effect<ChordHandle, InvalidPayload | InvalidInput | SqlError>
    /** Reads a chord: state, counters, callback task id, failure, timings. */
    readonly get: (chordId: string) => Effect.Effect<ChordInfo, ChordNotFound | SqlError>
    /** A handle on an existing chord (from any process). */
    readonly handle: (chordId: string) => Effect.Effect<ChordHandle, ChordNotFound | SqlError>
    /** Waits for a chord to end (from any process): the callback's task id, or `ChordFailed`. */
    readonly await: (chordId: string) => Effect.Effect<TaskId, ChordFailed | ChordNotFound | SqlError>
    /** A page of chords, newest first (optionally in one state), with counts by state. */
    readonly list: (options?: ListOptions) => Effect.Effect<ChordPage, SqlError>
    /** Cancels a running chord (body tasks cancelled, no callback, no onError); true if this call cancelled it. */
    readonly cancel: (chordId: string) => Effect.Effect<boolean, SqlError>
    /** One reconciler pass: dispatches chords left undispatched, sweeps failed chords; returns how many it healed. */
    readonly reconcile: Effect.Effect<number, SqlError>
  }
>() {}

/** Time from the last body completion being recorded to the callback (or onError) being enqueued, in ms. */
export const dispatchLatency = Metric.histogram(
  "baton_chord_dispatch_latency_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 18 }),
  "Time from the last body completion of a chord to its callback being enqueued (ms)"
)

/**
 * Time from a chord's creation to its callback (or onError) being enqueued, in ms: the fan-in as a whole, beside
 * `dispatchLatency` (last body completion → dispatch).
 */
export const timeToCallback = Metric.histogram(
  "baton_chord_time_to_callback_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 24 }),
  "Time from a chord's creation to its callback (or onError) being enqueued (ms)"
)

/** Chords failed at their deadline. */
export const chordsExpired = Metric.counter("baton_chord_deadline_total", {
  description: "Chords failed because their body was not done by their deadline"
})

/**
 * Waits for every chord: the callbacks' task ids in the handles' order, or the first `ChordFailed` (the other waits are
 * interrupted; the chords themselves go on). With `{ mode: "exit" }`, every chord's outcome as an `Exit`, in order.
 */
export const awaitAll: {
  (handles: Iterable<ChordHandle>): Effect.Effect<ReadonlyArray<TaskId>, ChordFailed>
  (
    handles: Iterable<ChordHandle>,
    options: { readonly mode: "exit" }
  ): Effect.Effect<ReadonlyArray<Exit.Exit<TaskId, ChordFailed>>>
} = ((handles: Iterable<ChordHandle>, options?: { readonly mode: "exit" }) =>
  options?.mode === "exit"
    ? Effect.forEach(handles, (handle) => Effect.exit(handle.await), { concurrency: "unbounded" })
    : Effect.forEach(handles, (handle) => handle.await, { concurrency: "unbounded" })) as never

/** Chords that failed (a body task failed for good under the `fail` policy). */
export const chordsFailed = Metric.counter("baton_chord_failed_total", {
  description: "Chords failed by a body task that failed for good"
})

/** Chords that completed (callback enqueued). */
export const chordsCompleted = Metric.counter("baton_chord_completed_total", {
  description: "Chords whose callback was enqueued"
})

/** Chords dispatched by the reconciler instead of the last body completion: non-zero means something was missed. */
export const chordsHealed = Metric.counter("baton_chord_healed_total", {
  description: "Chords dispatched (or failed) by the reconciler rather than by their last body completion"
})
