/**
 * `TaskQueue` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (same code, two dialects).
 *
 * - Claims are one statement: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING` on
 *   Postgres, `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING` on SQLite (one writer at a time), so two workers
 *   never hold a valid lease on the same task.
 * - Completions are batched: one transaction completes many tasks, each guarded by `id AND lease_id AND
 *   state = 'running'`, and appends their completion events (and NOTIFY) in that same transaction.
 * - Bulk enqueue sends one JSON parameter (`json_populate_recordset` / `json_each`) instead of thousands of
 *   placeholders.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as PgListener from "./internal/pgListener.js"
import * as Validate from "./internal/validate.js"
import { insertColumns, type InsertRow } from "./internal/taskRow.js"
import * as TaskRow from "./internal/taskRow.js"
import {
  completionsChannel,
  onEnqueued,
  recordChordBodies,
  recordFinished,
  tasksChannel,
  type FinishedTask
} from "./internal/completionLog.js"
import { Storage } from "./Storage.js"
import type * as Task from "./Task.js"
import {
  type ClaimedTask,
  InvalidInput,
  InvalidPayload,
  type QueueStats,
  type RawEnqueue,
  type TaskError,
  TaskId,
  type TaskInfo,
  type TaskListFilter,
  TaskNotFound,
  type TaskPage,
  TaskQueue,
  type TaskState
} from "./TaskQueue.js"

const defaultBackoff = { baseMs: 1000, factor: 2, maxMs: 5 * 60_000 }

interface TaskRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly tags: string
  readonly payload: string
  readonly state: TaskState
  readonly priority: number
  readonly attempts: number
  readonly max_attempts: number
  readonly timeout_ms: number | null
  readonly backoff: string | null
  readonly run_at: number
  readonly lease_id: string | null
  readonly lease_expires_at: number | null
  readonly worker_id: string | null
  readonly idempotency_key: string | null
  readonly result: string | null
  readonly error: string | null
  readonly chord_id: string | null
  readonly chord_index: number | null
  readonly run_id: string | null
  readonly created_at: number
  readonly updated_at: number
  readonly started_at: number | null
  readonly finished_at: number | null
}

// What a worker needs of a claimed task (fewer columns to send and parse than `*`, per task, on the hot path).
const claimedColumns = [
  ...["id", "name", "queue", "namespace", "payload", "priority", "attempts", "max_attempts", "timeout_ms"],
  ...["backoff", "run_at", "lease_id", "chord_id", "run_id"]
].join(", ")

const finishedColumns = "id, name, queue, namespace, tags, chord_id, chord_index, run_id"

const toDate = (ms: number | null): Date | undefined => (ms === null ? undefined : new Date(Number(ms)))

const parseJson = (text: string | null): Option.Option<unknown> => {
  if (text === null) return Option.none()
  try {
    return Option.some(JSON.parse(text))
  } catch {
    return Option.some(text)
  }
}

const decodeTaskError = Schema.decodeUnknownOption(
  Schema.parseJson(
    Schema.Struct({
      kind: Schema.String,
      message: Schema.String,
      attempt: Schema.Number,
      error: Schema.optional(Schema.Unknown)
    })
  )
)

// A LIKE pattern matching `text` anywhere, its wildcards escaped (with `ESCAPE '\'`): matched literally. The text
// is a bound parameter, never SQL.
const likeSubstring = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

const toInfo = (row: TaskRow): TaskInfo => ({
  id: TaskId.make(row.id),
  name: row.name,
  queue: row.queue,
  namespace: row.namespace,
  tags: JSON.parse(row.tags) as ReadonlyArray<string>,
  state: row.state,
  priority: Number(row.priority),
  attempts: Number(row.attempts),
  maxAttempts: Number(row.max_attempts),
  payload: Option.getOrUndefined(parseJson(row.payload)),
  result: parseJson(row.result),
  error: row.error === null ? Option.none() : (decodeTaskError(row.error) as Option.Option<TaskError>),
  idempotencyKey: row.idempotency_key ?? undefined,
  chordId: row.chord_id ?? undefined,
  runId: row.run_id ?? undefined,
  runAt: new Date(Number(row.run_at)),
  createdAt: new Date(Number(row.created_at)),
  updatedAt: new Date(Number(row.updated_at)),
  startedAt: toDate(row.started_at),
  finishedAt: toDate(row.finished_at)
})

const toClaimed = (row: TaskRow): ClaimedTask => {
  let backoff = defaultBackoff
  if (row.backoff !== null) {
    try {
      backoff = { ...defaultBackoff, ...(JSON.parse(row.backoff) as object) }
    } catch {
      // keep the default
    }
  }
  return {
    id: TaskId.make(row.id),
    name: row.name,
    queue: row.queue,
    namespace: row.namespace,
    payload: row.payload,
    attempt: Number(row.attempts),
    maxAttempts: Number(row.max_attempts),
    timeoutMs: row.timeout_ms === null ? undefined : Number(row.timeout_ms),
    backoff,
    leaseId: row.lease_id ?? "",
    chordId: row.chord_id ?? undefined,
    runId: row.run_id ?? undefined
  }
}

/** Checks one duration option; its milliseconds, or an `InvalidInput` naming the field. */
const durationMs = (
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
      idempotencyKey: merged.idempotencyKey
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

/** A new row as sent to Postgres: short keys (see `insertRows`), nulls and per-statement constants left out. */
const packRow = (row: InsertRow): Record<string, unknown> => {
  const packed: Record<string, unknown> = {
    i: row.id,
    n: row.name,
    q: row.queue,
    s: row.namespace,
    g: row.tags,
    p: row.payload,
    r: row.priority,
    m: row.max_attempts,
    a: row.run_at
  }
  if (row.timeout_ms !== null) packed.t = row.timeout_ms
  if (row.backoff !== null) packed.b = row.backoff
  if (row.idempotency_key !== null) packed.k = row.idempotency_key
  if (row.chord_id !== null) packed.c = row.chord_id
  if (row.chord_index !== null) packed.x = row.chord_index
  if (row.run_id !== null) packed.u = row.run_id
  return packed
}

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const dialect = storage.dialect
  const wakeHub = yield* PubSub.sliding<string>(64)
  if (dialect === "sqlite") {
    // Tasks enqueued inside this process's transactions by others (a chord callback dispatched by a completion).
    const unregister = onEnqueued(sql, (queues) => {
      for (const queue of new Set(queues)) wakeHub.unsafeOffer(queue)
    })
    yield* Effect.addFinalizer(() => Effect.sync(unregister))
  }
  // Claims and lease extensions commit without waiting for the WAL flush (Postgres `synchronous_commit = off`
  // for that one statement's transaction). Losing one in a server crash is harmless: the task is simply still
  // pending (or its lease shorter), and execution is at-least-once anyway. It never weakens a completion: a
  // completion's synchronous commit flushes the WAL up to itself, including the claim before it. This takes a
  // commit's fsync off the claim path, which is what bounds a worker's claim rate.
  const asyncCommit = dialect === "pg" ? sql`set_config('synchronous_commit', 'off', true) IS NOT NULL` : sql`1 = 1`

  const columns = sql.literal(insertColumns.join(", "))
  const sqliteSelect = sql.literal(insertColumns.map((column) => `json_extract(value, '$.${column}')`).join(", "))

  // In the order of `insertRows`' SELECT list.
  const pgColumns = sql`(id, name, queue, namespace, tags, payload, state, priority, attempts, max_attempts, timeout_ms,
    backoff, run_at, idempotency_key, chord_id, chord_index, run_id, created_at, updated_at)`

  /** Inserts one chunk of rows; returns the ids inserted (all of them, unless an idempotency key conflicted). */
  const insertRows = (rows: ReadonlyArray<InsertRow>): Effect.Effect<ReadonlyArray<string>, SqlError> => {
    // Without an idempotency key nothing can conflict (ids are random UUIDs): a plain INSERT, without the
    // speculative insertion of ON CONFLICT and without sending the ids back, is measurably cheaper per row.
    const keyed = rows.some((row) => row.idempotency_key !== null)
    if (dialect === "pg") {
      // The rows travel as one JSON parameter with one-letter keys, nulls left out and the columns every new row
      // shares (state, attempts, timestamps) written in SQL: parsing that JSON is most of the statement's server
      // time, so its size matters (measured: half the bytes, about a third less time per chunk than whole rows).
      const json = JSON.stringify(rows.map(packRow))
      const now = rows[0]!.created_at
      const select = sql`SELECT i, n, q, s, g, p, 'pending', r, 0, m, t, b, a, k, c, x, u, ${now}::bigint, ${now}::bigint
        FROM json_to_recordset(${json}::json) AS v(i text, n text, q text, s text, g text, p text, r integer,
          m integer, t integer, b text, a bigint, k text, c text, x integer, u text)`
      // The insert and its NOTIFY (one per queue, delivered at commit) in one statement: one round trip, and
      // atomic on its own, so a single enqueue needs no explicit transaction.
      const channel = tasksChannel(storage.channelPrefix)
      if (!keyed) {
        const queues = JSON.stringify([...new Set(rows.map((row) => row.queue))])
        return sql`WITH ins AS (INSERT INTO baton_tasks ${pgColumns} ${select})
          SELECT pg_notify(${channel}, q) FROM json_array_elements_text(${queues}::json) AS q`.pipe(
          Effect.as(rows.map((row) => row.id))
        )
      }
      return sql<{ id: string }>`WITH ins AS (
          INSERT INTO baton_tasks ${pgColumns} ${select} ON CONFLICT DO NOTHING RETURNING id, queue
        ), notified AS (
          SELECT count(pg_notify(${channel}, queue)) AS n
          FROM (SELECT DISTINCT queue FROM ins) q
        )
        SELECT ins.id FROM ins CROSS JOIN notified`.pipe(Effect.map((result) => result.map((row) => row.id)))
    }
    const json = JSON.stringify(rows)
    if (!keyed) {
      return sql`INSERT INTO baton_tasks (${columns}) SELECT ${sqliteSelect} FROM json_each(${json})`.pipe(
        Effect.as(rows.map((row) => row.id))
      )
    }
    return sql<{ id: string }>`INSERT INTO baton_tasks (${columns})
      SELECT ${sqliteSelect} FROM json_each(${json}) WHERE true
      ON CONFLICT DO NOTHING RETURNING id`.pipe(Effect.map((result) => result.map((row) => row.id)))
  }

  const notifyQueues = (queues: Iterable<string>) =>
    dialect === "pg"
      ? Effect.forEach(
          new Set(queues),
          (queue) => sql`SELECT pg_notify(${tasksChannel(storage.channelPrefix)}, ${queue})`,
          { discard: true }
        )
      : Effect.void

  const chunk = 5000
  const enqueueRaw = (requests: ReadonlyArray<RawEnqueue>) =>
    Effect.gen(function* () {
      if (requests.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      // Every request is checked before anything is written: one bad request fails the whole batch.
      const rows: Array<InsertRow> = []
      for (const request of requests) {
        const checked = checkRequest(request)
        if (Either.isLeft(checked)) return yield* checked.left
        rows.push({ ...TaskRow.toInsertRow({ ...request, payload: null }, now), payload: checked.right })
      }
      const insertAll = Effect.gen(function* () {
        const inserted = new Set<string>()
        // Chunked so a huge enqueue does not build one giant statement.
        for (let i = 0; i < rows.length; i += chunk) {
          for (const id of yield* insertRows(rows.slice(i, i + chunk))) inserted.add(id)
        }
        const result: Array<string> = []
        for (const row of rows) {
          if (inserted.has(row.id as string)) {
            result.push(row.id as string)
            continue
          }
          // Lost to an existing task with the same idempotency key: return that task.
          const existing = yield* sql<{ id: string }>`SELECT id FROM baton_tasks
              WHERE namespace = ${row.namespace} AND idempotency_key = ${row.idempotency_key}`
          const found = existing[0]
          if (found === undefined) {
            return yield* Effect.dieMessage(`enqueue: task ${row.id} was neither inserted nor found`)
          }
          result.push(found.id)
        }
        return result
      })
      // Postgres: up to one chunk is one statement (insert + NOTIFY), atomic without a transaction of its own (it
      // still joins the caller's). A task that lost to an existing idempotency key is looked up afterwards: that
      // task is committed (the conflicting insert waited for it). SQLite batches are short and local anyway.
      const ids = yield* dialect === "pg" && rows.length <= chunk ? insertAll : sql.withTransaction(insertAll)
      yield* Effect.forEach(new Set(rows.map((row) => row.queue as string)), (queue) => PubSub.publish(wakeHub, queue))
      return ids.map((id) => TaskId.make(id))
    }).pipe(Effect.withSpan("TaskQueue.enqueueRaw", { attributes: { count: requests.length } }))

  const enqueueMany = (calls: Iterable<Task.TaskCall>) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const requests = yield* Effect.forEach(calls, (call) => encodeCall(call.task, call.payload, call.options, now))
      return yield* enqueueRaw(requests)
    })

  const enqueue = <T extends Task.Any>(task: T, payload: Task.Payload<T>, options: Task.EnqueueOptions = {}) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const request = yield* encodeCall(task, payload, options, now)
      const ids = yield* enqueueRaw([request])
      return ids[0]!
    }).pipe(Effect.withSpan("TaskQueue.enqueue", { attributes: { task: task.name } }))

  const findRow = (taskId: string) =>
    sql<TaskRow>`SELECT * FROM baton_tasks WHERE id = ${taskId}`.pipe(
      Effect.flatMap((rows) =>
        rows[0] === undefined ? Effect.fail(new TaskNotFound({ taskId })) : Effect.succeed(rows[0])
      )
    )

  const get = (taskId: string) => Effect.map(findRow(taskId), toInfo).pipe(Effect.withSpan("TaskQueue.get"))

  const result = <T extends Task.Any>(task: T, taskId: string) =>
    Effect.gen(function* () {
      const row = yield* findRow(taskId)
      if (row.state !== "succeeded" || row.result === null) return Option.none()
      const decoded = yield* Schema.decodeUnknown(Schema.parseJson(task.success as Schema.Schema<unknown, unknown>))(
        row.result
      ).pipe(Effect.orDie)
      return Option.some(decoded as Task.Success<T>)
    })

  const guardedFinish = (set: Statement.Statement<unknown>, where: Statement.Statement<unknown>) =>
    sql<FinishedTask>`UPDATE baton_tasks SET ${set} WHERE ${where} RETURNING ${sql.literal(finishedColumns)}`

  const cancel = (taskId: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const error = JSON.stringify({ kind: "cancelled", message: "cancelled", attempt: 0 })
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* guardedFinish(
            sql`state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, error = ${error},
                finished_at = ${now}, updated_at = ${now}`,
            sql`id = ${taskId} AND state IN ('pending', 'running')`
          )
          yield* recordFinished(sql, dialect, storage.channelPrefix, rows, "cancelled", now)
          return rows.length > 0
        })
      )
    }).pipe(Effect.withSpan("TaskQueue.cancel"))

  // A manual retry of a task that ended badly. Chord body tasks are refused: their chord counted them and decided
  // (failed, no callback), so running them again could not change the outcome, only confuse it.
  const retry = (taskId: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<{ id: string; queue: string }>`UPDATE baton_tasks SET state = 'pending', attempts = 0,
        run_at = ${now}, lease_id = NULL, lease_expires_at = NULL, worker_id = NULL, result = NULL,
        finished_at = NULL, updated_at = ${now}
        WHERE id = ${taskId} AND state IN ('dead', 'failed') AND chord_id IS NULL RETURNING id, queue`
      if (rows.length === 0) return false
      yield* notifyQueues(rows.map((row) => row.queue))
      yield* PubSub.publish(wakeHub, rows[0]!.queue)
      return true
    }).pipe(Effect.withSpan("TaskQueue.retry", { attributes: { taskId } }))

  const counts = sql<{ state: TaskState; n: number }>`SELECT state, count(*) AS n FROM baton_tasks GROUP BY state`.pipe(
    Effect.map((rows) => {
      const out: Record<TaskState, number> = {
        pending: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        dead: 0,
        cancelled: 0
      }
      for (const row of rows) out[row.state] = Number(row.n)
      return out
    })
  )

  const emptyCounts = (): Record<TaskState, number> => ({
    pending: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    dead: 0,
    cancelled: 0
  })

  const list = (
    filter: TaskListFilter = {},
    page: { readonly limit?: number | undefined; readonly offset?: number | undefined } = {}
  ) =>
    Effect.gen(function* () {
      const limit = Math.min(1000, Math.max(1, Math.floor(page.limit ?? 50)))
      const offset = Math.max(0, Math.floor(page.offset ?? 0))
      const conditions = [
        filter.state === undefined ? undefined : sql`state = ${filter.state}`,
        filter.queue === undefined ? undefined : sql`queue = ${filter.queue}`,
        filter.name === undefined ? undefined : sql`name = ${filter.name}`,
        filter.runId === undefined ? undefined : sql`run_id = ${filter.runId}`,
        filter.chordId === undefined ? undefined : sql`chord_id = ${filter.chordId}`,
        filter.search === undefined
          ? undefined
          : sql`(id = ${filter.search} OR name LIKE ${likeSubstring(filter.search)} ESCAPE '\\')`
      ].filter((condition) => condition !== undefined)
      const where = conditions.length === 0 ? sql`1 = 1` : sql.and(conditions)
      const rows = yield* sql<
        Pick<
          TaskRow,
          | "id"
          | "name"
          | "queue"
          | "state"
          | "attempts"
          | "max_attempts"
          | "error"
          | "chord_id"
          | "run_id"
          | "created_at"
          | "updated_at"
          | "finished_at"
        >
      >`SELECT id, name, queue, state, attempts, max_attempts, error, chord_id, run_id, created_at, updated_at,
          finished_at FROM baton_tasks WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT ${limit} OFFSET ${offset}`
      const total = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE ${where}`
      return {
        total: Number(total[0]?.n ?? 0),
        items: rows.map((row) => ({
          id: TaskId.make(row.id),
          name: row.name,
          queue: row.queue,
          state: row.state,
          attempts: Number(row.attempts),
          maxAttempts: Number(row.max_attempts),
          error: row.error === null ? Option.none() : (decodeTaskError(row.error) as Option.Option<TaskError>),
          chordId: row.chord_id ?? undefined,
          runId: row.run_id ?? undefined,
          createdAt: new Date(Number(row.created_at)),
          updatedAt: new Date(Number(row.updated_at)),
          finishedAt: toDate(row.finished_at)
        }))
      } satisfies TaskPage
    }).pipe(Effect.withSpan("TaskQueue.list"))

  const queueStats = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const rows = yield* sql<{ queue: string; state: TaskState; n: number }>`SELECT queue, state, count(*) AS n
      FROM baton_tasks GROUP BY queue, state`
    const byQueue = new Map<string, Record<TaskState, number>>()
    for (const row of rows) {
      const counts = byQueue.get(row.queue) ?? emptyCounts()
      counts[row.state] = Number(row.n)
      byQueue.set(row.queue, counts)
    }
    // Per queue, the claim index (queue, priority, run_at WHERE pending) answers this without a scan.
    const oldest = yield* sql<{ queue: string; run_at: number }>`SELECT queue, min(run_at) AS run_at FROM baton_tasks
      WHERE state = 'pending' AND run_at <= ${now} GROUP BY queue`
    const oldestByQueue = new Map<string, { id: TaskId; name: string; runAt: Date }>()
    for (const { queue, run_at } of oldest) {
      const [task] = yield* sql<{ id: string; name: string }>`SELECT id, name FROM baton_tasks
        WHERE queue = ${queue} AND state = 'pending' AND run_at = ${run_at} ORDER BY id LIMIT 1`
      if (task !== undefined) {
        oldestByQueue.set(queue, { id: TaskId.make(task.id), name: task.name, runAt: new Date(Number(run_at)) })
      }
    }
    return [...byQueue.keys()].sort().map((queue): QueueStats => ({
      queue,
      counts: byQueue.get(queue)!,
      oldestWaiting: Option.fromNullable(oldestByQueue.get(queue))
    }))
  }).pipe(Effect.withSpan("TaskQueue.queueStats"))

  const claim = (options: {
    readonly queues: ReadonlyArray<string>
    readonly limit: number
    readonly leaseMs: number
    readonly workerId: string
  }) =>
    Effect.gen(function* () {
      if (options.limit <= 0 || options.queues.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const leaseId = crypto.randomUUID()
      const expires = now + options.leaseMs
      const set = sql`state = 'running', attempts = attempts + 1, lease_id = ${leaseId},
        lease_expires_at = ${expires}, worker_id = ${options.workerId}, started_at = COALESCE(started_at, ${now}),
        updated_at = ${now}`
      const rows =
        dialect === "pg"
          ? yield* sql<TaskRow>`UPDATE baton_tasks SET ${set} WHERE id IN (
              SELECT id FROM baton_tasks WHERE state = 'pending' AND queue IN ${sql.in(options.queues)}
                AND run_at <= ${now}
              ORDER BY priority DESC, run_at LIMIT ${options.limit} FOR UPDATE SKIP LOCKED
            ) AND ${asyncCommit} RETURNING ${sql.literal(claimedColumns)}`
          : yield* sql<TaskRow>`UPDATE baton_tasks SET ${set} WHERE id IN (
              SELECT id FROM baton_tasks WHERE state = 'pending' AND queue IN ${sql.in(options.queues)}
                AND run_at <= ${now}
              ORDER BY priority DESC, run_at LIMIT ${options.limit}
            ) RETURNING ${sql.literal(claimedColumns)}`
      // RETURNING does not preserve the subquery's order.
      return [...rows]
        .sort((a, b) => Number(b.priority) - Number(a.priority) || Number(a.run_at) - Number(b.run_at))
        .map(toClaimed)
    })

  const heartbeat = (leases: ReadonlyArray<{ readonly id: string; readonly leaseId: string }>, leaseMs: number) =>
    Effect.gen(function* () {
      if (leases.length === 0) return new Set<string>()
      const now = yield* Clock.currentTimeMillis
      const leaseIds = [...new Set(leases.map((lease) => lease.leaseId))]
      // Postgres: SKIP LOCKED, so a heartbeat never waits on (or deadlocks with) a completion batch holding some of
      // the same rows; a row being completed needs no extension.
      const rows =
        dialect === "pg"
          ? yield* sql<{ id: string }>`UPDATE baton_tasks SET lease_expires_at = ${now + leaseMs},
              updated_at = ${now} WHERE id IN (
                SELECT id FROM baton_tasks WHERE state = 'running' AND lease_id IN ${sql.in(leaseIds)}
                ORDER BY id FOR UPDATE SKIP LOCKED
              ) AND ${asyncCommit} RETURNING id`
          : yield* sql<{ id: string }>`UPDATE baton_tasks SET lease_expires_at = ${now + leaseMs},
              updated_at = ${now} WHERE state = 'running' AND lease_id IN ${sql.in(leaseIds)} AND ${asyncCommit}
              RETURNING id`
      return new Set(rows.map((row) => row.id))
    })

  type Completion = {
    readonly id: string
    readonly leaseId: string
    readonly result: unknown
    readonly chordId?: string | undefined
  }

  // Postgres: the guarded UPDATE, its completions-log rows and their NOTIFY as ONE statement. (The NOTIFY is a column
  // of the result on purpose: a join the result does not read from is removed by the planner, and its NOTIFY with it.) `plainOnly` leaves
  // chord body tasks alone (their counters must move in the same transaction: see `complete`).
  const completePg = (json: string, now: number, plainOnly: boolean) =>
    sql<FinishedTask>`WITH done AS (
        UPDATE baton_tasks t SET state = 'succeeded', result = v.result,
          lease_id = NULL, lease_expires_at = NULL, finished_at = ${now}, updated_at = ${now}
        FROM json_to_recordset(${json}::json) AS v(id text, lease_id text, result text)
        WHERE t.id = v.id AND t.lease_id = v.lease_id AND t.state = 'running'
          ${plainOnly ? sql`AND t.chord_id IS NULL` : sql``}
        RETURNING t.id, t.name, t.queue, t.namespace, t.tags, t.chord_id, t.chord_index, t.run_id
      ), log AS (
        INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
        SELECT 'task', id, name, queue, namespace, tags, 'succeeded', chord_id, run_id, ${now}::bigint FROM done
        RETURNING seq
      ), notified AS (
        SELECT pg_notify(${completionsChannel(storage.channelPrefix)}, max(seq)::text) AS n FROM log HAVING count(*) > 0
      )
      SELECT done.*, (SELECT count(*) FROM notified) AS notified FROM done`

  const completeSqlite = (json: string, now: number) =>
    sql<FinishedTask>`UPDATE baton_tasks SET state = 'succeeded', result = v.result,
        lease_id = NULL, lease_expires_at = NULL, finished_at = ${now}, updated_at = ${now}
      FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.lease_id') AS lease_id,
              json_extract(value, '$.result') AS result FROM json_each(${json})) AS v
      WHERE baton_tasks.id = v.id AND baton_tasks.lease_id = v.lease_id AND baton_tasks.state = 'running'
      RETURNING baton_tasks.id, baton_tasks.name, baton_tasks.queue, baton_tasks.namespace,
        baton_tasks.tags, baton_tasks.chord_id, baton_tasks.chord_index, baton_tasks.run_id`

  const completionsJson = (completions: ReadonlyArray<Completion>) =>
    JSON.stringify(
      completions.map((c) => ({ id: c.id, lease_id: c.leaseId, result: JSON.stringify(c.result ?? null) }))
    )

  // In one transaction: the guarded UPDATE, the log rows (and NOTIFY), and the chord counters of body tasks.
  const completeInTransaction = (completions: ReadonlyArray<Completion>, now: number) =>
    sql.withTransaction(
      Effect.gen(function* () {
        const json = completionsJson(completions)
        if (dialect === "pg") {
          const rows = yield* completePg(json, now, false)
          yield* recordChordBodies(sql, dialect, storage.channelPrefix, rows, "succeeded", now)
          return rows
        }
        const rows = yield* completeSqlite(json, now)
        yield* recordFinished(sql, dialect, storage.channelPrefix, rows, "succeeded", now)
        return rows
      })
    )

  const complete = (completions: ReadonlyArray<Completion>) =>
    Effect.gen(function* () {
      if (completions.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const done = new Set<string>()
      if (dialect === "pg" && completions.every((c) => c.chordId === undefined)) {
        // No chord body task announced: one autocommitted statement (a round trip, not four), which skips any chord
        // body task after all; those (and tasks whose lease was lost) go through the transactional path below.
        for (const row of yield* completePg(completionsJson(completions), now, true)) done.add(row.id)
        const rest = completions.filter((c) => !done.has(c.id))
        if (rest.length > 0) for (const row of yield* completeInTransaction(rest, now)) done.add(row.id)
      } else {
        for (const row of yield* completeInTransaction(completions, now)) done.add(row.id)
      }
      return completions.map((c) => done.has(c.id))
    })

  const fail = (id: string, leaseId: string, error: TaskError, disposition: ClaimedDisposition) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const errorText = JSON.stringify(error)
      if (disposition._tag === "Retry") {
        const rows = yield* sql<{ id: string }>`UPDATE baton_tasks SET state = 'pending', lease_id = NULL,
          lease_expires_at = NULL, run_at = ${disposition.runAt}, error = ${errorText}, updated_at = ${now}
          WHERE id = ${id} AND lease_id = ${leaseId} AND state = 'running' RETURNING id`
        return rows.length > 0
      }
      const state = disposition._tag === "Dead" ? "dead" : "failed"
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* guardedFinish(
            sql`state = ${state}, lease_id = NULL, lease_expires_at = NULL, error = ${errorText},
                finished_at = ${now}, updated_at = ${now}`,
            sql`id = ${id} AND lease_id = ${leaseId} AND state = 'running'`
          )
          yield* recordFinished(sql, dialect, storage.channelPrefix, rows, state, now)
          return rows.length > 0
        })
      )
    })

  const release = (id: string, leaseId: string, error: TaskError) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      // The attempt did not run to an outcome, so it is not counted.
      const rows = yield* sql<{ id: string }>`UPDATE baton_tasks SET state = 'pending', lease_id = NULL,
        lease_expires_at = NULL, attempts = attempts - 1, run_at = ${now}, error = ${JSON.stringify(error)},
        updated_at = ${now} WHERE id = ${id} AND lease_id = ${leaseId} AND state = 'running' RETURNING id`
      return rows.length > 0
    })

  const reclaimExpired = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    return yield* sql.withTransaction(
      Effect.gen(function* () {
        // Back to pending first (touches only task rows), then the dead ones (whose chord bookkeeping takes chord
        // row locks): the same lock order as completions, so the two cannot deadlock.
        const retryError = JSON.stringify({ kind: "lease_expired", message: "lease expired", attempt: 0 })
        const back = yield* sql<{ id: string; queue: string }>`UPDATE baton_tasks SET state = 'pending',
          lease_id = NULL, lease_expires_at = NULL, run_at = ${now}, error = ${retryError}, updated_at = ${now}
          WHERE state = 'running' AND lease_expires_at < ${now} AND attempts < max_attempts RETURNING id, queue`
        if (back.length > 0) yield* notifyQueues(back.map((row) => row.queue))
        const deadError = JSON.stringify({
          kind: "lease_expired",
          message: "lease expired; no attempts left",
          attempt: 0
        })
        const dead = yield* guardedFinish(
          sql`state = 'dead', lease_id = NULL, lease_expires_at = NULL, error = ${deadError},
              finished_at = ${now}, updated_at = ${now}`,
          sql`state = 'running' AND lease_expires_at < ${now} AND attempts >= max_attempts`
        )
        yield* recordFinished(sql, dialect, storage.channelPrefix, dead, "dead", now)
        return dead.length + back.length
      })
    )
  }).pipe(Effect.withSpan("TaskQueue.reclaimExpired"))

  return TaskQueue.of({
    enqueue,
    enqueueMany,
    enqueueRaw,
    get,
    result,
    cancel,
    retry,
    list,
    queueStats,
    counts,
    claim,
    heartbeat,
    complete,
    fail,
    release,
    reclaimExpired,
    // In-process enqueues, plus NOTIFY from other processes on Postgres (the shared LISTEN connection). Missed
    // notifications (connection down) are covered by the worker's polling.
    wakeups:
      storage.pg === undefined
        ? Stream.fromPubSub(wakeHub)
        : Stream.merge(Stream.fromPubSub(wakeHub), PgListener.payloads(storage.pg, tasksChannel(storage.channelPrefix)))
  })
})

type ClaimedDisposition = Parameters<TaskQueue["Type"]["fail"]>[3]

/** The layer; requires a storage layer (`Storage.layerPg`, `layerSqlite`, `layerMemory`). */
export const layer: Layer.Layer<TaskQueue, never, SqlClient.SqlClient | Storage> = Layer.scoped(TaskQueue, make)
