/**
 * Continuations: a job's latched outcome plus a map of named callbacks that fire when the job ends.
 *
 * Contract:
 * - The state is latched: `Running` until the first `complete(exit)`, then `Done(exit)` forever; a later `complete`
 *   changes nothing.
 * - `complete` fires every callback registered at that moment exactly once, each in its own fiber (or through the
 *   handle's pool, below): a slow, failing or dying callback neither delays nor stops the others (beyond taking a pool
 *   slot), and its failure is logged with the callback's name.
 * - A callback added after the latch is never silently dropped: `addOrRunNow` fires it at once with the latched exit
 *   (it does not run inline: the caller gets back its fiber, unless pooled), `addOrFailIfDone` refuses with
 *   `AlreadyStopped`, which carries the exit.
 * - `fork(effect)` wires a job's end into the latch: success, typed failure, defect and interruption each become
 *   `Done` with that exit, even when the job is interrupted before it started.
 * - A callback with a `retry` schedule (its own, or the handle's default) is re-run on a typed failure as the schedule
 *   allows; only the last failure is logged. Defects and interruptions are not retried.
 * - With `concurrency: n` the handle runs fired callbacks through a pool of at most `n` fibers (created on demand,
 *   gone when the queue is empty) instead of one fiber each: at most `n` callbacks run at once, the rest wait in
 *   firing order. Each still runs in its own failure domain (its failure, timeout or defect ends that callback only).
 * - Every handle reports to the `baton_continuations_*` metrics: callbacks registered, removed, fired and failed, and
 *   a histogram of callback durations.
 *
 * Guarantees:
 * - "Is it done? If not, insert the callback" is one atomic `Ref.modify`, and `complete` swaps the state to `Done` and
 *   takes the callback map in one atomic `Ref.modify` too. Hence a callback added concurrently with `complete` runs
 *   exactly once: either it was in the map `complete` took, or its add saw `Done` and fired it (or refused it).
 * - No callback ever runs under a lock (there is none: the only critical sections are synchronous `Ref.modify`
 *   functions), so a callback may add, remove, poll or await on the very handle that fired it.
 * - Callback fibers belong to the handle's `Scope`: closing it interrupts stragglers, and callbacks fired after it
 *   closed do not run.
 * - Completion drops the callback map: a finished handle holds only its exit, so handles do not grow.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"

/** A callback: receives the job's latched exit; its own result is ignored, its failure is logged. */
export type Callback<A, E> = (exit: Exit.Exit<A, E>) => Effect.Effect<unknown, unknown>

/** Which outcomes a callback fires on: `"success"`, `"failure"` (typed failure, defect or interruption) or both. */
export type On = "success" | "failure" | "both"

