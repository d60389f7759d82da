/**
 * Worker: claims tasks from a `TaskQueue` and runs their handlers.
 *
 * `Worker.run(options)` is scoped: it starts the worker in the current `Scope` and, when the scope closes, stops
 * claiming, lets in-flight handlers finish within `shutdownGracePeriod`, and hands the rest back to the queue
 * (`release`, the attempt not counted). While running it
 * - claims in batches under one lease, keeping a local queue of tasks ahead of its free slots (so a freed slot
 *   starts the next task without a round trip) sized to about two claim round trips' worth of work — large for
 *   fast tasks, near zero for slow ones, never more than `prefetch` — and extends the leases of everything it holds
 *   with a heartbeat,
 * - wakes on new work (in-process enqueues, NOTIFY on Postgres) and otherwise polls with exponential backoff,
 * - records each outcome distinctly: success, typed failure, defect, timeout (retried with the task's exponential
 *   backoff until `maxAttempts`, then `dead`), undecodable payload or unknown task name (`failed` at once, no
 *   retry), and interruption (released),
 * - batches completions: one transaction completes every task that finished meanwhile (group commit); a handler's
 *   slot frees when its success is queued for that commit (bounded), and shutdown waits for the commit.
 * A handler whose lease expired keeps running, but its completion is refused by the lease guard.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as Reconciler from "./Reconciler.js"
import * as Task from "./Task.js"
import * as Validate from "./internal/validate.js"
import { type ClaimedTask, type FailureDisposition, InvalidInput, type TaskError, TaskQueue } from "./TaskQueue.js"

/** Worker settings. */
export interface WorkerOptions<Tasks extends ReadonlyArray<Task.Any>> {
  /** The tasks this worker can run (others on its queues are recorded as `unknown_task` failures). */
  readonly tasks: Tasks
  /** Handlers running at once (default 10). */
  readonly concurrency?: number | undefined
  /** Queues to claim from (default: the tasks' default queues, else "default"). */
  readonly queues?: ReadonlyArray<string> | undefined
  /** Lease length; a task whose worker stops heart-beating is reclaimed after it (default 30 s). */
  readonly leaseDuration?: Duration.DurationInput | undefined
  /** Heartbeat period (default a third of the lease). */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** Poll interval when idle: starts at `min`, doubles up to `max` (default 50 ms .. 1 s). */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /**
   * Most tasks claimed ahead of free handler slots (a local queue, like graphile-worker's `localQueue`): a slot
   * that frees starts the next task without a database round trip, and claims come in batches. Within this bound
   * the worker keeps about two claim round trips' worth of work buffered, measured as it runs (so slow tasks are
   * not hoarded away from other workers). Buffered tasks are leased (and heart-beaten) while they wait; a shutdown
   * hands them back without counting an attempt. Default 1000; 0 claims only for free slots.
   */
  readonly prefetch?: number | undefined
  /**
   * A `Worker.execute` span per task attempt. Default: only when a tracer is installed (e.g. an OpenTelemetry
   * layer); Effect's built-in tracer exports nowhere, and creating a span per task is a measurable share of the
   * worker's CPU at tens of thousands of tasks a second.
   */
  readonly spans?: boolean | undefined
  /** How long in-flight handlers may run after shutdown begins before they are released (default 10 s). */
  readonly shutdownGracePeriod?: Duration.DurationInput | undefined
  /**
   * Period of the worker's own pass reclaiming expired leases of other (dead) workers (default 5 s; 0 disables). The
   * pass is skipped while a `Reconciler` running in this process has that step (`Baton.layer*` run one).
   */
  readonly reclaimInterval?: Duration.DurationInput | undefined
  /** An id for logs and the `worker_id` column (default random). */
  readonly workerId?: string | undefined
}

/** A running worker. */
export interface WorkerHandle {
  readonly workerId: string
  /** Tasks whose outcome this worker recorded (succeeded, failed, dead, retried). */
  readonly processed: Effect.Effect<number>
  /** Handlers running now. */
  readonly inFlight: Effect.Effect<number>
}

/** Counter of task outcomes recorded by workers, tagged with `outcome`. */
export const tasksProcessed = Metric.counter("baton_tasks_processed_total", {
  description: "Task attempts whose outcome a worker recorded"
})

