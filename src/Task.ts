/**
 * Task definitions: a contract (a name, Schemas for payload, success and failure, default options) and a handler.
 *
 * A `Contract` (`Task.contract`) is what producers import: they enqueue it with `TaskQueue.enqueue`, use it in chords
 * and read its results, typed end to end, without the handler's code or its dependencies in their module graph. The
 * worker side attaches the handler (`Task.implement(contract, handler)`), which may require services that are provided
 * where the worker is built; `Worker.run` takes these `Task`s. `Task.make` defines both at once. A worker that claims
 * a task name it has no implementation for fails that task at once (`unknown_task`), without retrying. Payloads are encoded with the payload Schema at
 * enqueue (an invalid payload fails there) and decoded by the worker (an undecodable payload fails the task
 * permanently with the decode error). Results and typed failures are encoded with the `success` / `failure`
 * Schemas before they are stored.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import { dual } from "effect/Function"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
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
    /**
     * Reports progress: `value` a fraction from 0 to 1 (0.42 is 42 %; clamped, a non-finite value counts as 0) and an
     * optional short message (cut to 200 characters). Stored on the task (`TaskInfo.progress`) and emitted as a
     * `task.progress` completion event. Never fails and never waits for the database: writes are throttled per task
     * (at most one per `Worker` option `progressInterval`, default 100 ms; the last value wins), and the last value
     * reported is written before the attempt's outcome is recorded.
     */
    readonly progress: (value: number, message?: string | undefined) => Effect.Effect<void>
  }
>() {}

/** Reports the running task's progress (a fraction 0..1 and an optional message): `TaskContext.progress`. */
export const progress = (value: number, message?: string | undefined): Effect.Effect<void, never, TaskContext> =>
  Effect.flatMap(TaskContext, (context) => context.progress(value, message))

/**
 * What producers and workers agree on about a task: its name, its Schemas and its default options. Both a
 * `Contract` (no handler) and a `Task` (a contract with its handler) are definitions; `enqueue`, chords and `result`
 * take any definition, `Worker.run` takes `Task`s.
 */
export interface Definition<Name extends string, P, PI, A, AI, E, EI> {
  readonly name: Name
  readonly payload: Schema.Schema<P, PI>
  readonly success: Schema.Schema<A, AI>
  readonly failure: Schema.Schema<E, EI>
  readonly defaults: TaskDefaults
}

/**
 * A task contract: the definition without its handler. A producer imports the contract module (Schemas only, none of
 * the handler's dependencies) to enqueue the task with types; the worker attaches the handler with `implement`.
 */
export interface Contract<Name extends string, P, PI, A, AI, E, EI> extends Definition<Name, P, PI, A, AI, E, EI> {
  readonly _tag: "TaskContract"
  /** Attaches the handler (where the worker runs); its requirements `R` are provided where the worker is built. */
  readonly implement: <R = never>(handler: (payload: P) => Effect.Effect<A, E, R>) => Task<Name, P, PI, A, AI, E, EI, R>
}

/** A task: a contract together with its handler, what `Worker.run` runs. */
export interface Task<Name extends string, P, PI, A, AI, E, EI, R> extends Definition<Name, P, PI, A, AI, E, EI> {
  readonly _tag: "Task"
  readonly handler: (payload: P) => Effect.Effect<A, E, R>
  /** The contract this task implements. */
  readonly contract: Contract<Name, P, PI, A, AI, E, EI>
}

/** Any task definition: a `Contract` or a `Task` (what producers pass to `enqueue`, chords and `result`). */
export interface Any {
  readonly _tag: "Task" | "TaskContract"
  readonly name: string
  readonly payload: Schema.Schema.All
  readonly success: Schema.Schema.All
  readonly failure: Schema.Schema.All
  readonly defaults: TaskDefaults
}

/** Any task with its handler (what `Worker.run` takes). */
export interface AnyTask extends Any {
  readonly _tag: "Task"
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly handler: (payload: any) => Effect.Effect<any, any, any>
}

/** Any task contract. */
export interface AnyContract extends Any {
  readonly _tag: "TaskContract"
}

/** The decoded payload type of a task or contract. */
export type Payload<T> =
  T extends Definition<string, infer P, infer _PI, infer _A, infer _AI, infer _E, infer _EI> ? P : never
/** The encoded payload type of a task or contract. */
export type PayloadEncoded<T> =
  T extends Definition<string, infer _P, infer PI, infer _A, infer _AI, infer _E, infer _EI> ? PI : never