/** Per-callback options. */
export interface CallbackOptions {
  /** Fire only on a successful exit, only on a failed one, or on both (the default). */
  readonly on?: On | undefined
  /** Interrupt the callback (and log it) if it has not finished this long after it started (retries included). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Re-run the callback on a typed failure as this schedule allows; overrides the handle's default `retry`. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

/** Per-handle options, given to `make` or `fork`. */
export interface Options {
  /** The retry schedule of every callback that gives none of its own (default: no retries). */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Run fired callbacks through a pool of at most this many fibers (default: one fiber per callback). */
  readonly concurrency?: number | undefined
}

/** Callbacks registered (by either add, while the job runs; a replaced namesake counts again). */
export const callbacksRegistered = Metric.counter("baton_continuations_registered_total", {
  description: "Continuation callbacks registered on a running job"
})

/** Callbacks unregistered by `remove` before they fired. */
export const callbacksRemoved = Metric.counter("baton_continuations_removed_total", {
  description: "Continuation callbacks removed before they fired"
})

/** Callbacks fired: taken by `complete`, or added late with `addOrRunNow` (excluded by their `on` filter: not counted). */
export const callbacksFired = Metric.counter("baton_continuations_fired_total", {
  description: "Continuation callbacks fired"
})

/** Callbacks that ended in failure (after their retries), in a defect or in their timeout. */
export const callbacksFailed = Metric.counter("baton_continuations_failed_total", {
  description: "Continuation callbacks that failed, died or timed out"
})

/** How long each callback ran, from its start to its end, retries and their waits included (ms). */
export const callbackDuration = Metric.timer(
  "baton_continuations_callback_duration",
  "Duration of a continuation callback, retries included (ms)"
)

/**
 * What `addOrRunNow` did: `Registered` (the job is running; the callback fires on completion), `Fired` (the job had
 * already ended; the callback was forked at once with the latched exit) or `Skipped` (the job had already ended with an
 * outcome the callback's `on` option excludes).
 */
export type AddResult<A, E> =
  | { readonly _tag: "Registered" }
  | {
      readonly _tag: "Fired"
      readonly exit: Exit.Exit<A, E>
      /** The callback's own fiber; `undefined` on a pooled handle (`concurrency`), where `settled` waits for it. */
      readonly fiber: Fiber.RuntimeFiber<void> | undefined
    }
  | { readonly _tag: "Skipped"; readonly exit: Exit.Exit<A, E> }

/** Raised by `addOrFailIfDone` when the job had already ended; carries the latched exit. */
export class AlreadyStopped<A = unknown, E = unknown> extends Data.TaggedError("AlreadyStopped")<{
  /** The name of the callback that was refused. */
  readonly continuation: string
  /** The job's latched exit. */
  readonly exit: Exit.Exit<A, E>
}> {
  override get message(): string {
    return `Continuation "${this.continuation}" was not added: the job already stopped`
  }
}

/** A job handle: a latched `Running | Done(exit)` state plus named callbacks fired once when it ends. */
export interface Continuations<in out A, in out E> {
  /** Registers `callback` under `name` (replacing a namesake) while running; once done, forks it with the exit. */
  readonly addOrRunNow: (
    name: string,
    callback: Callback<A, E>,
    options?: CallbackOptions | undefined
  ) => Effect.Effect<AddResult<A, E>>
  /** Registers `callback` under `name` (replacing a namesake) while running; once done, fails with `AlreadyStopped`. */
  readonly addOrFailIfDone: (
    name: string,
    callback: Callback<A, E>,
    options?: CallbackOptions | undefined
  ) => Effect.Effect<void, AlreadyStopped<A, E>>
  /** Unregisters the callback named `name`; tells whether it was registered (always `false` once done). */
  readonly remove: (name: string) => Effect.Effect<boolean>
  /** Latches `exit` and fires every registered callback once; tells whether this call latched. */
  readonly complete: (exit: Exit.Exit<A, E>) => Effect.Effect<boolean>
  /** The latched exit, or `None` while running. */
  readonly poll: Effect.Effect<Option.Option<Exit.Exit<A, E>>>
  /** Waits for the latched exit. */
  readonly await: Effect.Effect<Exit.Exit<A, E>>
  /** Waits for the latched exit, then until every callback fiber fired so far (and any they fired) has finished. */
  readonly settled: Effect.Effect<Exit.Exit<A, E>>
  /** The number of registered callbacks (0 once done: completion drops the map). */
  readonly size: Effect.Effect<number>
}

/** A job forked with `fork`: its continuations plus the fiber running it. */
export interface Job<in out A, in out E> extends Continuations<A, E> {
  /** The fiber running the job; interrupting it latches an interruption exit. */
  readonly fiber: Fiber.RuntimeFiber<A, E>
}

interface Entry<A, E> {
  readonly callback: Callback<A, E>
  readonly on: On
  readonly timeout: Duration.Duration | undefined
  readonly retry: Schedule.Schedule<unknown, unknown> | undefined
}

// Resolved once per `make`/`fork` call and shared by the handle's callbacks; the default one is shared by every handle
// created without options, so options cost a handle one field.
interface Settings {
  readonly retry: Schedule.Schedule<unknown, unknown> | undefined
  readonly concurrency: number
}

const defaultSettings: Settings = { retry: undefined, concurrency: Infinity }

const makeSettings = (options: Options | undefined): Settings => {
  if (options === undefined || (options.retry === undefined && options.concurrency === undefined)) {
    return defaultSettings
  }
  const concurrency = options.concurrency ?? Infinity
  if (!(concurrency >= 1)) throw new RangeError(`Continuations: concurrency must be at least 1, got ${concurrency}`)
  return { retry: options.retry, concurrency: Math.floor(concurrency) }
}

// A pooled handle's queue of fired callbacks: `active` worker fibers take from `head` until it reaches the end.
interface Pool<A, E> {
  readonly queue: Array<Fired<A, E>>
  head: number
  active: number
}

interface Fired<A, E> {
  readonly name: string
  readonly entry: Entry<A, E>
  readonly exit: Exit.Exit<A, E>
}

// `Firing` is the first moment of `Done`: the exit is latched and every public view treats the handle as done, but
// `complete` is still forking the callbacks it took; only `settled` waits past it.
// The mutable fields are created lazily (a handle nobody registers on or waits for carries neither a map nor a
// Deferred) and are touched only inside `Ref.modify` functions, which run synchronously, hence atomically; once
// `complete` has swapped a `Running` state out, nothing else can reach it. Copying the map on every add instead would
// make n adds O(n²).
type State<A, E> =
  | {
      readonly _tag: "Running"
      callbacks: Map<string, Entry<A, E>> | undefined
      waiters: Deferred.Deferred<Exit.Exit<A, E>> | undefined
    }
  | { readonly _tag: "Firing"; readonly exit: Exit.Exit<A, E>; waiters: Deferred.Deferred<Exit.Exit<A, E>> | undefined }
  | { readonly _tag: "Done"; readonly exit: Exit.Exit<A, E> }

type Running<A, E> = Extract<State<A, E>, { readonly _tag: "Running" }>

const registered: AddResult<never, never> = { _tag: "Registered" }

const makeEntry = <A, E>(
  callback: Callback<A, E>,
  options: CallbackOptions | undefined,
  settings: Settings
): Entry<A, E> => ({
  callback,
  on: options?.on ?? "both",
  timeout: options?.timeout === undefined ? undefined : Duration.decode(options.timeout),
  retry: options?.retry ?? settings.retry
})

const firesOn = (on: On, exit: Exit.Exit<unknown, unknown>): boolean =>
  on === "both" || (on === "success") === Exit.isSuccess(exit)

// Runs one callback to its end, never failing: its failure (after its retries), defect or timeout is logged with its
// name and counted; its duration is recorded unless it was interrupted.
const runCallback = <A, E>(name: string, entry: Entry<A, E>, exit: Exit.Exit<A, E>): Effect.Effect<void> => {
  const attempt = Effect.suspend(() => entry.callback(exit))
  const run = entry.retry === undefined ? attempt : Effect.retry(attempt, entry.retry)
  const timeout = entry.timeout
  const bounded =
    timeout === undefined
      ? Effect.asVoid(run)
      : Effect.flatMap(Effect.timeoutOption(run, timeout), (result) =>
          Option.isNone(result)
            ? Effect.zipRight(
                Effect.logWarning(`Continuations callback timed out after ${Duration.format(timeout)}`),
                Metric.increment(callbacksFailed)
              )
            : Effect.void
        )
  return bounded.pipe(
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.zipRight(Effect.logDebug("Continuations callback interrupted", cause), Effect.interrupt)
        : Effect.zipRight(Effect.logWarning("Continuations callback failed", cause), Metric.increment(callbacksFailed))
    ),
    Metric.trackDuration(callbackDuration),
    // An interrupted callback is not a duration worth recording; the interruption ends here, its fiber's or the pool
    // worker's, so the worker carries on with the next callback.
    Effect.catchAllCause(() => Effect.void),
    Effect.annotateLogs("continuation", name)
  )
}

