/**
 * One attempt of a claimed task, from payload to recorded outcome.
 *
 * Each attempt ends in exactly one of:
 * - success: the encoded result is queued for the group commit, which then owns the lease;
 * - typed failure, defect, timeout, or a handler that interrupted itself: recorded as a failure retried with the
 *   task's exponential backoff until `maxAttempts`, then `dead`;
 * - unknown task name, undecodable payload, or a result that does not encode: `failed` at once (no retry);
 * - interruption by the worker (shutdown): the task is released, the attempt not counted.
 * Whatever happens, the slot frees (`active`, `finished`, `held` in the `LocalQueue`) and the claim loop is asked
 * for work. Recording a failure that itself fails is retried on a fresh connection while the lease is held
 * (`retry.ts`); only if it keeps failing is it logged and left to the lease's expiry (the task then runs again).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as Task from "../../Task.js"
import type { ClaimedTask, FailureDisposition, TaskError, TaskQueue } from "../../TaskQueue.js"
import * as GroupCommit from "./groupCommit.js"
import * as LocalQueue from "./localQueue.js"
import * as Outcomes from "./outcomes.js"
import * as Retry from "./retry.js"

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

/** What an attempt needs from its worker. */
export interface AttemptContext {
  readonly queue: TaskQueue["Type"]
  /** The worker's task definitions by name. */
  readonly registry: ReadonlyMap<string, Task.AnyTask>
  readonly workerId: string
  /** A `Worker.execute` span per attempt. */
  readonly spans: boolean
  readonly local: LocalQueue.LocalQueue
  readonly completions: GroupCommit.Completions
  readonly outcomes: Outcomes.Outcomes
  /** The lease duration: how long a failed outcome record is retried (the heartbeat extends the lease meanwhile). */
  readonly leaseMs: number
  /** Least time between two progress writes of one task (ms). */
  readonly progressMs: number
}

/** One attempt's progress reports waiting to be written (created at its first report). */
interface ProgressState {
  /** The newest value not yet written. */
  latest: { readonly value: number; readonly message: string | undefined } | undefined
  /** When the last write ended (ms). */
  lastAt: number
  /** A writer fiber is running (or starting). */
  writing: boolean
  fiber: Fiber.RuntimeFiber<void> | undefined
  /** The attempt is over: reports are ignored. */
  ended: boolean
}

/**
 * The function running one attempt of a claimed task. The handler's requirements come from the fiber that runs the
 * returned effect (the worker's slots are forked from `Worker.run`'s fiber, which has `Task.Requirements<Tasks>`).
 */
