/**
 * BatchWorkflow: write your own resumable batch workflow. Give it a kind, the item Schema, a body task (one per item),
 * a merge callback (one per batch) and a save step; it runs Baton's reference sequence for you.
 *
 * For each batch `i` of a run, in order:
 * 1. `createCheckpoint(scope, i)` (the scope is the run id, or `<runId>#g` after `g` failed attempts; see RunService);
 * 2. fan the batch out as a chord: one body task per item, and the merge callback, which receives the body results in
 *    item order (its payload is `{ runId, batchIndex, results }`, see `mergePayload`);
 * 3. the user's `save` step and `completeCheckpoint` in ONE transaction (`save` gets that transaction's `SqlClient`);
 *    any failure (a body task that fails for good, the merge, the save) fails the checkpoint and the run instead;
 * 4. `awaitCheckpoint`;
 * 5. only then `updateProgress(runId, i + 1, total)`, and a progress event.
 *
 * Guarantees (the same as the reference workflow's, which is one use of this module):
 * - Progress is never recorded for a batch whose checkpoint is not completed, and a failed batch fails the run.
 * - The run's input is stored with the run (in the run's metadata, or the definition's own `input` store), so
 *   `resume(runId)` needs nothing but the id, in any process. It continues after the last confirmed batch: a batch
 *   confirmed but not yet recorded as progress is recorded without redoing it; a batch in flight is picked up where it
 *   is (the same checkpoint token, the same chord by its idempotency key `<kind>:<scope>:<batch>`); a failed batch is
 *   redone under a new checkpoint scope. So a crash costs at most the batch in flight, and a resumed run ends with
 *   the results an uninterrupted run would have — provided `save` is idempotent (write with `ON CONFLICT DO NOTHING`
 *   or an upsert keyed by run and batch): a batch can be saved twice when a driver dies between the save's commit and
 *   the progress update, or when two drivers work on one run.
 * - Database errors are ridden out: every step is idempotent or guarded, so the driver redoes it (up to a minute).
 * - Nothing here executes tasks: workers running the body and merge implementations (in this process or others) do,
 *   and any process holding a `ChordRegistry` dispatches the merge callbacks.
 *
 * @since 0.2.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { CheckpointCoordinator, type CheckpointToken } from "./CheckpointCoordinator.js"
import * as ChordRegistry from "./ChordRegistry.js"
import { CompletionBackend } from "./CompletionBackend.js"
import * as Validate from "./internal/validate.js"
import { ReadModel } from "./ReadModel.js"
import { type Run, type RunId, type RunNotFound, RunService, type RunStateConflict } from "./RunService.js"
import * as Task from "./Task.js"
import { InvalidInput, type TaskInfo, TaskQueue, terminalStates } from "./TaskQueue.js"

/**
 * The payload Schema of a merge callback: `{ runId, batchIndex, results }`, `results` being the body tasks' results in
 * item order. Pass the body contract's `success` Schema.
 *
 * @category schemas
 */
export const mergePayload = <A, I, R>(result: Schema.Schema<A, I, R>) =>
  ChordRegistry.callbackPayload(result, { runId: Schema.String, batchIndex: Schema.Number })

/**
 * One confirmed-to-be batch, as the `save` step sees it.
 *
 * @category models
 */
export interface Batch<Item, Result, Merged> {
  readonly run: Run
  readonly batchIndex: number
  /** The index (in the run's input) of the batch's first item. */
  readonly firstIndex: number
  readonly items: ReadonlyArray<Item>
  /** The body results, in item order. */
  readonly results: ReadonlyArray<Result>
  /** The merge callback's result. */
  readonly merged: Merged
  /** The client of the transaction that also completes the batch's checkpoint. */
  readonly sql: SqlClient.SqlClient
}

/**
 * Where a run's input items live. The default keeps them in the run's metadata (fine for a few thousand small items);
 * give a store of your own (a table) for larger inputs. `save` runs in the transaction that creates the run.
 *
 * @category models
 */
