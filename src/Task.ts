/**
 * Task definitions: a name, Schemas for payload, success and failure, and a handler.
 *
 * A `Task` is a value shared by producers (who enqueue it with `TaskQueue.enqueue`) and workers (who run its
 * handler with `Worker.run`), so both sides are typed end to end. Payloads are encoded with the payload Schema at
 * enqueue (an invalid payload fails there) and decoded by the worker (an undecodable payload fails the task
 * permanently with the decode error). Results and typed failures are encoded with the `success` / `failure`
 * Schemas before they are stored.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Validate from "./internal/validate.js"

/** Per-task defaults; each can be overridden per enqueue. */
export interface TaskDefaults {
  /** Queue the task is enqueued on (default "default"). */
  readonly queue?: string | undefined
  /** Attempts before the task is dead (default 3). */
  readonly maxAttempts?: number | undefined
  /** Higher runs first (default 0). */
  readonly priority?: number | undefined
  /** Handler time limit per attempt; a timed-out attempt is recorded as `timeout` and retried. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Exponential retry backoff: `base * factor^(attempt-1)`, capped at `max` (default 1 s, 2, 5 min). */
  readonly backoff?: BackoffPolicy | undefined
}

/** Retry backoff settings, stored with each task so that any worker computes the same delay. */
export interface BackoffPolicy {
  readonly base?: Duration.DurationInput | undefined
  readonly factor?: number | undefined
  readonly max?: Duration.DurationInput | undefined
}

/** What a running handler can learn about its own execution. */
export class TaskContext extends Context.Tag("baton/TaskContext")<
  TaskContext,
  {
    readonly taskId: string
    readonly name: string
    readonly queue: string
    readonly namespace: string
    /** 1 for the first attempt. */
    readonly attempt: number
    readonly maxAttempts: number
    readonly chordId: string | undefined
    readonly runId: string | undefined
  }
>() {}

/** A task definition. */
export interface Task<Name extends string, P, PI, A, AI, E, EI, R> {
  readonly _tag: "Task"
  readonly name: Name
  readonly payload: Schema.Schema<P, PI>
  readonly success: Schema.Schema<A, AI>
  readonly failure: Schema.Schema<E, EI>
  readonly handler: (payload: P) => Effect.Effect<A, E, R>
  readonly defaults: TaskDefaults
}

/** Any task. */
export interface Any {
  readonly _tag: "Task"
  readonly name: string
  readonly payload: Schema.Schema.All
  readonly success: Schema.Schema.All
  readonly failure: Schema.Schema.All
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly handler: (payload: any) => Effect.Effect<any, any, any>
  readonly defaults: TaskDefaults
}

/** The decoded payload type of a task. */
export type Payload<T> =
  T extends Task<string, infer P, infer _PI, infer _A, infer _AI, infer _E, infer _EI, infer _R> ? P : never
/** The success type of a task. */
export type Success<T> =
  T extends Task<string, infer _P, infer _PI, infer A, infer _AI, infer _E, infer _EI, infer _R> ? A : never
/** The typed failure of a task. */
export type Failure<T> =
  T extends Task<string, infer _P, infer _PI, infer _A, infer _AI, infer E, infer _EI, infer _R> ? E : never
/** The services a task's handler needs (other than `TaskContext`, which the worker provides). */
export type Requirements<T> =
  T extends Task<string, infer _P, infer _PI, infer _A, infer _AI, infer _E, infer _EI, infer R>
    ? Exclude<R, TaskContext>
    : never

/** Defines a task. */
export const make = <Name extends string, P, PI, A, AI, E = never, EI = never, R = never>(
  name: Name,
  options: {
    readonly payload: Schema.Schema<P, PI>
    readonly success: Schema.Schema<A, AI>
    readonly failure?: Schema.Schema<E, EI> | undefined
    readonly handler: (payload: P) => Effect.Effect<A, E, R>
  } & TaskDefaults
): Task<Name, P, PI, A, AI, E, EI, R> => {
  // A definition-time check (tasks are module-level constants): the same rule enqueue applies to names.
  const problem = Validate.name("Task.make: the name", name)
  if (problem !== undefined) throw new TypeError(problem)
  const { failure, handler, payload, success, ...defaults } = options
  return {
    _tag: "Task",
    name,
    payload,
    success,
    failure: (failure ?? Schema.Never) as Schema.Schema<E, EI>,
    handler,
    defaults
  }
}

/** Options of one enqueue; each overrides the task's default. */
export interface EnqueueOptions extends TaskDefaults {
  /** Do not run before this time. */
  readonly runAt?: Date | number | undefined
  /** Do not run before now + delay. */
  readonly delay?: Duration.DurationInput | undefined
  /** Same key (within a namespace) → the same task, never two. */
  readonly idempotencyKey?: string | undefined
  /** Tenant / isolation namespace (default "default"); completion streams filter on it. */
  readonly namespace?: string | undefined
  /** Free-form labels; completion streams filter on them. */
  readonly tags?: ReadonlyArray<string> | undefined
}

/** A task together with its payload and options: what `enqueueMany` and chords take. */
export interface TaskCall<T extends Any = Any> {
  readonly _tag: "TaskCall"
  readonly task: T
  readonly payload: Payload<T>
  readonly options: EnqueueOptions
}

/** Builds a `TaskCall`. */
export const call = <T extends Any>(task: T, payload: Payload<T>, options: EnqueueOptions = {}): TaskCall<T> => ({
  _tag: "TaskCall",
  task,
  payload,
  options
})
