/**
 * Database-neutral request encoding and validation, beside the contracts: a typed enqueue (`Task.call`, a chord's
 * body and callbacks) becomes a `RawEnqueue` with its payload encoded by the task's `Schema` and every option checked
 * (`encodeCall`); an already-encoded request is checked field by field before anything is written (`checkRequest`).
 * No SQL here: the SQL layer (`internal/sql`) and the chord registry both build on it.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Task from "../Task.js"
import { InvalidInput, InvalidPayload, type RawEnqueue } from "../TaskQueue.js"
import * as Validate from "./validate.js"

/** The retry backoff of a task that sets none (and the fields a partial one falls back to). */
export const defaultBackoff = { baseMs: 1000, factor: 2, maxMs: 5 * 60_000 }

/** Checks one duration option; its milliseconds, or an `InvalidInput` naming the field. */
export const durationMs = (
  field: string,
  input: Duration.DurationInput | undefined,
  minMs: number
): Effect.Effect<number | undefined, InvalidInput> => {
  if (input === undefined) return Effect.succeed(undefined)
  const checked = Validate.duration(field, input, minMs, Validate.maxDurationMs)
  // Whole milliseconds (the columns are integers): "1.5 millis" becomes 2 ms, never 0 for a positive duration.
  return checked.problem === undefined
    ? Effect.succeed(Math.ceil(checked.ms))
    : Effect.fail(new InvalidInput({ field, message: checked.problem }))
}

// Payload encoders compiled once per schema (not once per call): synchronous, falling back to the effectful
// encoder only for schemas with asynchronous transformations. A bulk enqueue encodes thousands of payloads.
type SyncEncoder = (input: unknown) => Either.Either<unknown, ParseResult.ParseError>
const encoders = new WeakMap<Schema.Schema.Any, SyncEncoder>()
const encoderOf = (schema: Schema.Schema<unknown, unknown>): SyncEncoder => {
  let encoder = encoders.get(schema)
  if (encoder === undefined) encoders.set(schema, (encoder = Schema.encodeUnknownEither(schema)))
  return encoder
}

const invalidPayload = (task: Task.Any, error: ParseResult.ParseError) =>
  new InvalidPayload({ task: task.name, message: ParseResult.TreeFormatter.formatErrorSync(error) })

/** Turns a typed enqueue into a raw one (encoding the payload with the task's Schema, checking the options). */
export const encodeCall = (
  task: Task.Any,
  payload: unknown,
  options: Task.EnqueueOptions,
  now: number
): Effect.Effect<RawEnqueue, InvalidPayload | InvalidInput> =>
  Effect.gen(function* () {
    const schema = task.payload as Schema.Schema<unknown, unknown>
    const sync = encoderOf(schema)(payload)
    const encoded = Either.isRight(sync)
      ? sync.right
      : sync.left.issue._tag !== "Forbidden"
        ? yield* Effect.fail(invalidPayload(task, sync.left))
        : yield* Schema.encodeUnknown(schema)(payload).pipe(Effect.mapError((error) => invalidPayload(task, error)))
    const merged = { ...task.defaults, ...options }
    const delay = yield* durationMs("delay", merged.delay, 0)
    let runAt: number | undefined
    if (merged.runAt !== undefined) {
      runAt =
        typeof merged.runAt === "number" ? merged.runAt : merged.runAt instanceof Date ? merged.runAt.getTime() : NaN
      const problem = Validate.integer("runAt", runAt, 0, Validate.maxEpochMs)
      if (problem !== undefined) {
        return yield* new InvalidInput({
          field: "runAt",
          message: `${problem.replace(/, got .*$/, "")} (epoch milliseconds or a valid Date), got ${String(merged.runAt)}`
        })
      }
    } else if (delay !== undefined) {
      runAt = now + delay
    }
    const debounceMs = yield* durationMs("debounce", merged.debounce, 1)
    if (runAt === undefined && debounceMs !== undefined) runAt = now + debounceMs
    let backoff: RawEnqueue["backoff"]
    if (merged.backoff !== undefined) {
      const baseMs = (yield* durationMs("backoff.base", merged.backoff.base, 0)) ?? defaultBackoff.baseMs
      const maxMs = (yield* durationMs("backoff.max", merged.backoff.max, 0)) ?? Math.max(defaultBackoff.maxMs, baseMs)
      const factor = merged.backoff.factor ?? defaultBackoff.factor
      const problem = Validate.number("backoff.factor", factor, 1, 1000)
      if (problem !== undefined) return yield* new InvalidInput({ field: "backoff.factor", message: problem })
      backoff = { baseMs, factor, maxMs }
    }
    return {
      name: task.name,
      payload: encoded,
      queue: merged.queue,
      namespace: merged.namespace,
      tags: merged.tags,
      priority: merged.priority,
      maxAttempts: merged.maxAttempts,
      timeoutMs: yield* durationMs("timeout", merged.timeout, 1),
      backoff,
      runAt,
      idempotencyKey: merged.idempotencyKey,
      replace: merged.replace,
      debounceMs
    }
  })