// Members are prototype getters rather than per-instance closures: a handle then costs a few fields, not a dozen
// functions and prebuilt effects. Each getter returns a fresh function or effect bound to the handle, so `c.complete`
// can still be passed around unbound.
class ContinuationsImpl<A, E> implements Continuations<A, E> {
  readonly state = Ref.unsafeMake<State<A, E>>({ _tag: "Running", callbacks: undefined, waiters: undefined })
  // Created by the first pooled fire: a handle that never fires carries no queue.
  pool: Pool<A, E> | undefined = undefined
  constructor(
    readonly fibers: FiberSet.FiberSet<void, never>,
    readonly settings: Settings
  ) {}
  get addOrRunNow() {
    return (name: string, callback: Callback<A, E>, options?: CallbackOptions | undefined) =>
      addOrRunNow(this, name, callback, options)
  }
  get addOrFailIfDone() {
    return (name: string, callback: Callback<A, E>, options?: CallbackOptions | undefined) =>
      addOrFailIfDone(this, name, callback, options)
  }
  get remove() {
    return (name: string) => remove(this, name)
  }
  get complete() {
    return (exit: Exit.Exit<A, E>) => complete(this, exit)
  }
  get poll() {
    return Effect.map(Ref.get(this.state), (s) => (s._tag === "Running" ? Option.none() : Option.some(s.exit)))
  }
  get await() {
    return awaitState(this, false)
  }
  get settled() {
    return Effect.zipLeft(awaitState(this, true), FiberSet.awaitEmpty(this.fibers))
  }
  get size() {
    return Effect.map(Ref.get(this.state), (s) => (s._tag === "Running" ? (s.callbacks?.size ?? 0) : 0))
  }
}

