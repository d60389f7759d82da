/**
 * The statements of `QueueControl` (`baton_queues`) and the claim of a queue that has a limit.
 *
 * A `baton_queues` row exists only while its queue has a setting: every write that leaves a queue unpaused with no
 * limit deletes the row. The task queue's ordinary claim excludes every queue with a row (`queue NOT IN (SELECT queue
 * FROM baton_queues)`, an empty table in the common case); queues with limits are claimed by `claimLimited` below, one
 * transaction per queue whose first statement locks the queue's row (an UPDATE, which is also SQLite's write lock).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { QueueControl, type QueueSettings, type RateLimit } from "../../QueueControl.js"
import { Storage } from "../../Storage.js"
import { InvalidInput } from "../../TaskQueue.js"
import * as Validate from "../validate.js"
import type { TaskRow } from "./taskRows.js"
import { makeWakeQueues } from "./wakes.js"

/** A `baton_queues` row. */
export interface QueueRow {
  readonly queue: string
  readonly paused: number
  readonly rate_limit: number | null
  readonly rate_interval_ms: number | null
  readonly concurrency_limit: number | null
  readonly window_start: number
  readonly window_count: number
}

const toSettings = (row: QueueRow): QueueSettings => ({
  queue: row.queue,
  paused: Number(row.paused) !== 0,
  rateLimit:
    row.rate_limit === null ? undefined : { limit: Number(row.rate_limit), intervalMs: Number(row.rate_interval_ms) },
  concurrencyLimit: row.concurrency_limit === null ? undefined : Number(row.concurrency_limit)
})

const checkQueue = (queue: string) => {
  const problem = Validate.name("queue", queue)
  return problem === undefined ? Effect.void : Effect.fail(new InvalidInput({ field: "queue", message: problem }))
}

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const wake = makeWakeQueues(sql, storage.dialect, storage.channelPrefix)

  // Upserts one setting, then drops the row if nothing is set any more; wakes the queue's workers.
  const write = (queue: string, set: Statement.Fragment, insert: Partial<Omit<QueueRow, "queue">>) =>
    Effect.gen(function* () {
      yield* checkQueue(queue)
      const now = yield* Clock.currentTimeMillis
      const row = {
        queue,
        paused: 0,
        rate_limit: null,
        rate_interval_ms: null,
        concurrency_limit: null,
        ...insert,
        updated_at: now
      }
      yield* sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`INSERT INTO baton_queues ${sql.insert(row)}
            ON CONFLICT (queue) DO UPDATE SET ${set}, updated_at = ${now}`
          yield* sql`DELETE FROM baton_queues WHERE queue = ${queue} AND paused = 0 AND rate_limit IS NULL
            AND concurrency_limit IS NULL`
          yield* wake([queue])
        })
      )
    })

  const get = (queue: string) =>
    Effect.map(sql<QueueRow>`SELECT * FROM baton_queues WHERE queue = ${queue}`, (rows): QueueSettings =>
      rows[0] === undefined
        ? { queue, paused: false, rateLimit: undefined, concurrencyLimit: undefined }
        : toSettings(rows[0])
    ).pipe(Effect.withSpan("QueueControl.get"))

  const setRateLimit = (queue: string, limit: RateLimit | undefined) =>
    Effect.gen(function* () {
      if (limit === undefined) {
        return yield* write(queue, sql`rate_limit = NULL, rate_interval_ms = NULL`, {})
      }
      const problem = Validate.integer("rate limit", limit.limit, 1, Validate.maxPriority)
      if (problem !== undefined) return yield* new InvalidInput({ field: "rateLimit.limit", message: problem })
      const decoded = Duration.decodeUnknown(limit.interval)
      const intervalMs = decoded._tag === "Some" ? Duration.toMillis(decoded.value) : NaN
      const intervalProblem = Validate.integer("rate interval (ms)", Math.round(intervalMs), 1, Validate.maxDurationMs)
      if (intervalProblem !== undefined || !Number.isFinite(intervalMs)) {
        return yield* new InvalidInput({
          field: "rateLimit.interval",
          message: intervalProblem ?? "rate interval must be a finite duration"
        })
      }
      const ms = Math.round(intervalMs)
      // A new limit starts a fresh window.
      yield* write(
        queue,
        sql`rate_limit = ${limit.limit}, rate_interval_ms = ${ms}, window_start = 0, window_count = 0`,
        { rate_limit: limit.limit, rate_interval_ms: ms }
      )
    }).pipe(Effect.withSpan("QueueControl.setRateLimit", { attributes: { queue } }))

  const setConcurrencyLimit = (queue: string, limit: number | undefined) =>
    Effect.gen(function* () {
      if (limit === undefined) return yield* write(queue, sql`concurrency_limit = NULL`, {})
      const problem = Validate.integer("concurrency limit", limit, 1, Validate.maxPriority)
      if (problem !== undefined) return yield* new InvalidInput({ field: "concurrencyLimit", message: problem })
      yield* write(queue, sql`concurrency_limit = ${limit}`, { concurrency_limit: limit })
    }).pipe(Effect.withSpan("QueueControl.setConcurrencyLimit", { attributes: { queue } }))

  return QueueControl.of({
    pause: (queue) =>
      write(queue, sql`paused = 1`, { paused: 1 }).pipe(
        Effect.withSpan("QueueControl.pause", { attributes: { queue } })
      ),
    resume: (queue) =>
      write(queue, sql`paused = 0`, {}).pipe(Effect.withSpan("QueueControl.resume", { attributes: { queue } })),
    setRateLimit,
    setConcurrencyLimit,
    get,
    list: Effect.map(sql<QueueRow>`SELECT * FROM baton_queues ORDER BY queue`, (rows) => rows.map(toSettings)).pipe(
      Effect.withSpan("QueueControl.list")
    )
  })
})

