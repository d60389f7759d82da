/**
 * TaskQueue: the durable broker contract.
 *
 * Guarantees (every implementation):
 * - `enqueue` joins the caller's `sql.withTransaction` when there is one (transactional outbox): the task exists
 *   if and only if that transaction commits. The same `idempotencyKey` in a namespace yields the same task.
 * - A task moves `pending → running → succeeded | failed | dead | cancelled` (or back to `pending` for a retry or a
 *   released / expired lease). Every move to a terminal state commits, in ONE transaction, the state change, the
 *   result or error, and a row of the completions log (plus a NOTIFY on Postgres).
 * - Execution is at-least-once: a lease can expire while a handler still runs. Completions are guarded by the
 *   lease token, so the second completion of a task that ran twice is refused and nothing counts twice.
 *
 * - `await(id)`, `awaitResult(task, id)` and `awaitAll(ids)` (module functions) wait for tasks from any process,
 *   driven by the completion stream (subscribe, then read, then wait: no lost wake-up, no polling); a task that ends
 *   failed, dead or cancelled is a typed `TaskFailed`.
 *
 * The implementation on `@effect/sql` (Postgres, SQLite file, SQLite memory) is in `SqlTaskQueue`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { CompletionBackend, type StreamError, type SubscribeError } from "./CompletionBackend.js"
import { InvalidInput, TaskId } from "./internal/ids.js"
import * as Validate from "./internal/validate.js"
import type * as Task from "./Task.js"

export {
  /** An option or argument is out of range or malformed; `field` names it. Nothing was written. */
  InvalidInput,
  /** A task's id. */
  TaskId
}

/** The states of a task. `failed`: failed permanently (e.g. bad payload); `dead`: retries exhausted. */
export const TaskState = Schema.Literal("pending", "running", "succeeded", "failed", "dead", "cancelled")
/** The states of a task. */
export type TaskState = typeof TaskState.Type

/** The terminal states. */
export const terminalStates: ReadonlyArray<TaskState> = ["succeeded", "failed", "dead", "cancelled"]

/** How an attempt went wrong, recorded distinctly. */
export const ErrorKind = Schema.Literal(
  "failure",
  "defect",
  "timeout",
  "interrupted",
  "lease_expired",
  "decode",
  "encode",
  "unknown_task",
  "cancelled"
)
/** How an attempt went wrong. */
export type ErrorKind = typeof ErrorKind.Type

/** The recorded error of a task's last failed attempt. `error` is the typed failure, encoded. */
export const TaskError = Schema.Struct({
  kind: ErrorKind,
  message: Schema.String,
  attempt: Schema.Number,
  error: Schema.optional(Schema.Unknown)
})
/** The recorded error of a task's last failed attempt. */
export type TaskError = typeof TaskError.Type

/** Everything known about a task. Payload and result are in their encoded (JSON) form. */
export interface TaskInfo {
  readonly id: TaskId
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly tags: ReadonlyArray<string>
  readonly state: TaskState
  readonly priority: number
  readonly attempts: number
  readonly maxAttempts: number
  readonly payload: unknown
  readonly result: Option.Option<unknown>
  readonly error: Option.Option<TaskError>
  readonly idempotencyKey: string | undefined
  readonly chordId: string | undefined
  readonly runId: string | undefined
  readonly runAt: Date
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly startedAt: Date | undefined
  readonly finishedAt: Date | undefined
  /** The last progress its handler reported (`TaskContext.progress`), kept after the task ends; none if never. */
  readonly progress: TaskProgress | undefined
}

/** Progress reported by a running handler: a fraction 0..1 (0.42 is 42 %) and an optional short message. */
export interface TaskProgress {
  /** 0 to 1. */
  readonly value: number
  readonly message: string | undefined
  /** When it was recorded. */
  readonly at: Date
}

/** A live worker as it registered itself (`Worker.run`) and last heart-beat. */
export interface WorkerInfo {
  readonly id: string
  readonly host: string
  readonly pid: number
  readonly queues: ReadonlyArray<string>
  readonly concurrency: number
  readonly startedAt: Date
  readonly lastHeartbeat: Date
  /** Without a heartbeat until then, the worker is gone (crashed, frozen or cut off from the database). */
  readonly expiresAt: Date
  /** Tasks it held (running or buffered) at its last heartbeat. */
  readonly tasksInHand: number
}