class JobImpl<A, E> extends ContinuationsImpl<A, E> implements Job<A, E> {
  // Assigned right after the fork, before the handle is handed out.
  fiber!: Fiber.RuntimeFiber<A, E>
}

// The atomic step: either the callback is now in the map `complete` will take, or the latched exit is returned.
const register = <A, E>(self: ContinuationsImpl<A, E>, name: string, entry: Entry<A, E>) =>
  Effect.tap(
    Ref.modify(self.state, (s): readonly [Exit.Exit<A, E> | undefined, State<A, E>] => {
      if (s._tag !== "Running") return [s.exit, s]
      ;(s.callbacks ??= new Map()).set(name, entry)
      return [undefined, s]
    }),
    (exit) => (exit === undefined ? Metric.increment(callbacksRegistered) : Effect.void)
  )

// Called from inside an uninterruptible region (`complete`, `addOrRunNow`), whose flags a fork inherits: without
// `interruptible` neither a timeout nor the closing scope could stop a callback. Unpooled: one fiber per callback,
// returned. Pooled: the callback joins the queue, and a worker is forked only while fewer than `concurrency` run.
const fire = <A, E>(
  self: ContinuationsImpl<A, E>,
  name: string,
  entry: Entry<A, E>,
  exit: Exit.Exit<A, E>
): Effect.Effect<Fiber.RuntimeFiber<void> | undefined> => {
  const concurrency = self.settings.concurrency
  if (concurrency === Infinity) {
    return Effect.zipRight(
      Metric.increment(callbacksFired),
      FiberSet.run(self.fibers, Effect.interruptible(runCallback(name, entry, exit)))
    )
  }
  return Effect.zipRight(
    Metric.increment(callbacksFired),
    Effect.suspend(() => {
      const pool = (self.pool ??= { queue: [], head: 0, active: 0 })
      pool.queue.push({ name, entry, exit })
      if (pool.active >= concurrency) return Effect.succeed(undefined)
      pool.active++
      return Effect.as(FiberSet.run(self.fibers, Effect.interruptible(drain(self, pool))), undefined)
    })
  )
}

// A pool worker: runs queued callbacks one after another and ends when the queue is empty. Taking the next callback
// and leaving on an empty queue are one synchronous step, so a callback queued meanwhile either is taken by a running
// worker or sees `active < concurrency` and starts one. A worker interrupted with the scope leaves its count behind:
// nothing runs on that handle any more. The last worker out drops the queue, so an idle handle holds none.
const drain = <A, E>(self: ContinuationsImpl<A, E>, pool: Pool<A, E>): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (pool.head === pool.queue.length) {
      if (--pool.active === 0) self.pool = undefined
      pool.queue.length = 0
      pool.head = 0
      return Effect.void
    }
    const next = pool.queue[pool.head]!
    // Release the slot so that a long queue does not keep callbacks that already ran.
    ;(pool.queue as Array<Fired<A, E> | undefined>)[pool.head++] = undefined
    return Effect.zipRight(runCallback(next.name, next.entry, next.exit), drain(self, pool))
  })

const addOrRunNow = <A, E>(
  self: ContinuationsImpl<A, E>,
  name: string,
  callback: Callback<A, E>,
  options: CallbackOptions | undefined
): Effect.Effect<AddResult<A, E>> =>
  // Uninterruptible so that an add which saw the latch always gets as far as forking the callback.
  Effect.uninterruptible(
    Effect.suspend(() => {
      const entry = makeEntry(callback, options, self.settings)
      return Effect.flatMap(register(self, name, entry), (exit): Effect.Effect<AddResult<A, E>> => {
        if (exit === undefined) return Effect.succeed(registered)
        if (!firesOn(entry.on, exit)) return Effect.succeed({ _tag: "Skipped", exit })
        return Effect.map(fire(self, name, entry, exit), (fiber) => ({ _tag: "Fired", exit, fiber }))
      })
    })
  )

const addOrFailIfDone = <A, E>(
  self: ContinuationsImpl<A, E>,
  name: string,
  callback: Callback<A, E>,
  options: CallbackOptions | undefined
): Effect.Effect<void, AlreadyStopped<A, E>> =>
  Effect.suspend(() =>
    Effect.flatMap(register(self, name, makeEntry(callback, options, self.settings)), (exit) =>
      exit === undefined ? Effect.void : Effect.fail(new AlreadyStopped({ continuation: name, exit }))
    )
  )