export const make = (context: AttemptContext): ((task: ClaimedTask) => Effect.Effect<void>) => {
  const { completions, leaseMs, local, outcomes, progressMs, queue, registry, spans, workerId } = context

  // Payload decoders and result encoders compiled once per task definition, not once per attempt.
  const codecs = new Map<string, Codecs>()
  const codecsOf = (definition: Task.AnyTask): Codecs => {
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

  const recordFailure = (task: ClaimedTask, error: TaskError, permanent: boolean) =>
    Effect.gen(function* () {
      let disposition: FailureDisposition
      if (permanent) disposition = { _tag: "Failed" }
      else if (task.attempt >= task.maxAttempts) disposition = { _tag: "Dead" }
      else {
        const now = yield* Clock.currentTimeMillis
        disposition = { _tag: "Retry", runAt: now + (yield* retryDelay(task.backoff, task.attempt)) }
      }
      // Retried on a fresh connection while the lease is held (the lease guard makes it idempotent; the task stays
      // in `held`, so the heartbeat extends its lease meanwhile).
      let retried = false
      const accepted = yield* Retry.retrying(
        "recording a task outcome",
        queue.fail(task.id, task.leaseId, error, disposition),
        Duration.millis(leaseMs),
        Effect.sync(() => {
          retried = true
          local.retrying.add(task.id)
        })
      ).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            if (retried) local.retrying.delete(task.id)
          })
        )
      )
      if (!accepted && retried) yield* Effect.logDebug("failure refused after a retry (recorded by the earlier try?)")
      else if (!accepted) yield* Effect.logWarning("failure refused: the task's lease is no longer held")
      else {
        yield* outcomes.record(disposition._tag.toLowerCase())
        if (disposition._tag !== "Retry") yield* Outcomes.logTerminalFailure(task, disposition._tag, error)
      }
      yield* Effect.logDebug("task attempt failed", { kind: error.kind, disposition: disposition._tag })
    }).pipe(
      Effect.catchAll((error) =>
        Effect.logError("recording a task outcome failed; its lease will expire and it will be retried", {
          error: error.message
        })
      )
    )

  return (task) => {
    const definition = registry.get(task.name)
    const base = { attempt: task.attempt }
    // Set once the success is queued for the group commit, which then owns the lease.
    let handedOver = false

    // Progress: the handler's reports are throttled (one write per `progressMs`, the last value wins) by one writer
    // fiber, started at the first report. Tasks that never report pay nothing.
    let progress: ProgressState | undefined
    const writeLatest = (state: ProgressState): Effect.Effect<void> =>
      Effect.suspend(() => {
        const entry = state.latest
        if (entry === undefined) return Effect.void
        return queue.progress(task.id, task.leaseId, entry.value, entry.message).pipe(
          Effect.catchAll((error) => Effect.logWarning("recording task progress failed", { error: error.message })),
          Effect.zipRight(Clock.currentTimeMillis),
          Effect.map((now) => {
            if (state.latest === entry) state.latest = undefined
            state.lastAt = now
          }),
          // A write in flight finishes (or the value stays `latest` for the final flush): never a half-done one.
          Effect.uninterruptible
        )
      })
    const writer = (state: ProgressState): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (state.latest === undefined || state.ended) {
          state.writing = false
          return Effect.void
        }
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const wait = state.lastAt + progressMs - now
          return (wait > 0 ? Effect.sleep(Duration.millis(wait)) : Effect.void).pipe(
            Effect.zipRight(writeLatest(state)),
            Effect.zipRight(writer(state))
          )
        })
      })
    const report = (value: number, message?: string | undefined): Effect.Effect<void> =>
      Effect.suspend(() => {
        const state = (progress ??= { latest: undefined, lastAt: 0, writing: false, fiber: undefined, ended: false })
        if (state.ended) return Effect.void
        state.latest = { value, message }
        if (state.writing) return Effect.void
        state.writing = true
        return Effect.map(Effect.forkDaemon(writer(state)), (fiber) => {
          state.fiber = fiber
        })
      })
    // The attempt's last reported value is written before its outcome (its event precedes the completion's).
    const flushProgress = Effect.suspend(() => {
      const state = progress
      if (state === undefined || state.ended) return Effect.void
      state.ended = true
      return Effect.zipRight(state.fiber === undefined ? Effect.void : Fiber.interrupt(state.fiber), writeLatest(state))
    })
    const stopProgress = Effect.suspend(() => {
      const state = progress
      if (state === undefined) return Effect.void
      state.ended = true
      return state.fiber === undefined ? Effect.void : Effect.asVoid(Fiber.interrupt(state.fiber))
    })
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
      // `Task.TaskContext` is in the fiber's context for the whole attempt (set by `enter` below); the handler's
      // other requirements are in the runtime of the slot fiber running this (see `make`).
      let handler = definition.handler(decoded.right) as Effect.Effect<unknown, unknown, never>
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
      if (progress !== undefined) yield* flushProgress
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
        yield* GroupCommit.submit(completions, task, encoded.right)
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
        return yield* recordFailure(
          task,
          { ...base, kind: "failure", message: failureMessage(failure.value), error: value },
          false
        )
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
      if (!handedOver) local.held.delete(task.id)
      local.active--
      local.finished++
      LocalQueue.askForWork(local)
      if (progress !== undefined) return Effect.zipRight(stopProgress, settleOutcome(exit))
      return settleOutcome(exit)
    }
    const settleOutcome = (exit: Exit.Exit<void>): Effect.Effect<void> => {
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
    // The attempt's log annotations and `Task.TaskContext` are set on the slot fiber for the attempt and put back
    // after `settle` (which logs with them): two plain FiberRef writes each way. `Effect.annotateLogs` and
    // `Effect.provideService` each wrap the attempt in an `acquireUseRelease` and rebuilt the annotations map three
    // times; they were a third of the worker's CPU per task in a no-op drain (scratchpad/attempt-micro.ts).
    let effect = Effect.withFiberRuntime<void>((fiber) => {
      const annotations = fiber.getFiberRef(FiberRef.currentLogAnnotations)
      const context = fiber.getFiberRef(FiberRef.currentContext)
      const restore = Effect.zipRight(
        FiberRef.set(FiberRef.currentLogAnnotations, annotations),
        FiberRef.set(FiberRef.currentContext, context)
      )
      const enter = Effect.zipRight(
        FiberRef.set(
          FiberRef.currentLogAnnotations,
          HashMap.mutate(annotations, (map) => {
            HashMap.set(map, "taskId", task.id)
            HashMap.set(map, "task", task.name)
            HashMap.set(map, "attempt", String(task.attempt))
          })
        ),
        FiberRef.set(
          FiberRef.currentContext,
          Context.add(
            context,
            Task.TaskContext,
            Task.TaskContext.of({
              taskId: task.id,
              name: task.name,
              queue: task.queue,
              namespace: task.namespace,
              attempt: task.attempt,
              maxAttempts: task.maxAttempts,
              chordId: task.chordId,
              runId: task.runId,
              progress: report
            })
          )
        )
      )
      return Effect.zipRight(enter, body).pipe(Effect.onExit((exit) => Effect.zipRight(settle(exit), restore)))
    })
    if (spans) {
      // A child of the span that enqueued the task (stored with it), so one trace shows producer and execution.
      effect = Effect.withSpan(effect, "Worker.execute", {
        attributes: { taskId: task.id, task: task.name, attempt: task.attempt },
        captureStackTrace: false,
        ...(task.traceContext === undefined
          ? {}
          : {
              parent: Tracer.externalSpan({
                traceId: task.traceContext.traceId,
                spanId: task.traceContext.spanId,
                sampled: true
              })
            })
      })
    }
    return effect
  }
}

/** A typed failure's message: its `message`, else its `_tag`, else the value as a string. */
const failureMessage = (value: unknown): string =>
  typeof value === "object" && value !== null && "message" in value
    ? String((value as { message: unknown }).message)
    : typeof value === "object" && value !== null && "_tag" in value
      ? String((value as { _tag: unknown })._tag)
      : String(value)

const causeMessage = (cause: Cause.Cause<unknown>): string => {
  const squashed = Cause.squash(cause)
  return squashed instanceof Error ? squashed.message : String(squashed)
}

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