const causeMessage = (cause: Cause.Cause<unknown>): string => {
  const squashed = Cause.squash(cause)
  return squashed instanceof Error ? squashed.message : String(squashed)
}

/** Delay before retry number `attempt` (1-based) with exponential backoff, computed with `Schedule`. */
export const retryDelay = (
  backoff: { readonly baseMs: number; readonly factor: number; readonly maxMs: number },
  attempt: number
): Effect.Effect<number> =>
  Schedule.run(Schedule.exponential(Duration.millis(backoff.baseMs), backoff.factor), 0, Array(attempt).fill(0)).pipe(
    Effect.map((outputs) => {
      const last = [...outputs].at(-1)
      return Math.min(last === undefined ? backoff.baseMs : Duration.toMillis(last), backoff.maxMs)
    })
  )

// Effect's default tracer: spans that go nowhere unless a tracer layer replaces it.
const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Starts a worker in the current scope. */
export const run = <const Tasks extends ReadonlyArray<Task.Any>>(
  options: WorkerOptions<Tasks>
): Effect.Effect<WorkerHandle, InvalidInput, Scope.Scope | TaskQueue | Task.Requirements<Tasks[number]>> =>
  Effect.gen(function* () {
    const settings = yield* checkOptions(options)
    const queue = yield* TaskQueue
    const registry = new Map<string, Task.Any>(options.tasks.map((task) => [task.name, task]))
    const workerId = options.workerId ?? `worker-${crypto.randomUUID().slice(0, 8)}`
    const concurrency = settings.concurrency
    const maxPrefetch = settings.prefetch
    // The local queue's current target: starts at `concurrency`, then follows the measured task rate × claim time.
    let prefetch = Math.min(concurrency, maxPrefetch)
    const spans = options.spans ?? (yield* Effect.tracer) !== builtInTracer
    const capacity = () => concurrency + prefetch
    // Claim in batches of at least this many once work is flowing (a claim is a round trip and a commit).
    const minClaim = () => Math.max(1, Math.floor(prefetch / 2))
    const queues = options.queues ?? [...new Set(options.tasks.map((task) => task.defaults.queue ?? "default"))].sort()
    const leaseMs = settings.leaseMs
    const heartbeatMs = settings.heartbeatMs
    const pollMin = Duration.millis(settings.pollMinMs)
    const pollMax = Duration.millis(settings.pollMaxMs)
    const grace = Duration.millis(settings.graceMs)
    const reclaimEvery = Duration.millis(settings.reclaimMs)

    const annotate = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(Effect.annotateLogs({ workerId }), Effect.annotateSpans({ workerId }))

    const processed = yield* Ref.make(0)
    // Every task whose lease this worker holds: buffered, running, or waiting for its completion to commit.
    const held = new Map<string, ClaimedTask>()
    // Claimed tasks waiting for a free handler slot (the local queue), and `stop` markers at shutdown.
    const ready = yield* Queue.unbounded<ClaimedTask | typeof stop>()
    let buffered = 0
    let active = 0
    // Handler runs finished so far (the rate the local queue is sized by).
    let finished = 0
    let accepting = true
    const needWork = yield* Queue.sliding<void>(1)
    const wake = yield* Queue.sliding<void>(1)
    const running = yield* FiberSet.make<void, never>()
    // Bounded: when commits fall behind, finished handlers wait here before their slot frees (backpressure).
    // The group commit and the heartbeat both lock many of this worker's task rows, in no common order: run one at
    // a time, or they deadlock each other (seen under load).
    const leaseWrites = yield* Effect.makeSemaphore(1)
    // Bounded by a few handler slots' worth (at least 250), not by the prefetch: a completion waits behind at most
    // this many others (one or two group commits), which bounds the time from a handler's return to its commit (a
    // chord's fan-in latency: measured 3x lower p99 for a 10,000-task chord than with the old bound of 2 x prefetch).
    // Much smaller batches cost throughput where several completers contend for one chord row (measured at 100).
    const completions = yield* Queue.bounded<Completion>(Math.max(250, concurrency * 4))

    const outcomeCounters = new Map<string, Metric.Metric.Counter<number>>()
    const outcome = (tag: string, n = 1) => {
      let counter = outcomeCounters.get(tag)
      if (counter === undefined) outcomeCounters.set(tag, (counter = Metric.tagged(tasksProcessed, "outcome", tag)))
      return Metric.incrementBy(counter, n)
    }

    // Payload decoders and result encoders compiled once per task definition, not once per attempt.
    const codecs = new Map<string, Codecs>()
    const codecsOf = (definition: Task.Any): Codecs => {
      let codec = codecs.get(definition.name)
      if (codec === undefined) {
        codec = {
          decodePayload: codecOf(
            Schema.parseJson(definition.payload as Schema.Schema<unknown, unknown>) as Schema.Schema<unknown, unknown>,
            "decode"
          ),
          encodeSuccess: codecOf(definition.success as Schema.Schema<unknown, unknown>, "encode"),
          encodeFailure: codecOf(definition.failure as Schema.Schema<unknown, unknown>, "encode")
        }
        codecs.set(definition.name, codec)
      }
      return codec
    }

    // Group commit: every completion that arrived while the previous batch committed goes into the next one.
    const completer = Effect.gen(function* () {
      const batch = yield* Queue.takeBetween(completions, 1, 1000)
      const items: Array<Extract<Completion, { _tag: "Complete" }>> = []
      const flushes: Array<Deferred.Deferred<void>> = []
      for (const item of batch) {
        if (item._tag === "Complete") items.push(item)
        else flushes.push(item.done)
      }
      if (items.length > 0) {
        // From here the group commit decides: the heartbeat stops extending these leases (a failed commit leaves
        // them to expire and be reclaimed), and a heartbeat racing the commit does not report them as lost.
        for (const item of items) held.delete(item.task.id)
        const exit = yield* Effect.exit(
          leaseWrites.withPermits(1)(
            queue.complete(
              items.map((item) => ({
                id: item.task.id,
                leaseId: item.task.leaseId,
                result: item.result,
                chordId: item.task.chordId
              }))
            )
          )
        )
        let accepted = 0
        if (Exit.isSuccess(exit)) {
          for (let i = 0; i < items.length; i++) {
            const task = items[i]!.task
            if (exit.value[i] === true) accepted++
            else {
              yield* Effect.logWarning("completion refused: the task's lease is no longer held (it ran twice)").pipe(
                Effect.annotateLogs({ taskId: task.id, task: task.name, attempt: String(task.attempt) })
              )
            }
          }
        } else {
          yield* Effect.logWarning("completing a batch failed; the tasks will be reclaimed when their leases expire", {
            cause: Cause.pretty(exit.cause)
          })
        }
        if (accepted > 0) {
          yield* Ref.update(processed, (n) => n + accepted)
          yield* outcome("succeeded", accepted)
        }
      }
      for (const done of flushes) yield* Deferred.succeed(done, undefined)
    }).pipe(Effect.forever)

    const recordFailure = (task: ClaimedTask, error: TaskError, permanent: boolean) =>
      Effect.gen(function* () {
        let disposition: FailureDisposition
        if (permanent) disposition = { _tag: "Failed" }
        else if (task.attempt >= task.maxAttempts) disposition = { _tag: "Dead" }
        else {
          const now = yield* Clock.currentTimeMillis
          disposition = { _tag: "Retry", runAt: now + (yield* retryDelay(task.backoff, task.attempt)) }
        }
        const accepted = yield* queue.fail(task.id, task.leaseId, error, disposition)
        if (!accepted) yield* Effect.logWarning("failure refused: the task's lease is no longer held")
        else {
          yield* Ref.update(processed, (n) => n + 1)
          yield* outcome(disposition._tag.toLowerCase())
        }
        yield* Effect.logDebug("task attempt failed", { kind: error.kind, disposition: disposition._tag })
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logError("recording a task outcome failed; its lease will expire and it will be retried", {
            error: error.message
          })
        )
      )

    const execute = (task: ClaimedTask): Effect.Effect<void> => {
      const definition = registry.get(task.name)
      const base = { attempt: task.attempt }
      // Set once the success is queued for the group commit, which then owns the lease.
      let handedOver = false
      const body = Effect.gen(function* () {
        if (definition === undefined) {
          return yield* recordFailure(
            task,
            { ...base, kind: "unknown_task", message: `no handler registered for task "${task.name}" on ${workerId}` },
            true
          )
        }
        const codec = codecsOf(definition)
        const decoded = yield* codec.decodePayload(task.payload)
        if (decoded._tag === "Left") {
          return yield* recordFailure(
            task,
            {
              ...base,
              kind: "decode",
              message: `payload does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`
            },
            true
          )
        }
        const taskContext = Task.TaskContext.of({
          taskId: task.id,
          name: task.name,
          queue: task.queue,
          namespace: task.namespace,
          attempt: task.attempt,
          maxAttempts: task.maxAttempts,
          chordId: task.chordId,
          runId: task.runId
        })
        // The handler's other requirements are in the runtime this fiber was forked with (see `fork`).
        let handler = (definition.handler(decoded.right) as Effect.Effect<unknown, unknown, never>).pipe(
          Effect.provideService(Task.TaskContext, taskContext)
        )
        let timedOut = false
        if (task.timeoutMs !== undefined) {
          handler = handler.pipe(
            Effect.timeoutFail({
              duration: Duration.millis(task.timeoutMs),
              onTimeout: () => {
                timedOut = true
                return "timeout" as unknown
              }
            })
          )
        }
        const exit = yield* Effect.exit(handler)
        if (Exit.isSuccess(exit)) {
          const encoded = yield* codec.encodeSuccess(exit.value)
          if (encoded._tag === "Left") {
            return yield* recordFailure(
              task,
              {
                ...base,
                kind: "encode",
                message: `result does not encode: ${ParseResult.TreeFormatter.formatErrorSync(encoded.left)}`
              },
              true
            )
          }
          // The handler's slot frees as soon as the completion is queued; the group commit records it (and
          // refuses it if the lease was lost meanwhile).
          const completion: Completion = { _tag: "Complete", task, result: encoded.right }
          if (!Queue.unsafeOffer(completions, completion)) yield* Queue.offer(completions, completion)
          handedOver = true
          return
        }
        if (timedOut) {
          return yield* recordFailure(
            task,
            { ...base, kind: "timeout", message: `timed out after ${task.timeoutMs} ms` },
            false
          )
        }
        const failure = Cause.failureOption(exit.cause)
        if (failure._tag === "Some") {
          const encoded = yield* codec.encodeFailure(failure.value)
          const value = encoded._tag === "Right" ? encoded.right : String(failure.value)
          const message =
            typeof failure.value === "object" && failure.value !== null && "message" in failure.value
              ? String((failure.value as { message: unknown }).message)
              : typeof failure.value === "object" && failure.value !== null && "_tag" in failure.value
                ? String((failure.value as { _tag: unknown })._tag)
                : String(failure.value)
          return yield* recordFailure(task, { ...base, kind: "failure", message, error: value }, false)
        }
        if (Cause.isInterruptedOnly(exit.cause)) {
          // The handler interrupted itself (not our shutdown): an attempt that did not finish.
          return yield* recordFailure(task, { ...base, kind: "interrupted", message: "handler was interrupted" }, false)
        }
        return yield* recordFailure(task, { ...base, kind: "defect", message: causeMessage(exit.cause) }, false)
      })
      // One exit handler (cheaper than onInterrupt + catchAllCause + ensuring, and this runs for every task): frees
      // the slot, hands an interrupted task back (shutdown), and logs anything unexpected.
      const settle = (exit: Exit.Exit<void>): Effect.Effect<void> => {
        if (!handedOver) held.delete(task.id)
        active--
        finished++
        askForWork()
        if (Exit.isSuccess(exit)) return Effect.void
        if (Cause.isInterruptedOnly(exit.cause)) {
          return handedOver
            ? Effect.void
            : queue
                .release(task.id, task.leaseId, {
                  ...base,
                  kind: "interrupted",
                  message: `worker ${workerId} shut down`
                })
                .pipe(Effect.ignore)
        }
        return Effect.logError("recording a task outcome failed; its lease will expire and it will be retried", {
          cause: Cause.pretty(exit.cause)
        })
      }
      let effect = body.pipe(
        Effect.onExit(settle),
        Effect.annotateLogs({ taskId: task.id, task: task.name, attempt: String(task.attempt) })
      )
      if (spans) {
        effect = Effect.withSpan(effect, "Worker.execute", {
          attributes: { taskId: task.id, task: task.name, attempt: task.attempt },
          captureStackTrace: false
        })
      }
      return effect
    }

    const askForWork = (): void => {
      if (accepting && capacity() - active - buffered >= minClaim()) Queue.unsafeOffer(needWork, undefined)
    }

    // `concurrency` long-lived slot fibers run the buffered tasks one after another: no fiber is forked per task.
    // They are forked from this fiber, so they carry the handlers' requirements (`Task.Requirements<Tasks>`).
    const slot = Effect.gen(function* () {
      while (true) {
        const next = yield* Queue.take(ready)
        if (next === stop) return
        buffered--
        active++
        // A defect here would be a Baton bug (handlers' own are caught): it is logged by `settle`, and the slot
        // lives on.
        yield* Effect.exit(execute(next))
      }
    })
    const claimLoop = Effect.gen(function* () {
      let idle = pollMin
      let rate = 0 // handler runs per millisecond (moving average)
      let claimMs = 1 // claim round trip (moving average)
      let sampledAt = yield* Clock.currentTimeMillis
      let sampledFinished = 0
      while (true) {
        const now = yield* Clock.currentTimeMillis
        if (now - sampledAt >= 5) {
          const recent = (finished - sampledFinished) / (now - sampledAt)
          rate = rate === 0 ? recent : rate * 0.7 + recent * 0.3
          sampledAt = now
          sampledFinished = finished
          prefetch = Math.min(maxPrefetch, Math.ceil(2 * rate * claimMs))
        }
        const free = capacity() - active - buffered
        if (free < minClaim()) {
          yield* Queue.take(needWork)
          continue
        }
        // Claim and buffer without an interruption point in between, so a shutdown never strands a claimed task
        // outside `held` (the shutdown releases what is still buffered).
        const claimed = yield* Effect.uninterruptible(
          queue.claim({ queues, limit: free, leaseMs, workerId }).pipe(
            Effect.catchAll((error) =>
              Effect.as(Effect.logWarning("claim failed; backing off", { error: error.message }), [])
            ),
            Effect.tap((claimed) =>
              Effect.sync(() => {
                for (const task of claimed) {
                  held.set(task.id, task)
                  buffered++
                  Queue.unsafeOffer(ready, task)
                }
              })
            )
          )
        )
        const claimedAt = yield* Clock.currentTimeMillis
        claimMs = claimMs * 0.7 + Math.max(0.1, claimedAt - now) * 0.3
        if (claimed.length === 0) {
          yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(idle))
          idle = Duration.min(Duration.times(idle, 2), pollMax)
          continue
        }
        idle = pollMin
        // The queue had fewer runnable tasks than asked for: a freed slot would only find it empty again, so wait for
        // new work (or the shortest poll, for tasks whose run_at comes due). Asking again as soon as a slot freed cost
        // an empty claim per task at light load, which a new task's claim could then wait behind.
        if (claimed.length < free) yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(pollMin))
      }
    })

    const heartbeat = Effect.gen(function* () {
      const leases = [...held.values()].map((task) => ({ id: task.id, leaseId: task.leaseId }))
      if (leases.length === 0) return
      const stillHeld = yield* leaseWrites.withPermits(1)(queue.heartbeat(leases, leaseMs))
      for (const lease of leases) {
        if (!stillHeld.has(lease.id) && held.has(lease.id)) {
          yield* Effect.logWarning("lease lost; the task may run again elsewhere", { taskId: lease.id })
        }
      }
    }).pipe(
      Effect.catchAll((error) => Effect.logWarning("heartbeat failed", { error: error.message })),
      Effect.repeat(Schedule.spaced(Duration.millis(heartbeatMs))),
      Effect.delay(Duration.millis(heartbeatMs))
    )

    // While a Reconciler runs in this process with the same step (as `Baton.layer*` provide), it reclaims expired
    // leases; the worker's own pass runs only when nothing else does.
    const reconciler = yield* Effect.serviceOption(Reconciler.Reconciler)
    const reclaimPass =
      reconciler._tag === "None"
        ? queue.reclaimExpired
        : Effect.flatMap(reconciler.value.covers(Reconciler.reclaimStepName), (covered) =>
            covered ? Effect.succeed(0) : queue.reclaimExpired
          )
    const reclaimer = reclaimPass.pipe(
      Effect.tap((n) => (n > 0 ? Effect.logInfo("reclaimed tasks with expired leases", { count: n }) : Effect.void)),
      Effect.catchAll((error) => Effect.logWarning("reclaim failed", { error: error.message })),
      Effect.repeat(Schedule.spaced(reclaimEvery))
    )

    // Finalizers run in reverse order: the last one added (shutdown) runs first, while the completer still runs.
    yield* Effect.forkScoped(annotate(completer))
    yield* Effect.forkScoped(annotate(heartbeat))
    if (Duration.toMillis(reclaimEvery) > 0) yield* Effect.forkScoped(annotate(reclaimer))
    yield* Effect.forkScoped(
      queue.wakeups.pipe(
        Stream.filter((name) => queues.includes(name)),
        Stream.runForEach(() => Queue.offer(wake, undefined))
      )
    )
    for (let i = 0; i < concurrency; i++) yield* FiberSet.run(running, annotate(slot))
    const loop = yield* Effect.forkScoped(annotate(claimLoop))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Effect.logDebug("worker stopping: no more claims", { inFlight: active, buffered })
        accepting = false
        yield* Fiber.interrupt(loop)
        // Claimed but never started: hand back at once (the attempt is not counted).
        const unstarted = (yield* Queue.takeAll(ready)).pipe(
          Chunk.filter((task) => task !== stop)
        ) as Chunk.Chunk<ClaimedTask>
        buffered = 0
        // Idle slots end at once, busy ones after their task.
        yield* Queue.offerAll(
          ready,
          Array.from({ length: concurrency }, () => stop)
        )
        const releasing = yield* Effect.fork(
          Effect.forEach(
            unstarted,
            (task) =>
              queue
                .release(task.id, task.leaseId, {
                  attempt: task.attempt,
                  kind: "interrupted",
                  message: `worker ${workerId} shut down before the task started`
                })
                .pipe(Effect.ignore, Effect.ensuring(Effect.sync(() => held.delete(task.id)))),
            { concurrency: 4, discard: true }
          )
        )
        // Finalizers run uninterruptibly: the waits below must be made interruptible for their timeouts to fire.
        const settled = yield* FiberSet.awaitEmpty(running).pipe(
          Effect.interruptible,
          Effect.timeout(grace),
          Effect.option
        )
        if (settled._tag === "None") {
          yield* Effect.logWarning("shutdown grace period over; releasing in-flight tasks", { inFlight: active })
        }
        yield* FiberSet.clear(running)
        // Every success handed to the group commit is committed before the completer stops.
        const flushed = yield* Deferred.make<void>()
        yield* Queue.offer(completions, { _tag: "Flush", done: flushed })
        yield* Deferred.await(flushed).pipe(Effect.interruptible, Effect.timeout(grace), Effect.ignore)
        yield* Fiber.join(releasing)
      }).pipe(annotate)
    )
    yield* Effect.logDebug("worker started", { queues: queues.join(","), concurrency, maxPrefetch })
    return {
      workerId,
      processed: Ref.get(processed),
      inFlight: Effect.sync(() => active)
    }
  })