export interface InputStore<Item> {
  readonly save: (runId: string, items: ReadonlyArray<Item>) => Effect.Effect<void, SqlError>
  /** Items `from` (inclusive) to `to` (exclusive), in order. */
  readonly load: (runId: string, from: number, to: number) => Effect.Effect<ReadonlyArray<Item>, SqlError>
}

/**
 * How the run's metadata is laid out: the builder needs the batch size and the number of items back on resume. The
 * default is `{ batchSize, totalItems, ...extra }` (plus `input` with the default input store).
 *
 * @category models
 */
export interface MetadataLayout {
  readonly encode: (shape: Shape, extra: Record<string, unknown>) => Record<string, unknown>
  readonly decode: (metadata: unknown) => Option.Option<Shape>
}

/**
 * A run's batch size and number of items.
 *
 * @category models
 */
export interface Shape {
  readonly batchSize: number
  readonly totalItems: number
}

/**
 * A batch workflow's definition.
 *
 * @category models
 */
export interface Definition<Item, ItemI, Body extends Task.Any, Merge extends Task.Any, E, R> {
  /** The run kind (`Run.kind`), also the prefix of the chords' idempotency keys. */
  readonly kind: string
  /** The input item Schema (items are stored encoded with it by the default input store). */
  readonly item: Schema.Schema<Item, ItemI>
  /** The body task call of one item (its contract, payload and options; its idempotency key is ignored). */
  readonly body: (item: Item, index: number) => Task.TaskCall<Body>
  /** The merge callback's contract; its payload must be `mergePayload(body.success)` (or an extension of it). */
  readonly merge: Merge
  /**
   * Saves a batch; runs in the transaction that completes the batch's checkpoint. Must be idempotent (see the module
   * doc). A failure fails the batch and the run.
   */
  readonly save: (batch: Batch<Item, Task.Success<Body>, Task.Success<Merge>>) => Effect.Effect<unknown, E, R>
  /** The result recorded on the batch's checkpoint (default `{ items }`). */
  readonly checkpointResult?: ((batch: Batch<Item, Task.Success<Body>, Task.Success<Merge>>) => unknown) | undefined
  /** Items per batch when the run does not say (default 20). */
  readonly batchSize?: number | undefined
  /** Where the input lives (default: the run's metadata). */
  readonly input?: InputStore<Item> | undefined
  /** The metadata layout (default `{ batchSize, totalItems, ...extra }`). */
  readonly metadata?: MetadataLayout | undefined
}

/**
 * What `start` and `run` take.
 *
 * @category models
 */
export interface RunInput<Item> {
  readonly items: Iterable<Item>
  /** Items per batch (default: the definition's, else 20). */
  readonly batchSize?: number | undefined
  /** Choose the run id (default random). Running an existing id continues that run, like `resume`. */
  readonly runId?: string | undefined
  /** Extra JSON fields of the run's metadata. */
  readonly metadata?: Record<string, unknown> | undefined
}

/**
 * Where a run stands.
 *
 * @category models
 */
export interface Status {
  readonly run: Run
  readonly batchSize: number
  readonly totalItems: number
  /** Items in confirmed batches. */
  readonly itemsDone: number
}

/**
 * Emitted by the driver of this process when a batch is confirmed and when a run ends.
 *
 * @category models
 */
export type ProgressEvent =
  | {
      readonly _tag: "BatchConfirmed"
      readonly runId: RunId
      readonly batchIndex: number
      readonly completedBatches: number
      readonly totalBatches: number
    }
  | { readonly _tag: "RunEnded"; readonly runId: RunId; readonly state: Run["state"] }

/**
 * The run failed at a batch (a body task that failed for good, the merge, or the save); progress stays before it.
 *
 * @category errors
 */
export class BatchFailed extends Schema.TaggedError<BatchFailed>()("BatchFailed", {
  runId: Schema.String,
  batchIndex: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `run ${this.runId} failed at batch ${this.batchIndex}: ${this.reason}`
  }
}

/**
 * The run is of another kind (or its metadata is unreadable).
 *
 * @category errors
 */