/**
 * Checks an already-encoded request against `limits` (every field a user or an attacker controls); the payload's
 * JSON text if it is fine.
 */
export const checkRequest = (request: RawEnqueue): Either.Either<string, InvalidPayload | InvalidInput> => {
  const invalid = (field: string, message: string | undefined) =>
    message === undefined ? undefined : new InvalidInput({ field, message })
  const problem =
    invalid("name", Validate.name("name", request.name)) ??
    (request.queue === undefined ? undefined : invalid("queue", Validate.name("queue", request.queue))) ??
    (request.namespace === undefined
      ? undefined
      : invalid("namespace", Validate.name("namespace", request.namespace))) ??
    (request.tags === undefined ? undefined : invalid("tags", Validate.tags("tags", request.tags))) ??
    (request.idempotencyKey === undefined
      ? undefined
      : invalid("idempotencyKey", Validate.name("idempotencyKey", request.idempotencyKey))) ??
    ((request.replace === true || request.debounceMs !== undefined) && request.idempotencyKey === undefined
      ? invalid(
          request.replace === true ? "replace" : "debounce",
          "needs an idempotencyKey (it applies to a repeated key)"
        )
      : undefined) ??
    (request.debounceMs === undefined
      ? undefined
      : invalid("debounce", Validate.integer("debounce (ms)", request.debounceMs, 1, Validate.maxDurationMs))) ??
    (request.runId === undefined ? undefined : invalid("runId", Validate.name("runId", request.runId))) ??
    (request.chordId === undefined ? undefined : invalid("chordId", Validate.name("chordId", request.chordId))) ??
    (request.chordIndex === undefined
      ? undefined
      : invalid("chordIndex", Validate.integer("chordIndex", request.chordIndex, 0, Validate.maxChordSize - 1))) ??
    (request.priority === undefined
      ? undefined
      : invalid(
          "priority",
          Validate.integer("priority", request.priority, -Validate.maxPriority, Validate.maxPriority)
        )) ??
    (request.maxAttempts === undefined
      ? undefined
      : invalid("maxAttempts", Validate.integer("maxAttempts", request.maxAttempts, 1, Validate.maxAttemptsLimit))) ??
    (request.timeoutMs === undefined
      ? undefined
      : invalid("timeout", Validate.integer("timeout (ms)", request.timeoutMs, 1, Validate.maxDurationMs))) ??
    (request.runAt === undefined
      ? undefined
      : invalid("runAt", Validate.integer("runAt (epoch ms)", request.runAt, 0, Validate.maxEpochMs))) ??
    (request.backoff === undefined
      ? undefined
      : (invalid(
          "backoff.base",
          Validate.number("backoff.baseMs", request.backoff.baseMs, 0, Validate.maxDurationMs)
        ) ??
        invalid("backoff.max", Validate.number("backoff.maxMs", request.backoff.maxMs, 0, Validate.maxDurationMs)) ??
        invalid("backoff.factor", Validate.number("backoff.factor", request.backoff.factor, 1, 1000))))
  if (problem !== undefined) return Either.left(problem)
  const payload = Validate.payloadJson(request.payload)
  if (payload.problem !== undefined)
    return Either.left(new InvalidPayload({ task: String(request.name), message: payload.problem }))
  return Either.right(payload.json)
}
