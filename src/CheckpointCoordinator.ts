/**
 * CheckpointCoordinator: explicit checkpoints for sequential workflows.
 *
 * A run processes its batches in order. For batch `i` it creates the checkpoint `(runId, i)`, does the work, then
 * completes (or fails) the checkpoint and awaits it, and records progress only once the await succeeded. So progress
 * is never recorded for a batch whose checkpoint failed or was never confirmed.
 *
 * Contract (every implementation):
 * - `createCheckpoint(runId, batchIndex)` is idempotent: the same `(runId, batchIndex)` yields the same token.
 * - A checkpoint moves once, `pending → completed | failed`. Repeating the same outcome (same result, or same error)
 *   is a no-op; a different outcome fails with `CheckpointConflict` and changes nothing.
 * - `awaitCheckpoint` returns the result of a completed checkpoint, fails with `CheckpointFailed` for a failed one
 *   (every time: a failed checkpoint blocks whatever waits on it) and with `CheckpointTimeout` when the optional
 *   timeout passes first. It waits without polling when the completion happens in the same process.
 * - `getPendingCheckpoints(runId)` lists the tokens still `pending` (neither completed nor failed), in batch order.
 * - Results and errors are JSON-serialisable values (`undefined` is stored as `null`; an `Error` keeps its `name`
 *   and `message`). `typed(schema)` encodes and decodes them with a `Schema`.
 *
 * Implementations:
 * - `layerMemory` (this module): a `Deferred` per token in a map, private to the process. A completed checkpoint
 *   leaves memory once its result has been awaited: it is kept a little longer among the `retainCompleted` (default
 *   1,000) most recently awaited ones, so late or repeated awaits, finds and idempotent repeats still work, and is
 *   then forgotten (a million create → complete → await in a row leave the heap flat). A forgotten checkpoint is
 *   unknown: `findCheckpoint` returns `None`, `awaitCheckpoint` / `completeCheckpoint` fail with
 *   `CheckpointNotFound`, and creating `(runId, batchIndex)` again makes a new token. Pending, failed, and completed
 *   but never awaited checkpoints stay (a failed one keeps blocking its waiters).
 * - `SqlCheckpointCoordinator`: each token is also a row, so another process can await it, a restarted run sees
 *   where it stopped, and `completeCheckpoint` joins the caller's `sql.withTransaction`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type { ParseError } from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { canonicalJson } from "./internal/checkpointJson.js"
import * as Validate from "./internal/validate.js"

/** A checkpoint's id. */
export const CheckpointId = Schema.String.pipe(Schema.brand("baton/CheckpointId"))
/** A checkpoint's id. */
export type CheckpointId = typeof CheckpointId.Type

/**
 * A checkpoint token: a small value naming one checkpoint. Encode it with `Schema.encode(CheckpointToken)` to pass it
 * to another process; tokens are compared by value (`Equal`).
 */
export class CheckpointToken extends Schema.Class<CheckpointToken>("baton/CheckpointToken")({
  id: CheckpointId,
  runId: Schema.String,
  batchIndex: Schema.Int.pipe(Schema.nonNegative())
}) {}

/** The checkpoint failed (`failCheckpoint`); `error` is the recorded error. Progress must not be recorded. */
export class CheckpointFailed extends Schema.TaggedError<CheckpointFailed>()("CheckpointFailed", {
  token: CheckpointToken,
  error: Schema.Unknown
}) {
  override get message(): string {
    return `checkpoint ${this.token.batchIndex} of run ${this.token.runId} failed`
  }
}

/** The checkpoint was still pending when the await's timeout passed; awaiting again may still succeed. */
export class CheckpointTimeout extends Schema.TaggedError<CheckpointTimeout>()("CheckpointTimeout", {
  token: CheckpointToken,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `checkpoint ${this.token.batchIndex} of run ${this.token.runId} still pending after ${this.timeoutMillis} ms`
  }
}