/** What a worker records about itself when it starts. */
export interface WorkerRegistration {
  readonly id: string
  readonly host: string
  readonly pid: number
  readonly queues: ReadonlyArray<string>
  readonly concurrency: number
  /** Considered gone this long after its last heartbeat. */
  readonly ttlMs: number
}

/** Filters of `list`; every given field must match. */
export interface TaskListFilter {
  readonly state?: TaskState | undefined
  readonly queue?: string | undefined
  /** Exact task name. */
  readonly name?: string | undefined
  /** A substring of the task name (matched literally), or the exact task id. */
  readonly search?: string | undefined
  readonly runId?: string | undefined
  readonly chordId?: string | undefined
}

/** A task as `list` shows it: no payload or result (read those with `get`). */
export interface TaskSummary {
  readonly id: TaskId
  readonly name: string
  readonly queue: string
  readonly state: TaskState
  readonly attempts: number
  readonly maxAttempts: number
  readonly error: Option.Option<TaskError>
  readonly chordId: string | undefined
  readonly runId: string | undefined
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly finishedAt: Date | undefined
}

/** A page of tasks, newest first, and how many match the filter. */
export interface TaskPage {
  readonly total: number
  readonly items: ReadonlyArray<TaskSummary>
}

/** One queue's figures: tasks per state and the task waiting longest (runnable now, not yet claimed). */
export interface QueueStats {
  readonly queue: string
  readonly counts: Readonly<Record<TaskState, number>>
  readonly oldestWaiting: Option.Option<{ readonly id: TaskId; readonly name: string; readonly runAt: Date }>
}

/**
 * The payload does not satisfy the task's payload Schema, or its encoded JSON is larger than `limits.maxPayloadBytes`
 * or nested deeper than `limits.maxPayloadDepth`; nothing was enqueued.
 */
export class InvalidPayload extends Schema.TaggedError<InvalidPayload>()("InvalidPayload", {
  task: Schema.String,
  message: Schema.String
}) {}

/**
 * The limits enqueue (and chords, which enqueue) enforce, identically on every backend (see docs/tasks.md, "Limits").
 * Names, queues, namespaces, tags, idempotency keys and run ids: 1 to `maxNameLength` characters, no NUL, no lone
 * surrogate. Durations (delay, timeout, backoff) and `runAt` are checked before they are decoded.
 */
export const limits = {
  maxNameLength: Validate.maxNameLength,
  maxTags: Validate.maxTags,
  maxPayloadBytes: Validate.maxPayloadBytes,
  maxPayloadDepth: Validate.maxPayloadDepth,
  maxChordSize: Validate.maxChordSize,
  maxPriority: Validate.maxPriority,
  maxAttempts: Validate.maxAttemptsLimit,
  maxDurationMs: Validate.maxDurationMs,
  maxEpochMs: Validate.maxEpochMs
} as const

/** No task has this id. */
export class TaskNotFound extends Schema.TaggedError<TaskNotFound>()("TaskNotFound", {
  taskId: Schema.String
}) {}

/** An enqueue request with the payload already encoded (what chords and the CLI use). */
export interface RawEnqueue {
  readonly name: string
  /** The encoded payload (JSON-serialisable). */
  readonly payload: unknown
  readonly queue?: string | undefined
  readonly namespace?: string | undefined
  readonly tags?: ReadonlyArray<string> | undefined
  readonly priority?: number | undefined
  readonly maxAttempts?: number | undefined
  readonly timeoutMs?: number | undefined
  readonly backoff?: { readonly baseMs: number; readonly factor: number; readonly maxMs: number } | undefined
  readonly runAt?: number | undefined
  readonly idempotencyKey?: string | undefined
  /** With `idempotencyKey`: a still-pending task of the key gets this payload, priority and run-at. */
  readonly replace?: boolean | undefined
  /** With `idempotencyKey`: a still-pending task of the key runs no earlier than now + this many ms. */
  readonly debounceMs?: number | undefined
  readonly chordId?: string | undefined
  readonly chordIndex?: number | undefined
  readonly runId?: string | undefined
}