export class WrongKind extends Schema.TaggedError<WrongKind>()("WrongKind", {
  runId: Schema.String,
  kind: Schema.String,
  expected: Schema.String
}) {
  override get message(): string {
    return `run ${this.runId} is a "${this.kind}" run, not a "${this.expected}" run`
  }
}

/**
 * The run was cancelled while it was being driven.
 *
 * @category errors
 */
export class RunCancelled extends Schema.TaggedError<RunCancelled>()("RunCancelled", {
  runId: Schema.String
}) {
  override get message(): string {
    return `run ${this.runId} was cancelled`
  }
}

/**
 * Errors of running or resuming.
 *
 * @category errors
 */
export type WorkflowError<E = never> =
  BatchFailed | WrongKind | RunCancelled | RunNotFound | RunStateConflict | InvalidInput | SqlError | E

/**
 * A batch workflow's driver: built by `make` from a definition.
 *
 * @category models
 */
export interface BatchWorkflow<Item> {
  readonly kind: string
  /** Records a new run and its input (one transaction) without processing it; an existing id is returned as is. */
  readonly start: (input: RunInput<Item>) => Effect.Effect<Run, InvalidInput | SqlError>
  /** Records the run and processes it batch by batch until it succeeds, fails or is cancelled; the finished run. */
  readonly run: (input: RunInput<Item>) => Effect.Effect<Run, WorkflowError>
  /** Continues a run after its last confirmed batch (a succeeded run is returned at once). */
  readonly resume: (runId: string) => Effect.Effect<Run, WorkflowError>
  /** Cancels a run (from any process): the run becomes cancelled and its chords in flight are cancelled. */
  readonly cancel: (runId: string) => Effect.Effect<Run, WrongKind | RunNotFound | RunStateConflict | SqlError>
  /** Where a run stands. */
  readonly status: (runId: string) => Effect.Effect<Status, WrongKind | RunNotFound | SqlError>
  /** Progress events of the runs this process drives. */
  readonly events: Stream.Stream<ProgressEvent>
}

/**
 * Default items per batch.
 *
 * @category constants
 */
export const defaultBatchSize = 20
/**
 * Largest batch size (a batch is one chord).
 *
 * @category constants
 */
export const maxBatchSize = 100_000

const defaultLayout: MetadataLayout = {
  encode: (shape, extra) => ({ ...extra, batchSize: shape.batchSize, totalItems: shape.totalItems }),
  decode: (metadata) => {
    const m = metadata as { batchSize?: unknown; totalItems?: unknown } | null
    return typeof m === "object" &&
      m !== null &&
      Number.isInteger(m.batchSize) &&
      (m.batchSize as number) > 0 &&
      Number.isInteger(m.totalItems) &&
      (m.totalItems as number) >= 0
      ? Option.some({ batchSize: m.batchSize as number, totalItems: m.totalItems as number })
      : Option.none()
  }
}

/**
 * Items done and total of any run recorded with the default metadata layout (for listings of runs of any kind):
 * items in confirmed batches.
 *
 * @category utils
 */
export const itemsOf = (run: Run): Option.Option<{ readonly done: number; readonly total: number }> =>
  Option.map(defaultLayout.decode(run.metadata), (shape) => ({
    done: Math.min(run.completedBatches * shape.batchSize, shape.totalItems),
    total: shape.totalItems
  }))

const isSqlError = (error: unknown): error is SqlError =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "SqlError"

// A database error (a connection killed, the server restarting) is not a reason to fail a run: every step of a batch
// is idempotent or guarded (same checkpoint token, same chord by key, idempotent saves, forward-only progress), so the
// driver redoes the step, for up to a minute, before it gives up with the SqlError.
const transientRetry = Schedule.exponential(Duration.millis(100), 2).pipe(
  Schedule.union(Schedule.spaced(Duration.seconds(2))),
  Schedule.upTo(Duration.minutes(1))
)
const ridingOut = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(effect, { schedule: transientRetry, while: isSqlError })

const messageOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error
    ? String((error as { message: unknown }).message)
    : String(error)

/**
 * The chord idempotency key of batch `batchIndex` under checkpoint scope `scope` of a `kind` run.
 *
 * @category utils
 */