/** A second, different outcome for a checkpoint that already has one; the first outcome stands. */
export class CheckpointConflict extends Schema.TaggedError<CheckpointConflict>()("CheckpointConflict", {
  token: CheckpointToken,
  /** The outcome the checkpoint already has. */
  existing: Schema.Literal("completed", "failed"),
  /** The outcome that was refused. */
  attempted: Schema.Literal("completed", "failed")
}) {
  override get message(): string {
    return (
      `checkpoint ${this.token.batchIndex} of run ${this.token.runId} is already ${this.existing}` +
      (this.existing === this.attempted ? " with a different outcome" : "")
    )
  }
}

/** No such checkpoint: never created here, created in a rolled-back transaction, or (memory) already consumed. */
export class CheckpointNotFound extends Schema.TaggedError<CheckpointNotFound>()("CheckpointNotFound", {
  token: CheckpointToken
}) {
  override get message(): string {
    return `checkpoint ${this.token.batchIndex} of run ${this.token.runId} (${this.token.id}) not found`
  }
}

/** Every checkpoint error. */
export const CheckpointError = Schema.Union(CheckpointFailed, CheckpointTimeout, CheckpointConflict, CheckpointNotFound)
/** Every checkpoint error. */
export type CheckpointError = typeof CheckpointError.Type

/** Where a checkpoint stands, without waiting. */
export type CheckpointStatus = Data.TaggedEnum<{
  Pending: {}
  Completed: { readonly result: unknown }
  Failed: { readonly error: unknown }
}>
/** Constructors and matchers of `CheckpointStatus`. */
export const CheckpointStatus = Data.taggedEnum<CheckpointStatus>()

/** Options of `awaitCheckpoint`. */
export interface AwaitOptions {
  /** Fail with `CheckpointTimeout` if the checkpoint is still pending after this long (default: wait forever). */
  readonly timeout?: Duration.DurationInput | undefined
}

/** The checkpoint service. */
export class CheckpointCoordinator extends Context.Tag("baton/CheckpointCoordinator")<
  CheckpointCoordinator,
  {
    /** Creates the pending checkpoint of batch `batchIndex` of run `runId`, or returns the existing one's token. */
    readonly createCheckpoint: (runId: string, batchIndex: number) => Effect.Effect<CheckpointToken, SqlError>
    /** Completes the checkpoint with a JSON-serialisable result; joins the caller's SQL transaction if any. */
    readonly completeCheckpoint: (
      token: CheckpointToken,
      result: unknown
    ) => Effect.Effect<void, CheckpointConflict | CheckpointNotFound | SqlError>
    /** Fails the checkpoint with a JSON-serialisable error; joins the caller's SQL transaction if any. */
    readonly failCheckpoint: (
      token: CheckpointToken,
      error: unknown
    ) => Effect.Effect<void, CheckpointConflict | CheckpointNotFound | SqlError>
    /** Waits for the checkpoint's outcome: its result, `CheckpointFailed`, or `CheckpointTimeout`. */
    readonly awaitCheckpoint: (
      token: CheckpointToken,
      options?: AwaitOptions
    ) => Effect.Effect<unknown, CheckpointFailed | CheckpointTimeout | CheckpointNotFound | SqlError>
    /** The token of `(runId, batchIndex)`, if that checkpoint exists. */
    readonly findCheckpoint: (
      runId: string,
      batchIndex: number
    ) => Effect.Effect<Option.Option<CheckpointToken>, SqlError>
    /** The run's checkpoints that are neither completed nor failed, in batch order. */
    readonly getPendingCheckpoints: (runId: string) => Effect.Effect<ReadonlyArray<CheckpointToken>, SqlError>
    /** Where the checkpoint stands now (never waits). */
    readonly pollCheckpoint: (token: CheckpointToken) => Effect.Effect<CheckpointStatus, CheckpointNotFound | SqlError>
  }
>() {}

/** The largest batch index (the column is a 32-bit integer). */
export const maxBatchIndex = 2_147_483_647