/** The success type of a task or contract. */
export type Success<T> =
  T extends Definition<string, infer _P, infer _PI, infer A, infer _AI, infer _E, infer _EI> ? A : never
/** The encoded success type of a task or contract. */
export type SuccessEncoded<T> =
  T extends Definition<string, infer _P, infer _PI, infer _A, infer AI, infer _E, infer _EI> ? AI : never
/** The typed failure of a task or contract. */
export type Failure<T> =
  T extends Definition<string, infer _P, infer _PI, infer _A, infer _AI, infer E, infer _EI> ? E : never
/** The services a task's handler needs (other than `TaskContext`, which the worker provides). */
export type Requirements<T> =
  T extends Task<string, infer _P, infer _PI, infer _A, infer _AI, infer _E, infer _EI, infer R>
    ? Exclude<R, TaskContext>
    : never

/** The options of a contract: its Schemas and its default enqueue options. */
export type ContractOptions<P, PI, A, AI, E, EI> = {
  readonly payload: Schema.Schema<P, PI>
  readonly success: Schema.Schema<A, AI>
  readonly failure?: Schema.Schema<E, EI> | undefined
} & TaskDefaults

/**
 * Defines a task contract: name, Schemas and defaults, no handler. Producers enqueue it; the worker side attaches the
 * handler with `Task.implement(contract, handler)` (or `contract.implement(handler)`).
 */
export const contract = <Name extends string, P, PI, A, AI, E = never, EI = never>(
  name: Name,
  options: ContractOptions<P, PI, A, AI, E, EI>
): Contract<Name, P, PI, A, AI, E, EI> => {
  // A definition-time check (contracts are module-level constants): the same rule enqueue applies to names.
  const problem = Validate.name("Task.contract: the name", name)
  if (problem !== undefined) throw new TypeError(problem)
  const { failure, payload, success, ...defaults } = options
  const self: Contract<Name, P, PI, A, AI, E, EI> = {
    _tag: "TaskContract",
    name,
    payload,
    success,
    failure: (failure ?? Schema.Never) as Schema.Schema<E, EI>,
    defaults,
    implement: (handler) => implement(self, handler)
  }
  return self
}

/** Attaches a handler to a contract: the task a worker runs (`Worker.run({ tasks: [ ... ] })`). */
export const implement: {
  <P, A, E, R>(
    handler: (payload: P) => Effect.Effect<A, E, R>
  ): <Name extends string, PI, AI, EI>(
    contract: Contract<Name, P, PI, A, AI, E, EI>
  ) => Task<Name, P, PI, A, AI, E, EI, R>
  <Name extends string, P, PI, A, AI, E, EI, R>(
    contract: Contract<Name, P, PI, A, AI, E, EI>,
    handler: (payload: P) => Effect.Effect<A, E, R>
  ): Task<Name, P, PI, A, AI, E, EI, R>
} = dual(
  2,
  <Name extends string, P, PI, A, AI, E, EI, R>(
    contract: Contract<Name, P, PI, A, AI, E, EI>,
    handler: (payload: P) => Effect.Effect<A, E, R>
  ): Task<Name, P, PI, A, AI, E, EI, R> => {
    if (typeof handler !== "function")
      throw new TypeError(`Task.implement: the handler of "${contract.name}" is not a function`)
    return {
      _tag: "Task",
      name: contract.name,
      payload: contract.payload,
      success: contract.success,
      failure: contract.failure,
      defaults: contract.defaults,
      handler,
      contract
    }
  }
)

/** Defines a task with its handler in one step (a contract and its implementation at once). */
export const make = <Name extends string, P, PI, A, AI, E = never, EI = never, R = never>(
  name: Name,
  options: ContractOptions<P, PI, A, AI, E, EI> & {
    readonly handler: (payload: P) => Effect.Effect<A, E, R>
  }
): Task<Name, P, PI, A, AI, E, EI, R> => {
  const { handler, ...rest } = options
  const problem = Validate.name("Task.make: the name", name)
  if (problem !== undefined) throw new TypeError(problem)
  return implement(contract(name, rest), handler)
}

/** True for a task with its handler (not a bare contract). */
export const isTask = (value: unknown): value is AnyTask =>
  typeof value === "object" &&
  value !== null &&
  (value as { _tag?: unknown })._tag === "Task" &&
  typeof (value as { name?: unknown }).name === "string" &&
  typeof (value as { handler?: unknown }).handler === "function"

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