export const chordKey = (kind: string, scope: string, batchIndex: number): string => `${kind}:${scope}:${batchIndex}`

/**
 * Cancels a run of any kind built on this module (what `baton cancel` does): the run becomes cancelled, and its
 * chords in flight (found by their idempotency keys) are cancelled; returns the run and how many chords it cancelled.
 *
 * @category constructors
 */
export const cancelRun = (
  runId: string
): Effect.Effect<
  { readonly run: Run; readonly chordsCancelled: number },
  RunNotFound | RunStateConflict | SqlError,
  RunService | ChordRegistry.ChordRegistry | ReadModel
> =>
  Effect.gen(function* () {
    const runs = yield* RunService
    const chords = yield* ChordRegistry.ChordRegistry
    const readModel = yield* ReadModel
    const run = yield* runs.finish(runId, "cancelled")
    const prefix = `${run.kind}:${runId}`
    const running = yield* readModel.chordsByKeyPrefix(prefix, "running")
    let chordsCancelled = 0
    for (const chord of running) {
      // The key is <kind>:<scope>:<batch>; the scope is the run id or <runId>#<n>.
      const rest = chord.idempotencyKey.slice(prefix.length)
      if (!/^(#\d+)?:\d+$/.test(rest)) continue
      if (yield* chords.cancel(chord.chordId)) chordsCancelled++
    }
    return { run, chordsCancelled }
  }).pipe(Effect.withSpan("BatchWorkflow.cancel", { attributes: { runId } }))

/**
 * Builds a batch workflow's driver from a definition, on Baton's services. Workers elsewhere run the body and merge
 * implementations; the `save` step's requirements `R` (other than `SqlClient`) are taken from where this is built.
 *
 * @category constructors
 */
export const make = <Item, ItemI, Body extends Task.Any, Merge extends Task.Any, E, R>(
  definition: Definition<Item, ItemI, Body, Merge, E, R>
): Effect.Effect<
  BatchWorkflow<Item>,
  never,
  | SqlClient.SqlClient
  | RunService
  | CheckpointCoordinator
  | ChordRegistry.ChordRegistry
  | TaskQueue
  | CompletionBackend
  | ReadModel
  | Exclude<R, SqlClient.SqlClient>
> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const runs = yield* RunService
    const checkpoints = yield* CheckpointCoordinator
    const chords = yield* ChordRegistry.ChordRegistry
    const queue = yield* TaskQueue
    const completions = yield* CompletionBackend
    // What `save` and `cancel` need, captured where the workflow is built (its methods require nothing).
    const context = yield* Effect.context<
      SqlClient.SqlClient | RunService | ChordRegistry.ChordRegistry | ReadModel | Exclude<R, SqlClient.SqlClient>
    >()
    const provided = <A, E2>(effect: Effect.Effect<A, E2, R>) =>
      Effect.provide(
        effect as Effect.Effect<A, E2, Exclude<R, SqlClient.SqlClient> | SqlClient.SqlClient>,
        context
      ) as Effect.Effect<A, E2>
    const events = yield* PubSub.unbounded<ProgressEvent>()
    const { kind } = definition
    const layout = definition.metadata ?? defaultLayout
    const encodeItems = Schema.encode(Schema.Array(definition.item))
    const decodeItems = Schema.decodeUnknown(Schema.Array(definition.item))
    const decodeMerge = Schema.decodeUnknown(definition.merge.payload as Schema.Schema<unknown, unknown>)
    const decodeMerged = Schema.decodeUnknown(definition.merge.success as Schema.Schema<unknown, unknown>)

    // The default input store: the items, encoded, in the run's metadata.
    const input: InputStore<Item> = definition.input ?? {
      save: () => Effect.void,
      load: (runId, from, to) =>
        runs.getRun(runId).pipe(
          Effect.catchTag("RunNotFound", Effect.die),
          Effect.flatMap((run) => decodeItems((run.metadata as { input?: unknown } | null)?.input ?? [])),
          Effect.map((items) => items.slice(from, to)),
          Effect.catchTag("ParseError", Effect.die)
        )
    }

    const shapeOf = (run: Run) =>
      run.kind !== kind
        ? Effect.fail(new WrongKind({ runId: run.id, kind: run.kind, expected: kind }))
        : Option.match(layout.decode(run.metadata), {
            onNone: () =>
              Effect.fail(new WrongKind({ runId: run.id, kind: `${run.kind} (bad metadata)`, expected: kind })),
            onSome: Effect.succeed
          })

    const start = Effect.fn("BatchWorkflow.start")(function* (runInput: RunInput<Item>) {
      const batchSize = runInput.batchSize ?? definition.batchSize ?? defaultBatchSize
      const problem =
        Validate.integer("batchSize", batchSize, 1, maxBatchSize) ??
        (runInput.runId === undefined ? undefined : Validate.name("runId", runInput.runId))
      if (problem !== undefined) {
        return yield* new InvalidInput({ field: problem.startsWith("runId") ? "runId" : "batchSize", message: problem })
      }
      const items = [...runInput.items]
      const extra: Record<string, unknown> = { ...runInput.metadata }
      if (definition.input === undefined) {
        extra.input = yield* encodeItems(items).pipe(
          Effect.mapError((error) => new InvalidInput({ field: "items", message: error.message }))
        )
      }
      const metadata = layout.encode({ batchSize, totalItems: items.length }, extra)
      // The id is chosen before the transaction, so that redoing it after a lost connection finds the run it made.
      const runId = runInput.runId ?? crypto.randomUUID()
      const transaction = sql.withTransaction(
        Effect.gen(function* () {
          // An existing run keeps the input it was started with.
          const existing = yield* runs.getRun(runId).pipe(
            Effect.map(Option.some),
            Effect.catchTag("RunNotFound", () => Effect.succeed(Option.none()))
          )
          if (Option.isSome(existing)) return existing.value
          const run = yield* runs.createRun({
            kind,
            totalBatches: Math.ceil(items.length / batchSize),
            id: runId,
            metadata
          })
          yield* input.save(run.id, items)
          return run
        })
      )
      return yield* ridingOut(transaction)
    })

    // Subscribe, then re-read, then wait: a completion between the read and the wait is not lost. The completion event
    // is the wake-up; a re-read of the row on a capped backoff runs alongside, because event delivery can lag.
    const awaitTerminal = (taskId: string, taskName: string) =>
      Effect.scoped(
        Effect.gen(function* () {
          const stream = yield* completions.subscribe({ filter: { taskName, kinds: ["task"] } })
          const first = yield* queue.get(taskId)
          if (terminalStates.includes(first.state)) return first
          const woken = stream.pipe(
            Stream.filter((event) => event.taskId === taskId),
            Stream.take(1),
            Stream.runDrain,
            Effect.zipRight(queue.get(taskId))
          )
          const polled = queue.get(taskId).pipe(
            Effect.repeat(
              Schedule.union(Schedule.exponential("10 millis", 1.5), Schedule.spaced("250 millis")).pipe(
                Schedule.whileInput((info: TaskInfo) => !terminalStates.includes(info.state)),
                Schedule.passthrough
              )
            )
          )
          return yield* Effect.raceFirst(woken, polled)
        })
      )

    const failRun = (run: Run, batchIndex: number, token: CheckpointToken | undefined, reason: string) =>
      Effect.gen(function* () {
        if (token !== undefined) {
          // A conflicting outcome (another driver completed it meanwhile) leaves the completed one standing.
          yield* checkpoints.failCheckpoint(token, { batchIndex, reason }).pipe(Effect.ignore)
        }
        const finished = yield* runs.finish(run.id, "failed", `batch ${batchIndex}: ${reason}`).pipe(Effect.option)
        yield* PubSub.publish(events, { _tag: "RunEnded", runId: run.id, state: "failed" })
        // Cancelled meanwhile: that is why the batch failed (its chord was cancelled).
        if (Option.isNone(finished)) {
          const current = yield* Effect.option(runs.getRun(run.id))
          if (Option.isSome(current) && current.value.state === "cancelled") {
            return yield* new RunCancelled({ runId: run.id })
          }
        }
        return yield* new BatchFailed({ runId: run.id, batchIndex, reason })
      })

    // The batch's items, results and merged value; or why the batch failed.
    const fanOut = (run: Run, batchIndex: number, shape: Shape) =>
      Effect.gen(function* () {
        const firstIndex = batchIndex * shape.batchSize
        const items = yield* input.load(run.id, firstIndex, Math.min(firstIndex + shape.batchSize, shape.totalItems))
        const body = items.map((item, i) => definition.body(item, firstIndex + i))
        const handle = yield* chords.chord({
          body,
          callback: ChordRegistry.callback(definition.merge as Task.Any, { runId: run.id, batchIndex } as never),
          idempotencyKey: chordKey(kind, run.checkpointScope, batchIndex),
          tags: [`run:${run.id}`]
        } as never)
        const callbackId = yield* Effect.either(handle.await)
        if (callbackId._tag === "Left") return { _tag: "Failed" as const, reason: callbackId.left.message }
        const merged: TaskInfo = yield* awaitTerminal(callbackId.right, definition.merge.name)
        if (merged.state !== "succeeded" || Option.isNone(merged.result)) {
          const error = Option.getOrUndefined(merged.error)
          return {
            _tag: "Failed" as const,
            reason: `merge task ${merged.id} ended ${merged.state}${error ? `: ${error.kind}: ${error.message}` : ""}`
          }
        }
        const payload = (yield* decodeMerge(merged.payload).pipe(Effect.orDie)) as { results: ReadonlyArray<unknown> }
        const value = yield* decodeMerged(merged.result.value).pipe(Effect.orDie)
        if (payload.results.length !== items.length) {
          return yield* Effect.dieMessage(
            `batch ${batchIndex}: ${payload.results.length} results for ${items.length} items`
          )
        }
        return {
          _tag: "Merged" as const,
          batch: {
            run,
            batchIndex,
            firstIndex,
            items,
            results: payload.results as ReadonlyArray<Task.Success<Body>>,
            merged: value as Task.Success<Merge>,
            sql
          }
        }
      })

    // Progress after a confirmed batch. A refusal because another driver of the same run already recorded it is
    // success; a cancelled run stops the driver; any other refusal fails the run.
    const recordProgress = (run: Run, batchIndex: number) =>
      runs.updateProgress(run.id, batchIndex + 1, run.totalBatches).pipe(
        Effect.catchTags({
          RunNotFound: Effect.die,
          ProgressRefused: (refused) =>
            Effect.flatMap(Effect.catchTag(runs.getRun(run.id), "RunNotFound", Effect.die), (current) =>
              current.state === "cancelled"
                ? Effect.fail(new RunCancelled({ runId: run.id }))
                : current.completedBatches > batchIndex && current.state !== "failed"
                  ? Effect.succeed(current)
                  : failRun(run, batchIndex, undefined, refused.message)
            )
        }),
        Effect.tap((updated) =>
          PubSub.publish(events, {
            _tag: "BatchConfirmed",
            runId: updated.id,
            batchIndex,
            completedBatches: updated.completedBatches,
            totalBatches: updated.totalBatches
          })
        )
      )

    const processBatch = (run: Run, batchIndex: number, shape: Shape) =>
      Effect.gen(function* () {
        // Confirmed under an earlier scope, or earlier in this one, but not yet recorded as progress (a driver died
        // between the two): record it, do not redo it.
        for (const scope of run.checkpointScopes) {
          const found = yield* checkpoints.findCheckpoint(scope, batchIndex)
          if (Option.isNone(found)) continue
          const status = yield* checkpoints
            .pollCheckpoint(found.value)
            .pipe(Effect.catchTag("CheckpointNotFound", Effect.die))
          if (status._tag === "Completed") return yield* recordProgress(run, batchIndex)
        }
        const token = yield* checkpoints.createCheckpoint(run.checkpointScope, batchIndex)
        const outcome = yield* fanOut(run, batchIndex, shape).pipe(
          Effect.catchAll((error) =>
            // A database error is redone (see `ridingOut`); anything else fails the batch.
            isSqlError(error)
              ? Effect.fail(error)
              : Effect.succeed({ _tag: "Failed" as const, reason: messageOf(error) })
          )
        )
        if (outcome._tag === "Failed") return yield* failRun(run, batchIndex, token, outcome.reason)
        const batch = outcome.batch
        const result = definition.checkpointResult?.(batch) ?? { items: batch.items.length }
        const saved = yield* sql
          .withTransaction(
            Effect.zipRight(provided(definition.save(batch)), checkpoints.completeCheckpoint(token, result))
          )
          .pipe(Effect.either)
        if (saved._tag === "Left") {
          // Committed or not, redoing the batch is safe: it finds the completed checkpoint, or saves again.
          if (isSqlError(saved.left)) return yield* saved.left
          return yield* failRun(run, batchIndex, token, `saving the batch: ${messageOf(saved.left)}`)
        }
        const confirmed = yield* Effect.either(checkpoints.awaitCheckpoint(token))
        if (confirmed._tag === "Left") {
          if (isSqlError(confirmed.left)) return yield* confirmed.left
          return yield* failRun(run, batchIndex, undefined, confirmed.left.message)
        }
        // Only now, with the checkpoint confirmed, does progress move.
        return yield* recordProgress(run, batchIndex)
      }).pipe(Effect.withSpan("BatchWorkflow.batch", { attributes: { kind, runId: run.id, batchIndex } }))

    const continueRun = (initial: Run) =>
      Effect.gen(function* () {
        const shape = yield* shapeOf(initial)
        let run = initial
        while (run.completedBatches < run.totalBatches) {
          run = yield* ridingOut(processBatch(run, run.completedBatches, shape))
        }
        const finished = yield* ridingOut(runs.finish(run.id, "succeeded"))
        yield* PubSub.publish(events, { _tag: "RunEnded", runId: finished.id, state: finished.state })
        return finished
      }).pipe(Effect.annotateLogs({ runId: initial.id, kind }))

    // A succeeded run is returned; a failed one is reopened (new checkpoint scope); a running one (fresh, or its driver
    // died) is continued, counting a new attempt when it is an explicit resume; a cancelled one stays cancelled.
    const proceed = (run: Run, countAttempt: boolean): Effect.Effect<Run, WorkflowError> =>
      run.state === "succeeded"
        ? Effect.succeed(run)
        : run.state === "cancelled"
          ? Effect.fail(new RunCancelled({ runId: run.id }))
          : run.state === "running" && !countAttempt
            ? continueRun(run)
            : Effect.flatMap(ridingOut(runs.reopen(run.id)), continueRun)

    const runWorkflow = (runInput: RunInput<Item>) =>
      Effect.flatMap(start(runInput), (started) => Effect.zipRight(shapeOf(started), proceed(started, false))).pipe(
        Effect.withSpan("BatchWorkflow.run", { attributes: { kind } })
      )

    const resume = (runId: string) =>
      ridingOut(runs.getRun(runId)).pipe(
        Effect.tap(shapeOf),
        Effect.flatMap((found) => proceed(found, true)),
        Effect.withSpan("BatchWorkflow.resume", { attributes: { kind, runId } })
      )

    const status = (runId: string) =>
      Effect.gen(function* () {
        const run = yield* runs.getRun(runId)
        const shape = yield* shapeOf(run)
        return {
          run,
          batchSize: shape.batchSize,
          totalItems: shape.totalItems,
          itemsDone: Math.min(run.completedBatches * shape.batchSize, shape.totalItems)
        }
      })

    const cancel = (runId: string) =>
      Effect.gen(function* () {
        yield* Effect.flatMap(runs.getRun(runId), shapeOf)
        const { run } = yield* cancelRun(runId)
        yield* PubSub.publish(events, { _tag: "RunEnded", runId: run.id, state: run.state })
        return run
      }).pipe(Effect.provide(context))

    return {
      kind,
      start,
      run: runWorkflow,
      resume,
      cancel,
      status,
      events: Stream.fromPubSub(events)
    } satisfies BatchWorkflow<Item>
  })