/** A task handed to a worker, with the lease that guards its completion. */
export interface ClaimedTask {
  readonly id: TaskId
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly payload: string
  readonly attempt: number
  readonly maxAttempts: number
  readonly timeoutMs: number | undefined
  readonly backoff: { readonly baseMs: number; readonly factor: number; readonly maxMs: number }
  readonly leaseId: string
  readonly chordId: string | undefined
  readonly runId: string | undefined
  /** The span context of the enqueue that created the task (its `Worker.execute` span continues that trace). */
  readonly traceContext?: { readonly traceId: string; readonly spanId: string } | undefined
}

/** What to do with a failed attempt. */
export type FailureDisposition =
  { readonly _tag: "Retry"; readonly runAt: number } | { readonly _tag: "Dead" } | { readonly _tag: "Failed" }

/** The durable broker. */
export class TaskQueue extends Context.Tag("baton/TaskQueue")<
  TaskQueue,
  {
    /** Encodes the payload with the task's Schema and enqueues it; joins the caller's transaction if any. */
    readonly enqueue: <T extends Task.Any>(
      task: T,
      payload: Task.Payload<T>,
      options?: Task.EnqueueOptions
    ) => Effect.Effect<TaskId, InvalidPayload | InvalidInput | SqlError>
    /** Enqueues many calls in one transaction (all or none); ids in input order. */
    readonly enqueueMany: (
      calls: Iterable<Task.TaskCall>
    ) => Effect.Effect<ReadonlyArray<TaskId>, InvalidPayload | InvalidInput | SqlError>
    /** Enqueues already-encoded requests in one transaction (all or none); ids in input order. */
    readonly enqueueRaw: (
      requests: ReadonlyArray<RawEnqueue>
    ) => Effect.Effect<ReadonlyArray<TaskId>, InvalidPayload | InvalidInput | SqlError>
    /** Reads a task. */
    readonly get: (taskId: string) => Effect.Effect<TaskInfo, TaskNotFound | SqlError>
    /** Reads many tasks (in chunks of 1,000 ids, no order); ids with no task are absent from the result. */
    readonly getMany: (taskIds: Iterable<string>) => Effect.Effect<ReadonlyArray<TaskInfo>, SqlError>
    /** Reads a task's result decoded with the task's success Schema (None unless it succeeded). */
    readonly result: <T extends Task.Any>(
      task: T,
      taskId: string
    ) => Effect.Effect<Option.Option<Task.Success<T>>, TaskNotFound | SqlError>
    /** Cancels a pending or running task; true if this call cancelled it. A running handler's result is refused. */
    readonly cancel: (taskId: string) => Effect.Effect<boolean, SqlError>
    /**
     * Puts a `dead` or `failed` task back to `pending` (attempts reset, runnable now, last error kept); true if this
     * call moved it. Refused (false) for any other state and for chord body tasks (their chord already decided).
     */
    readonly retry: (taskId: string) => Effect.Effect<boolean, SqlError>
    /** A page of tasks matching the filter, newest first (`limit` default 50, at most 1,000). */
    readonly list: (
      filter?: TaskListFilter,
      page?: { readonly limit?: number | undefined; readonly offset?: number | undefined }
    ) => Effect.Effect<TaskPage, SqlError>
    /** Per queue (sorted by name): tasks per state and the oldest waiting task. */
    readonly queueStats: Effect.Effect<ReadonlyArray<QueueStats>, SqlError>
    /** Number of tasks per state (all queues). */
    readonly counts: Effect.Effect<Readonly<Record<TaskState, number>>, SqlError>

    /**
     * Worker side: claims up to `limit` runnable tasks under one new lease (`leaseId`, or a random one). A worker that
     * picks the lease id can find a claim whose reply was lost with `claimed`.
     */
    readonly claim: (options: {
      readonly queues: ReadonlyArray<string>
      readonly limit: number
      readonly leaseMs: number
      readonly workerId: string
      readonly leaseId?: string | undefined
    }) => Effect.Effect<ReadonlyArray<ClaimedTask>, SqlError>
    /** Worker side: the tasks still running under `leaseId` (recovers a committed claim whose reply was lost). */
    readonly claimed: (leaseId: string) => Effect.Effect<ReadonlyArray<ClaimedTask>, SqlError>
    /** Worker side: extends the given leases; returns the ids of tasks whose lease is still held. */
    readonly heartbeat: (
      leases: ReadonlyArray<{ readonly id: string; readonly leaseId: string }>,
      leaseMs: number
    ) => Effect.Effect<ReadonlySet<string>, SqlError>
    /**
     * Worker side: completes tasks with encoded results atomically (with their events and, for chord body tasks, the
     * chord's counters); true where the lease guard held. `chordId` is the claimed task's (a hint: a batch with no
     * chord body task commits as a single statement).
     */
    readonly complete: (
      completions: ReadonlyArray<{
        readonly id: string
        readonly leaseId: string
        readonly result: unknown
        readonly chordId?: string | undefined
      }>
    ) => Effect.Effect<ReadonlyArray<boolean>, SqlError>
    /** Worker side: records a failed attempt (retry, dead or failed); false if the lease guard refused it. */
    readonly fail: (
      id: string,
      leaseId: string,
      error: TaskError,
      disposition: FailureDisposition
    ) => Effect.Effect<boolean, SqlError>
    /** Worker side: hands a running task back to the queue (shutdown), not counting the attempt. */
    readonly release: (id: string, leaseId: string, error: TaskError) => Effect.Effect<boolean, SqlError>
    /**
     * Worker side: records a running task's progress (`value` 0..1, clamped; `message` cut to 200 characters) and
     * appends a `task.progress` event, in one transaction; false if the lease guard refused it (not running).
     */
    readonly progress: (
      id: string,
      leaseId: string,
      value: number,
      message: string | undefined
    ) => Effect.Effect<boolean, SqlError>
    /** Worker side: registers (or re-registers) a live worker; rows of workers gone for an hour are deleted. */
    readonly registerWorker: (worker: WorkerRegistration) => Effect.Effect<void, SqlError>
    /** Worker side: a worker's heartbeat (keeps it alive for `ttlMs` more); false if its row was gone (re-register). */
    readonly heartbeatWorker: (id: string, tasksInHand: number, ttlMs: number) => Effect.Effect<boolean, SqlError>
    /** Worker side: removes a worker at graceful shutdown. */
    readonly deregisterWorker: (id: string) => Effect.Effect<void, SqlError>
    /** The live workers (heartbeat not expired), oldest first. */
    readonly workers: Effect.Effect<ReadonlyArray<WorkerInfo>, SqlError>
    /** Reconciler: returns tasks whose lease expired to the queue (or kills them if out of attempts). */
    readonly reclaimExpired: Effect.Effect<number, SqlError>
    /** Signals that work may be available on a queue (in-process enqueues; NOTIFY on Postgres). */
    readonly wakeups: Stream.Stream<string>
  }