const remove = <A, E>(self: ContinuationsImpl<A, E>, name: string): Effect.Effect<boolean> =>
  Effect.tap(
    Ref.modify(self.state, (s): readonly [boolean, State<A, E>] => [
      s._tag === "Running" && s.callbacks !== undefined && s.callbacks.delete(name),
      s
    ]),
    (deleted) => (deleted ? Metric.increment(callbacksRemoved) : Effect.void)
  )

const complete = <A, E>(self: ContinuationsImpl<A, E>, exit: Exit.Exit<A, E>): Effect.Effect<boolean> =>
  // Uninterruptible so that the callbacks taken out of the state are all forked and the waiters woken.
  Effect.uninterruptible(
    Effect.flatMap(
      // The atomic step: latch the exit and take the callbacks (and waiters) that were registered until now.
      Ref.modify(self.state, (s): readonly [Running<A, E> | undefined, State<A, E>] =>
        s._tag === "Running" ? [s, { _tag: "Firing", exit, waiters: s.waiters }] : [undefined, s]
      ),
      (taken) => {
        if (taken === undefined) return Effect.succeed(false)
        const callbacks = taken.callbacks
        return (
          callbacks === undefined
            ? Effect.void
            : Effect.forEach(
                callbacks,
                ([name, entry]) => (firesOn(entry.on, exit) ? fire(self, name, entry, exit) : Effect.void),
                { discard: true }
              )
        ).pipe(
          // Only now `Done`: `settled` must not see an empty fiber set before every callback is in it.
          Effect.zipRight(
            Ref.modify(self.state, (s): readonly [Deferred.Deferred<Exit.Exit<A, E>> | undefined, State<A, E>] => [
              s._tag === "Firing" ? s.waiters : undefined,
              { _tag: "Done", exit }
            ])
          ),
          Effect.flatMap((waiters) => (waiters === undefined ? Effect.void : Deferred.succeed(waiters, exit))),
          Effect.as(true)
        )
      }
    )
  )

// Waits for the latch (`settled`: for the end of `Firing` too). Subscribing and checking are one atomic step, so a
// `complete` in between cannot be missed.
const awaitState = <A, E>(self: ContinuationsImpl<A, E>, settled: boolean): Effect.Effect<Exit.Exit<A, E>> =>
  Effect.fiberIdWith((fiberId) =>
    Effect.flatMap(
      Ref.modify(self.state, (s): readonly [Exit.Exit<A, E> | Deferred.Deferred<Exit.Exit<A, E>>, State<A, E>] => {
        if (s._tag === "Done" || (s._tag === "Firing" && !settled)) return [s.exit, s]
        return [(s.waiters ??= Deferred.unsafeMake(fiberId)), s]
      }),
      (result) => (Deferred.DeferredTypeId in result ? Deferred.await(result) : Effect.succeed(result))
    )
  )

/**
 * Creates a running handle, completed by hand with `complete`; its callback fibers are interrupted with the scope.
 * `options` sets the default retry schedule of its callbacks and the size of its callback pool.
 */
export const make = <A, E = never>(
  options?: Options | undefined
): Effect.Effect<Continuations<A, E>, never, Scope.Scope> =>
  Effect.suspend(() => {
    const settings = makeSettings(options)
    return Effect.map(FiberSet.make<void, never>(), (fibers) => new ContinuationsImpl<A, E>(fibers, settings))
  })

/**
 * Runs `effect` in a fiber owned by the scope and latches its exit (success, failure, defect or interruption) when it
 * ends; closing the scope interrupts the job (latching the interruption) and then any straggling callbacks.
 */
export const fork = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options?: Options | undefined
): Effect.Effect<Job<A, E>, never, R | Scope.Scope> =>
  Effect.flatMap(FiberSet.make<void, never>(), (fibers) => {
    const self = new JobImpl<A, E>(fibers, makeSettings(options))
    return Effect.map(
      // The fiber starts uninterruptible and only the job itself is made interruptible, so `complete` runs even when
      // the fiber is interrupted before its first step (an interruptible fiber would then skip `onExit` entirely).
      Effect.uninterruptibleMask((restore) =>
        Effect.forkScoped(Effect.onExit(restore(effect), (exit) => complete(self, exit)))
      ),
      (fiber): Job<A, E> => {
        self.fiber = fiber
        return self
      }
    )
  })