/** The queues among `queues` that have a setting (so the ordinary claim skips them). */
export const controlledQueues = (sql: SqlClient.SqlClient, queues: ReadonlyArray<string>) =>
  sql<Pick<QueueRow, "queue" | "paused">>`SELECT queue, paused FROM baton_queues WHERE queue IN ${sql.in(queues)}`

/**
 * Claims up to `limit` tasks of one queue that has a setting, in one transaction: lock the queue's row (rolling its
 * rate window forward), take what the window and the concurrency limit allow, count them into the window. Paused (or
 * no longer configured): nothing — the ordinary claim takes an unconfigured queue.
 */
export const claimLimited = (
  sql: SqlClient.SqlClient,
  queue: string,
  now: number,
  limit: number,
  claim: (limit: number) => Effect.Effect<ReadonlyArray<TaskRow>, SqlError>
): Effect.Effect<ReadonlyArray<TaskRow>, SqlError> =>
  sql.withTransaction(
    Effect.gen(function* () {
      // The lock: every claimer of this queue queues up here until the holder commits.
      const [row] = yield* sql<QueueRow>`UPDATE baton_queues SET
          window_start = CASE WHEN rate_interval_ms IS NOT NULL AND ${now} >= window_start + rate_interval_ms
            THEN ${now} ELSE window_start END,
          window_count = CASE WHEN rate_interval_ms IS NOT NULL AND ${now} >= window_start + rate_interval_ms
            THEN 0 ELSE window_count END
        WHERE queue = ${queue} RETURNING *`
      if (row === undefined || Number(row.paused) !== 0) return []
      let allowed = limit
      if (row.rate_limit !== null) allowed = Math.min(allowed, Number(row.rate_limit) - Number(row.window_count))
      if (row.concurrency_limit !== null && allowed > 0) {
        const [running] = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks
          WHERE state = 'running' AND queue = ${queue}`
        allowed = Math.min(allowed, Number(row.concurrency_limit) - Number(running?.n ?? 0))
      }
      if (allowed <= 0) return []
      const rows = yield* claim(allowed)
      if (rows.length > 0 && row.rate_limit !== null) {
        yield* sql`UPDATE baton_queues SET window_count = window_count + ${rows.length} WHERE queue = ${queue}`
      }
      return rows
    })
  )
