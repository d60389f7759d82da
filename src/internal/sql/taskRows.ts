/**
 * Task rows (`baton_tasks`): the columns, the row types, the mappers to the contract's types, and the ONE insert that
 * enqueue, bulk enqueue and chord callbacks all use. Adding a task column: this file (the row types, `insertColumns`,
 * `toInsertRow`, `packRow` and the Postgres select list of `makeInsertTasks`, the mappers) and one migration per
 * dialect (docs/architecture.md).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type { Dialect } from "../../Storage.js"
import {
  type ClaimedTask,
  type RawEnqueue,
  type TaskError,
  TaskId,
  type TaskInfo,
  type TaskState
} from "../../TaskQueue.js"
import { defaultBackoff } from "../request.js"
import { byDialect } from "./dialect.js"
import { tasksChannel } from "./wakes.js"
import * as Prepared from "./prepared.js"

/** A whole `baton_tasks` row as read back. */
export interface TaskRow {
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
  readonly trace_context: string | null
  /** Migration 0010: the last reported progress (`progress_at` NULL: none). */
  readonly progress?: number | null
  readonly progress_message?: string | null
  readonly progress_at?: number | null
}

// What a worker needs of a claimed task (fewer columns to send and parse than `*`, per task, on the hot path).
export const claimedColumns = [
  ...["id", "name", "queue", "namespace", "payload", "priority", "attempts", "max_attempts", "timeout_ms"],
  ...["backoff", "run_at", "lease_id", "chord_id", "run_id", "trace_context"]
].join(", ")

/** What the guarded transition to a terminal state returns (`FinishedTask`). */
export const finishedColumns = "id, name, queue, namespace, tags, chord_id, chord_index, run_id"

export const toDate = (ms: number | null): Date | undefined => (ms === null ? undefined : new Date(Number(ms)))

const parseJson = (text: string | null): Option.Option<unknown> => {
  if (text === null) return Option.none()
  try {
    return Option.some(JSON.parse(text))
  } catch {
    return Option.some(text)
  }
}

export const decodeTaskError = Schema.decodeUnknownOption(
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
export const likeSubstring = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

export const toInfo = (row: TaskRow): TaskInfo => ({
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
  finishedAt: toDate(row.finished_at),
  progress:
    row.progress_at == null
      ? undefined
      : {
          value: Number(row.progress ?? 0),
          message: row.progress_message ?? undefined,
          at: new Date(Number(row.progress_at))
        }
})

export const toClaimed = (row: TaskRow): ClaimedTask => {
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
    runId: row.run_id ?? undefined,
    traceContext: decodeTraceContext(row.trace_context)
  }
}

// Effect's default tracer: spans that go nowhere unless a tracer layer replaces it.
const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * The current span's context as stored in `trace_context`, or null when there is no span or no tracer is installed
 * (nothing would read it then).
 */
export const currentTraceContext: Effect.Effect<string | null> = Effect.flatMap(Effect.tracer, (tracer) =>
  tracer === builtInTracer
    ? Effect.succeed(null)
    : Effect.map(Effect.option(Effect.currentSpan), Option.match({ onNone: () => null, onSome: encodeTraceContext }))
)

/**
 * The producer's span context stored with a task (`trace_context`: `{"traceId":…,"spanId":…}`), so the worker's
 * `Worker.execute` span continues the enqueue's trace.
 */
export const encodeTraceContext = (span: { readonly traceId: string; readonly spanId: string }): string =>
  JSON.stringify({ traceId: span.traceId, spanId: span.spanId })

const decodeTraceContext = (text: string | null | undefined): ClaimedTask["traceContext"] => {
  if (text === null || text === undefined) return undefined
  try {
    const parsed = JSON.parse(text) as { traceId?: unknown; spanId?: unknown }
    return typeof parsed.traceId === "string" && typeof parsed.spanId === "string"
      ? { traceId: parsed.traceId, spanId: parsed.spanId }
      : undefined
  } catch {
    return undefined
  }
}