const isBatchIndex = (batchIndex: number): boolean =>
  Number.isSafeInteger(batchIndex) && batchIndex >= 0 && batchIndex <= maxBatchIndex

/**
 * Checks a batch index (an integer from 0 to `maxBatchIndex`) and a run id (1 to 255 characters, no NUL, no lone
 * surrogate); anything else is a programming error, hence a defect (a `RangeError` naming the argument).
 */
export const validateBatchIndex = (batchIndex: number, runId?: string): Effect.Effect<void> => {
  if (!isBatchIndex(batchIndex)) {
    return Effect.die(
      new RangeError(`batchIndex must be a non-negative integer (at most ${maxBatchIndex}), got ${batchIndex}`)
    )
  }
  const problem = runId === undefined ? undefined : Validate.name("runId", runId)
  return problem === undefined ? Effect.void : Effect.die(new RangeError(problem))
}

/** Milliseconds of an await timeout, if any. */
export const timeoutMillis = (options: AwaitOptions | undefined): number | undefined =>
  options?.timeout === undefined ? undefined : Duration.toMillis(Duration.decode(options.timeout))

// ---------------------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------------------

type Outcome =
  { readonly _tag: "Completed"; readonly result: unknown } | { readonly _tag: "Failed"; readonly error: unknown }

interface MemoryEntry {
  readonly token: CheckpointToken
  /** Made by the first await that has to wait (a checkpoint completed before it is awaited never needs one). */
  deferred: Deferred.Deferred<unknown, CheckpointFailed> | undefined
  outcome: Outcome | undefined
}

const sameValue = (a: unknown, b: unknown): boolean => {
  if (Object.is(a, b)) return true
  try {
    return canonicalJson(a) === canonicalJson(b)
  } catch {
    return false
  }
}

/** Options of the in-memory coordinator. */
export interface MemoryOptions {
  /** How many awaited, completed checkpoints to keep before forgetting the oldest (default 1,000). */
  readonly retainCompleted?: number | undefined
}

/**
 * Builds the in-memory coordinator. Each step that reads and changes the maps runs in one synchronous block, so
 * "is there an outcome? if not, set it" cannot interleave with another fiber's.
 *
 * Tracing: only an await that actually waits gets a span (`CheckpointCoordinator.awaitCheckpoint`). The other
 * operations are a few map updates; a span costs many times more (measured: ~20-40x an `Effect.sync`), and would
 * dominate the memory layer's cost. The SQL layer traces every operation.
 */
export const makeMemory = (options: MemoryOptions = {}): Effect.Effect<CheckpointCoordinator["Type"]> =>
  Effect.sync(() => makeMemoryUnsafe(options))