/** Most handlers one worker runs at once. */
export const maxConcurrency = 10_000
/** Most tasks one worker buffers ahead of its free slots. */
export const maxPrefetch = 100_000

/** Checks the settings (each field named in the error, with its allowed range) and fills in the defaults. */
const checkOptions = (options: WorkerOptions<ReadonlyArray<Task.Any>>) =>
  Effect.gen(function* () {
    const fail = (field: string, message: string) => Effect.fail(new InvalidInput({ field, message }))
    const int = (field: string, value: number | undefined, fallback: number, min: number, max: number) => {
      const problem = value === undefined ? undefined : Validate.integer(field, value, min, max)
      return problem === undefined ? Effect.succeed(value ?? fallback) : fail(field, problem)
    }
    const ms = (field: string, value: Duration.DurationInput | undefined, fallback: number, min: number) => {
      if (value === undefined) return Effect.succeed(fallback)
      const checked = Validate.duration(field, value, min, Validate.maxDurationMs)
      return checked.problem === undefined ? Effect.succeed(checked.ms) : fail(field, checked.problem)
    }
    if (!Array.isArray(options.tasks)) return yield* fail("tasks", "tasks must be an array of Task.make(...) values")
    for (const [i, task] of options.tasks.entries()) {
      const problem = Validate.name(`tasks[${i}].name`, (task as Task.Any | undefined)?.name)
      if (problem !== undefined) return yield* fail("tasks", problem)
    }
    if (options.queues !== undefined) {
      const problem =
        options.queues.length === 0
          ? "queues must not be empty (omit it for the tasks' queues)"
          : Validate.tags("queues", options.queues)
      if (problem !== undefined) return yield* fail("queues", problem)
    }
    if (options.workerId !== undefined) {
      const problem = Validate.name("workerId", options.workerId)
      if (problem !== undefined) return yield* fail("workerId", problem)
    }
    const concurrency = yield* int("concurrency", options.concurrency, 10, 1, maxConcurrency)
    const prefetch = yield* int("prefetch", options.prefetch, 1000, 0, maxPrefetch)
    const leaseMs = yield* ms("leaseDuration", options.leaseDuration, 30_000, 10)
    const heartbeatMs = yield* ms(
      "heartbeatInterval",
      options.heartbeatInterval,
      Math.min(Math.max(10, Math.floor(leaseMs / 3)), leaseMs - 1),
      1
    )
    if (heartbeatMs >= leaseMs) {
      return yield* fail(
        "heartbeatInterval",
        `heartbeatInterval (${heartbeatMs} ms) must be shorter than leaseDuration (${leaseMs} ms)`
      )
    }
    const pollMinMs = yield* ms("pollInterval.min", options.pollInterval?.min, 50, 1)
    const pollMaxMs = yield* ms("pollInterval.max", options.pollInterval?.max, Math.max(1000, pollMinMs), 1)
    if (pollMaxMs < pollMinMs) {
      return yield* fail(
        "pollInterval.max",
        `pollInterval.max (${pollMaxMs} ms) is below pollInterval.min (${pollMinMs} ms)`
      )
    }
    const graceMs = yield* ms("shutdownGracePeriod", options.shutdownGracePeriod, 10_000, 0)
    const reclaimMs = yield* ms("reclaimInterval", options.reclaimInterval, 5000, 0)
    return { concurrency, prefetch, leaseMs, heartbeatMs, pollMinMs, pollMaxMs, graceMs, reclaimMs }
  })