/** A task row that just reached a terminal state, as returned by the guarded UPDATE (`finishedColumns`). */
export interface FinishedTask {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly tags: string
  readonly chord_id: string | null
  readonly chord_index: number | null
  readonly run_id: string | null
}

/** The columns a new task row sets, in insert order. */
export const insertColumns = [
  "id",
  "name",
  "queue",
  "namespace",
  "tags",
  "payload",
  "state",
  "priority",
  "attempts",
  "max_attempts",
  "timeout_ms",
  "backoff",
  "run_at",
  "idempotency_key",
  "chord_id",
  "chord_index",
  "run_id",
  "created_at",
  "updated_at",
  "trace_context"
] as const

/** A new task row (encoded values, JSON text for payload, tags and backoff). */
export interface InsertRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly tags: string
  readonly payload: string
  readonly state: "pending"
  readonly priority: number
  readonly attempts: number
  readonly max_attempts: number
  readonly timeout_ms: number | null
  readonly backoff: string | null
  readonly run_at: number
  readonly idempotency_key: string | null
  readonly chord_id: string | null
  readonly chord_index: number | null
  readonly run_id: string | null
  readonly created_at: number
  readonly updated_at: number
  readonly trace_context: string | null
}

/** The defaults every new task gets: a fresh id, state pending, queue/namespace "default", 3 attempts, run now. */
export const toInsertRow = (request: RawEnqueue, now: number, traceContext: string | null = null): InsertRow => ({
  id: crypto.randomUUID(),
  name: request.name,
  queue: request.queue ?? "default",
  namespace: request.namespace ?? "default",
  tags: JSON.stringify(request.tags ?? []),
  payload: JSON.stringify(request.payload ?? null),
  state: "pending",
  priority: request.priority ?? 0,
  attempts: 0,
  max_attempts: request.maxAttempts ?? 3,
  timeout_ms: request.timeoutMs ?? null,
  backoff: request.backoff === undefined ? null : JSON.stringify(request.backoff),
  run_at: request.runAt ?? now,
  idempotency_key: request.idempotencyKey ?? null,
  chord_id: request.chordId ?? null,
  chord_index: request.chordIndex ?? null,
  run_id: request.runId ?? null,
  created_at: now,
  updated_at: now,
  trace_context: traceContext
})

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
  if (row.trace_context !== null) packed.o = row.trace_context
  return packed
}

/**
 * The ONE task insert: one chunk of new rows (enqueue, bulk enqueue, a chord's body, a chord callback); the ids
 * inserted (all of them, unless an idempotency key conflicted). Postgres: the insert and its NOTIFY (one per queue,
 * delivered at commit) are one statement, atomic on its own. SQLite: the caller wakes its workers.
 */
export type InsertTasks = (rows: ReadonlyArray<InsertRow>) => Effect.Effect<ReadonlyArray<string>, SqlError>