const makeMemoryUnsafe = (options: MemoryOptions): CheckpointCoordinator["Type"] => {
  const retain = Math.max(0, options.retainCompleted ?? 1_000)
  const byId = new Map<string, MemoryEntry>()
  const byRun = new Map<string, Map<number, MemoryEntry>>()
  // Completed checkpoints whose result was awaited, oldest first: forgotten beyond `retain`.
  const awaited = new Set<MemoryEntry>()

  const forget = (entry: MemoryEntry): void => {
    if (byId.get(entry.token.id) !== entry) return
    byId.delete(entry.token.id)
    const run = byRun.get(entry.token.runId)
    if (run === undefined) return
    run.delete(entry.token.batchIndex)
    if (run.size === 0) byRun.delete(entry.token.runId)
  }

  const release = (entry: MemoryEntry): void => {
    if (awaited.has(entry)) return
    awaited.add(entry)
    while (awaited.size > retain) {
      const oldest = awaited.values().next().value as MemoryEntry
      awaited.delete(oldest)
      forget(oldest)
    }
  }

  const createCheckpoint = (runId: string, batchIndex: number) =>
    Effect.suspend(() => {
      if (!isBatchIndex(batchIndex) || Validate.name("runId", runId) !== undefined) {
        return validateBatchIndex(batchIndex, runId).pipe(Effect.as(undefined as never))
      }
      return Effect.sync(() => {
        let run = byRun.get(runId)
        const existing = run?.get(batchIndex)
        if (existing !== undefined) return existing.token
        const token = new CheckpointToken(
          { id: CheckpointId.make(crypto.randomUUID()), runId, batchIndex },
          { disableValidation: true }
        )
        const entry: MemoryEntry = {
          token,
          deferred: undefined,
          outcome: undefined
        }
        if (run === undefined) {
          run = new Map()
          byRun.set(runId, run)
        }
        run.set(batchIndex, entry)
        byId.set(token.id, entry)
        return token
      })
    })

  const settle = (token: CheckpointToken, outcome: Outcome) =>
    Effect.suspend((): Effect.Effect<void, CheckpointConflict | CheckpointNotFound> => {
      const entry = byId.get(token.id)
      if (entry === undefined) return Effect.fail(new CheckpointNotFound({ token }))
      const existing = entry.outcome
      if (existing === undefined) {
        entry.outcome = outcome
        if (entry.deferred !== undefined) {
          Deferred.unsafeDone(
            entry.deferred,
            outcome._tag === "Completed"
              ? Exit.succeed(outcome.result)
              : Exit.fail(new CheckpointFailed({ token: entry.token, error: outcome.error }))
          )
        }
        return Effect.void
      }
      const same =
        existing._tag === outcome._tag &&
        (existing._tag === "Completed"
          ? sameValue(existing.result, (outcome as typeof existing).result)
          : sameValue(existing.error, (outcome as Extract<Outcome, { _tag: "Failed" }>).error))
      if (same) return Effect.void
      return Effect.fail(
        new CheckpointConflict({
          token: entry.token,
          existing: existing._tag === "Completed" ? "completed" : "failed",
          attempted: outcome._tag === "Completed" ? "completed" : "failed"
        })
      )
    })

  const completeCheckpoint = (token: CheckpointToken, result: unknown) => settle(token, { _tag: "Completed", result })

  const failCheckpoint = (token: CheckpointToken, error: unknown) => settle(token, { _tag: "Failed", error })

  const awaitCheckpoint = (token: CheckpointToken, options?: AwaitOptions) =>
    Effect.suspend((): Effect.Effect<unknown, CheckpointFailed | CheckpointTimeout | CheckpointNotFound> => {
      const entry = byId.get(token.id)
      if (entry === undefined) return Effect.fail(new CheckpointNotFound({ token }))
      // Fast paths: already decided, no fiber suspension.
      const outcome = entry.outcome
      if (outcome?._tag === "Completed") {
        release(entry)
        return Effect.succeed(outcome.result)
      }
      if (outcome?._tag === "Failed")
        return Effect.fail(new CheckpointFailed({ token: entry.token, error: outcome.error }))
      // Pending: the outcome is not set, so `settle` has not run yet and will resolve this Deferred.
      entry.deferred ??= Deferred.unsafeMake<unknown, CheckpointFailed>(FiberId.none)
      const millis = timeoutMillis(options)
      const wait = Deferred.await(entry.deferred)
      const bounded =
        millis === undefined
          ? wait
          : Effect.timeoutFail(wait, {
              duration: millis,
              onTimeout: () => new CheckpointTimeout({ token: entry.token, timeoutMillis: millis })
            })
      return Effect.tap(bounded, () => Effect.sync(() => release(entry))).pipe(
        Effect.withSpan("CheckpointCoordinator.awaitCheckpoint", {
          captureStackTrace: false,
          attributes: { runId: token.runId, batchIndex: token.batchIndex }
        })
      )
    })

  const findCheckpoint = (runId: string, batchIndex: number) =>
    Effect.sync(() => Option.fromNullable(byRun.get(runId)?.get(batchIndex)?.token))

  const getPendingCheckpoints = (runId: string) =>
    Effect.sync(() => {
      const run = byRun.get(runId)
      if (run === undefined) return []
      const pending: Array<CheckpointToken> = []
      for (const entry of run.values()) if (entry.outcome === undefined) pending.push(entry.token)
      return pending.sort((a, b) => a.batchIndex - b.batchIndex)
    })

  const pollCheckpoint = (token: CheckpointToken) =>
    Effect.suspend((): Effect.Effect<CheckpointStatus, CheckpointNotFound> => {
      const entry = byId.get(token.id)
      if (entry === undefined) return Effect.fail(new CheckpointNotFound({ token }))
      const outcome = entry.outcome
      if (outcome === undefined) return Effect.succeed(CheckpointStatus.Pending())
      return Effect.succeed(
        outcome._tag === "Completed"
          ? CheckpointStatus.Completed({ result: outcome.result })
          : CheckpointStatus.Failed({ error: outcome.error })
      )
    })

  return CheckpointCoordinator.of({
    createCheckpoint,
    completeCheckpoint,
    failCheckpoint,
    awaitCheckpoint,
    findCheckpoint,
    getPendingCheckpoints,
    pollCheckpoint
  })
}