>() {}

/**
 * An awaited task ended without succeeding: `failed` (permanently, e.g. a bad payload), `dead` (retries exhausted) or
 * `cancelled`. `error` is the recorded error of its last attempt (absent only if none was recorded).
 */
export class TaskFailed extends Schema.TaggedError<TaskFailed>()("TaskFailed", {
  taskId: Schema.String,
  taskName: Schema.String,
  state: Schema.Literal("failed", "dead", "cancelled"),
  error: Schema.optional(TaskError)
}) {
  override get message(): string {
    return (
      `task ${this.taskId} (${this.taskName}) ended ${this.state}` +
      (this.error === undefined ? "" : `: ${this.error.message}`)
    )
  }
}

/** What waiting on tasks can fail with besides the tasks' own outcome: the subscription or a read failed. */
export type AwaitError = SubscribeError | StreamError | SqlError

/** How one awaited task ended: its `TaskInfo` if it succeeded, else `TaskFailed` (or `TaskNotFound`). */
export type AwaitExit = Exit.Exit<TaskInfo, TaskFailed | TaskNotFound>

const settled = (info: TaskInfo): AwaitExit | undefined => {
  switch (info.state) {
    case "succeeded":
      return Exit.succeed(info)
    case "failed":
    case "dead":
    case "cancelled":
      return Exit.fail(
        new TaskFailed({
          taskId: info.id,
          taskName: info.name,
          state: info.state,
          ...(Option.isSome(info.error) ? { error: info.error.value } : {})
        })
      )
    default:
      return undefined
  }
}

/**
 * Waits for every id with one subscription: subscribe first, then read the current states (a completion that commits
 * between the two is delivered by the subscription, so none is lost), then wait on the completion stream, re-reading
 * (in one query per delivered chunk) only the tasks its events name. No polling.
 */