/** The task insert of a dialect, chosen once. */
export const makeInsertTasks = (sql: SqlClient.SqlClient, dialect: Dialect, channelPrefix: string): InsertTasks =>
  byDialect<InsertTasks>(dialect, {
    pg: () => {
      const channel = tasksChannel(channelPrefix)
      // In the order of the SELECT list below.
      const pgColumns = sql`(id, name, queue, namespace, tags, payload, state, priority, attempts, max_attempts, timeout_ms,
        backoff, run_at, idempotency_key, chord_id, chord_index, run_id, created_at, updated_at, trace_context)`
      return (rows) => {
        // A small insert (one enqueue) runs as a named prepared statement; a bulk one gains nothing from it (parsing is
        // nothing next to its JSON) and measured ~5% slower that way (`scratchpad/drain-probe.ts`, enqueue rate).
        const run = <A extends object>(statement: Statement.Statement<A>) =>
          rows.length <= 64 ? Prepared.run(sql, statement) : statement
        // Without an idempotency key nothing can conflict (ids are random UUIDs): a plain INSERT, without the
        // speculative insertion of ON CONFLICT and without sending the ids back, is measurably cheaper per row.
        const keyed = rows.some((row) => row.idempotency_key !== null)
        // The rows travel as one JSON parameter with one-letter keys, nulls left out and the columns every new row
        // shares (state, attempts, timestamps) written in SQL: parsing that JSON is most of the statement's server
        // time, so its size matters (measured: half the bytes, about a third less time per chunk than whole rows).
        const json = JSON.stringify(rows.map(packRow))
        const now = rows[0]!.created_at
        const select = sql`SELECT i, n, q, s, g, p, 'pending', r, 0, m, t, b, a, k, c, x, u, ${now}::bigint, ${now}::bigint, o
          FROM json_to_recordset(${json}::json) AS v(i text, n text, q text, s text, g text, p text, r integer,
            m integer, t integer, b text, a bigint, k text, c text, x integer, u text, o text)`
        if (!keyed) {
          const queues = JSON.stringify([...new Set(rows.map((row) => row.queue))])
          return run(
            sql`WITH ins AS (INSERT INTO baton_tasks ${pgColumns} ${select})
              SELECT pg_notify(${channel}, q) FROM json_array_elements_text(${queues}::json) AS q`
          ).pipe(Effect.as(rows.map((row) => row.id)))
        }
        return run(
          sql<{ id: string }>`WITH ins AS (
              INSERT INTO baton_tasks ${pgColumns} ${select} ON CONFLICT DO NOTHING RETURNING id, queue
            ), notified AS (
              SELECT count(pg_notify(${channel}, queue)) AS n
              FROM (SELECT DISTINCT queue FROM ins) q
            )
            SELECT ins.id FROM ins CROSS JOIN notified`
        ).pipe(Effect.map((result) => result.map((row) => row.id)))
      }
    },
    sqlite: () => {
      const columns = sql.literal(insertColumns.join(", "))
      const select = sql.literal(insertColumns.map((column) => `json_extract(value, '$.${column}')`).join(", "))
      return (rows) => {
        const keyed = rows.some((row) => row.idempotency_key !== null)
        const json = JSON.stringify(rows)
        if (!keyed) {
          return sql`INSERT INTO baton_tasks (${columns}) SELECT ${select} FROM json_each(${json})`.pipe(
            Effect.as(rows.map((row) => row.id))
          )
        }
        return sql<{ id: string }>`INSERT INTO baton_tasks (${columns})
          SELECT ${select} FROM json_each(${json}) WHERE true
          ON CONFLICT DO NOTHING RETURNING id`.pipe(Effect.map((result) => result.map((row) => row.id)))
      }
    }
  })

/**
 * Postgres: the same insert of one row as a statement fragment, for a caller that guards it inside one statement
 * (chord dispatch: `INSERT … SELECT … WHERE EXISTS (guard) ON CONFLICT DO NOTHING RETURNING …`).
 */
export const insertRecordPg = (sql: SqlClient.SqlClient, row: InsertRow): Statement.Fragment =>
  sql`INSERT INTO baton_tasks (${sql.literal(insertColumns.join(", "))})
    SELECT ${sql.literal(insertColumns.join(", "))}
    FROM json_populate_record(NULL::baton_tasks, ${JSON.stringify(row)}::json)`

/** The id of the task that holds `row`'s idempotency key (the one its insert lost to), if any. */
export const findByIdempotencyKey = (sql: SqlClient.SqlClient, row: Pick<InsertRow, "namespace" | "idempotency_key">) =>
  Effect.map(
    sql<{ id: string }>`SELECT id FROM baton_tasks
      WHERE namespace = ${row.namespace} AND idempotency_key = ${row.idempotency_key}`,
    (rows) => rows[0]?.id
  )

/** The guarded transition of tasks to a terminal state: `UPDATE … SET set WHERE where RETURNING finishedColumns`. */
export const guardedFinish = (
  sql: SqlClient.SqlClient,
  set: Statement.Statement<unknown>,
  where: Statement.Statement<unknown>
) => sql<FinishedTask>`UPDATE baton_tasks SET ${set} WHERE ${where} RETURNING ${sql.literal(finishedColumns)}`