const stop: unique symbol = Symbol.for("baton/Worker/stop")

type Completion =
  | { readonly _tag: "Complete"; readonly task: ClaimedTask; readonly result: unknown }
  | { readonly _tag: "Flush"; readonly done: Deferred.Deferred<void> }

type Codec = (input: unknown) => Effect.Effect<Either.Either<unknown, ParseResult.ParseError>>

interface Codecs {
  readonly decodePayload: Codec
  readonly encodeSuccess: Codec
  readonly encodeFailure: Codec
}

/**
 * A Schema decoder or encoder that runs synchronously (an `Either` is an Effect, so no fiber work) and falls back to
 * the effectful parser only for schemas with asynchronous transformations.
 */
const codecOf = (schema: Schema.Schema<unknown, unknown>, direction: "decode" | "encode"): Codec => {
  const sync = direction === "decode" ? Schema.decodeUnknownEither(schema) : Schema.encodeUnknownEither(schema)
  const effectful = direction === "decode" ? Schema.decodeUnknown(schema) : Schema.encodeUnknown(schema)
  return (input) => {
    const result = sync(input)
    if (Either.isRight(result) || result.left.issue._tag !== "Forbidden") return Effect.succeed(result)
    return Effect.either(effectful(input))
  }
}

/** A layer running a worker for the lifetime of the layer (graceful shutdown when it is released). */
export const layer = <const Tasks extends ReadonlyArray<Task.Any>>(
  options: WorkerOptions<Tasks>
): Layer.Layer<never, InvalidInput, TaskQueue | Task.Requirements<Tasks[number]>> => Layer.scopedDiscard(run(options))