/** The in-memory coordinator (a fresh, empty one per layer build). */
export const layerMemory: Layer.Layer<CheckpointCoordinator> = Layer.effect(CheckpointCoordinator, makeMemory())

/** The in-memory coordinator with options. */
export const layerMemoryWith = (options: MemoryOptions): Layer.Layer<CheckpointCoordinator> =>
  Layer.effect(CheckpointCoordinator, makeMemory(options))

// ---------------------------------------------------------------------------------------------------------------
// Typed outcomes
// ---------------------------------------------------------------------------------------------------------------

/** Checkpoint operations whose results (and optionally errors) are encoded and decoded with Schemas. */
export interface Typed<A, E> {
  /** Encodes `result` and completes the checkpoint with it. */
  readonly complete: (
    token: CheckpointToken,
    result: A
  ) => Effect.Effect<void, ParseError | CheckpointConflict | CheckpointNotFound | SqlError, CheckpointCoordinator>
  /** Encodes `error` and fails the checkpoint with it. */
  readonly fail: (
    token: CheckpointToken,
    error: E
  ) => Effect.Effect<void, ParseError | CheckpointConflict | CheckpointNotFound | SqlError, CheckpointCoordinator>
  /** Awaits the checkpoint and decodes its result (`CheckpointFailed.error` stays in its encoded form). */
  readonly await: (
    token: CheckpointToken,
    options?: AwaitOptions
  ) => Effect.Effect<
    A,
    ParseError | CheckpointFailed | CheckpointTimeout | CheckpointNotFound | SqlError,
    CheckpointCoordinator
  >
}

/** Typed checkpoint operations for a result Schema (and an error Schema, default `Schema.Unknown`). */
export const typed = <A, I, E = unknown, EI = unknown>(
  result: Schema.Schema<A, I>,
  error?: Schema.Schema<E, EI>
): Typed<A, E> => {
  const encodeResult = Schema.encode(result)
  const decodeResult = Schema.decodeUnknown(result)
  const encodeError = Schema.encode((error ?? Schema.Unknown) as Schema.Schema<E, EI>)
  return {
    complete: (token, value) =>
      Effect.flatMap(encodeResult(value), (encoded) =>
        Effect.flatMap(CheckpointCoordinator, (coordinator) => coordinator.completeCheckpoint(token, encoded))
      ),
    fail: (token, value) =>
      Effect.flatMap(encodeError(value), (encoded) =>
        Effect.flatMap(CheckpointCoordinator, (coordinator) => coordinator.failCheckpoint(token, encoded))
      ),
    await: (token, options) =>
      Effect.flatMap(CheckpointCoordinator, (coordinator) => coordinator.awaitCheckpoint(token, options)).pipe(
        Effect.flatMap(decodeResult)
      )
  }
}