const waitAll = (
  taskIds: ReadonlyArray<string>,
  taskName?: string | undefined
): Effect.Effect<ReadonlyMap<string, AwaitExit>, AwaitError, TaskQueue | CompletionBackend> =>
  Effect.scoped(
    Effect.gen(function* () {
      const queue = yield* TaskQueue
      const backend = yield* CompletionBackend
      const events = yield* backend.subscribe({
        filter: taskName === undefined ? { kinds: ["task"] } : { kinds: ["task"], taskName }
      })
      const results = new Map<string, AwaitExit>()
      const pending = new Set(taskIds)
      const absorb = (infos: ReadonlyArray<TaskInfo>) => {
        for (const info of infos) {
          const exit = settled(info)
          if (exit !== undefined && pending.delete(info.id)) results.set(info.id, exit)
        }
      }
      const current = yield* queue.getMany(pending)
      const found = new Set<string>(current.map((info) => info.id))
      absorb(current)
      for (const id of [...pending]) {
        if (!found.has(id)) {
          pending.delete(id)
          results.set(id, Exit.fail(new TaskNotFound({ taskId: id })))
        }
      }
      if (pending.size === 0) return results
      yield* events.pipe(
        Stream.mapChunksEffect((chunk) => {
          const named = new Set<string>()
          for (const event of chunk) {
            if (event.taskId !== undefined && pending.has(event.taskId)) named.add(event.taskId)
          }
          if (named.size === 0) return Effect.succeed(Chunk.empty<number>())
          // Re-read rather than trust the event: the row has the result and error (and a task retried since is
          // waited for again).
          return Effect.map(queue.getMany(named), (infos) => {
            absorb(infos)
            return Chunk.of(pending.size)
          })
        }),
        Stream.takeUntil((left) => left === 0),
        Stream.runDrain
      )
      return results
    })
  )

/**
 * Waits until the task is terminal, driven by the completion stream (no polling), from any process: succeeds with
 * its `TaskInfo` (`result` encoded) if it succeeded, fails with `TaskFailed` if it ended failed, dead or cancelled,
 * and with `TaskNotFound` if there is no such task. Needs `TaskQueue` and `CompletionBackend` (`Baton.layer*`).
 */
const await_ = (
  taskId: string
): Effect.Effect<TaskInfo, TaskFailed | TaskNotFound | AwaitError, TaskQueue | CompletionBackend> =>
  Effect.flatMap(waitAll([taskId]), (results) => results.get(taskId)!).pipe(
    Effect.withSpan("TaskQueue.await", { attributes: { taskId } })
  )

export { await_ as await }

/**
 * `await` with the result decoded by the task's success Schema (a stored result that does not decode is a defect):
 * the typed way for a producer to wait for a task it enqueued, e.g.
 * `TaskQueue.awaitResult(Resize, yield* queue.enqueue(Resize, payload))`.
 */
export const awaitResult = <T extends Task.Any>(
  task: T,
  taskId: string
): Effect.Effect<Task.Success<T>, TaskFailed | TaskNotFound | AwaitError, TaskQueue | CompletionBackend> =>
  Effect.flatMap(waitAll([taskId], task.name), (results) => results.get(taskId)!).pipe(
    Effect.flatMap((info) =>
      Schema.decodeUnknown(task.success as Schema.Schema<Task.Success<T>, unknown>)(Option.getOrUndefined(info.result))
    ),
    Effect.catchTag("ParseError", Effect.die),
    Effect.withSpan("TaskQueue.awaitResult", { attributes: { taskId, task: task.name } })
  )

/**
 * Waits until every task is terminal, with ONE subscription however many ids (tested with 10,000): an `Exit` per id,
 * in input order — `Exit.succeed(info)` for a success, `Exit.fail(TaskFailed)` or `Exit.fail(TaskNotFound)`
 * otherwise. Fails only if the subscription or a read fails.
 */
export const awaitAll = (
  taskIds: Iterable<string>
): Effect.Effect<ReadonlyArray<AwaitExit>, AwaitError, TaskQueue | CompletionBackend> => {
  const ids = [...taskIds]
  return Effect.map(waitAll(ids), (results) => ids.map((id) => results.get(id)!)).pipe(
    Effect.withSpan("TaskQueue.awaitAll", { attributes: { count: ids.length } })
  )
}
