/**
 * The statements behind `ReadModel` (see `src/ReadModel.ts` for the contract; `SqlReadModel` is the layer).
 *
 * The same SQL runs on Postgres and SQLite: plain aggregates and filters over indexed columns, no dialect strategy
 * needed. Postgres returns `bigint` aggregates as strings, so every number is read through `Number`. Each list is
 * bounded by its caller's page or limit.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { type ChordId, ChordState } from "../../ChordRegistry.js"
import type { CompletionOutcome } from "../../CompletionBackend.js"
import * as Clock from "effect/Clock"
import { type CheckpointState, type ChordByKey, ReadModel } from "../../ReadModel.js"
import { migrationsTable } from "../../Storage.js"
import { pgMigrations } from "./migrations/pg.js"
import { sqliteMigrations } from "./migrations/sqlite.js"
import { liveWorkers } from "./workerRows.js"

const num = (value: unknown): number => Number(value)
const dateOrUndefined = (value: unknown): Date | undefined =>
  value === null || value === undefined ? undefined : new Date(Number(value))
const parse = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

interface ChordKeyRow {
  readonly id: string
  readonly idempotency_key: string
  readonly state: ChordState
}

const toChordByKey = (row: ChordKeyRow): ChordByKey => ({
  chordId: row.id as ChordId,
  idempotencyKey: row.idempotency_key,
  state: row.state
})

/** Builds the read model. Requires the `SqlClient` of a storage layer. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  const checkpointStats = Effect.fn("ReadModel.checkpointStats")(function* (scopes: ReadonlyArray<string>) {
    if (scopes.length === 0) return { completed: 0, firstCreatedAt: undefined, lastCompletedAt: undefined }
    const rows = yield* sql<{ n: number; first: number | null; last: number | null }>`
      SELECT count(*) AS n, min(created_at) AS first, max(completed_at) AS last FROM baton_checkpoints
      WHERE run_id IN ${sql.in(scopes)} AND status = 'completed'`
    const row = rows[0]
    return {
      completed: num(row?.n ?? 0),
      firstCreatedAt: dateOrUndefined(row?.first),
      lastCompletedAt: dateOrUndefined(row?.last)
    }
  })

  const checkpoints = Effect.fn("ReadModel.checkpoints")(function* (
    scopes: ReadonlyArray<string>,
    page: { readonly limit: number; readonly offset: number }
  ) {
    if (scopes.length === 0) return { total: 0, items: [] }
    const rows = yield* sql<{
      run_id: string
      batch_index: number
      status: CheckpointState
      error: string | null
      created_at: number
      completed_at: number | null
    }>`SELECT run_id, batch_index, status, error, created_at, completed_at FROM baton_checkpoints
       WHERE run_id IN ${sql.in(scopes)} ORDER BY batch_index, created_at LIMIT ${page.limit} OFFSET ${page.offset}`
    const total = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_checkpoints
      WHERE run_id IN ${sql.in(scopes)}`
    return {
      total: num(total[0]?.n ?? 0),
      items: rows.map((row) => ({
        scope: row.run_id,
        batchIndex: num(row.batch_index),
        state: row.status,
        error: parse(row.error),
        createdAt: new Date(num(row.created_at)),
        completedAt: dateOrUndefined(row.completed_at)
      }))
    }
  })

  const chordsByKey = Effect.fn("ReadModel.chordsByKey")(function* (keys: ReadonlyArray<string>) {
    if (keys.length === 0) return []
    const rows = yield* sql<ChordKeyRow>`SELECT id, idempotency_key, state FROM baton_chords
      WHERE idempotency_key IN ${sql.in(keys)}`
    return rows.map(toChordByKey)
  })

  const chordsByKeyPrefix = Effect.fn("ReadModel.chordsByKeyPrefix")(function* (prefix: string, state: ChordState) {
    // `substr` rather than `LIKE`: the prefix is data, and `%` / `_` in it must not act as wildcards.
    const rows = yield* sql<ChordKeyRow>`SELECT id, idempotency_key, state FROM baton_chords
      WHERE state = ${state} AND substr(idempotency_key, 1, ${prefix.length}) = ${prefix}`
    return rows.map(toChordByKey)
  })

  const chordCounts = Effect.gen(function* () {
    const rows = yield* sql<{ state: ChordState; n: number }>`SELECT state, count(*) AS n FROM baton_chords
      GROUP BY state`
    const counts = Object.fromEntries(ChordState.literals.map((state) => [state, 0])) as Record<ChordState, number>
    for (const row of rows) counts[row.state] = num(row.n)
    return counts
  }).pipe(Effect.withSpan("ReadModel.chordCounts"))

  const chordLatencies = Effect.fn("ReadModel.chordLatencies")(function* (limit: number) {
    const rows = yield* sql<{ ms: number }>`SELECT dispatched_at - last_body_at AS ms FROM baton_chords
      WHERE state = 'completed' AND dispatched_at IS NOT NULL AND last_body_at IS NOT NULL
      ORDER BY dispatched_at DESC LIMIT ${limit}`
    return rows.map((row) => num(row.ms))
  })

  const completionCounts = Effect.fn("ReadModel.completionCounts")(function* (options: {
    readonly since: Date
    readonly recentSince: Date
  }) {
    // The completions log is indexed by time; task completions only (chord and checkpoint events share the log).
    const rows = yield* sql<{ queue: string | null; outcome: CompletionOutcome; recent: number; n: number }>`
      SELECT queue, outcome, sum(CASE WHEN at >= ${options.recentSince.getTime()} THEN 1 ELSE 0 END) AS recent,
        count(*) AS n
      FROM baton_completions WHERE kind = 'task' AND at >= ${options.since.getTime()} GROUP BY queue, outcome`
    return rows.map((row) => ({
      queue: row.queue ?? undefined,
      outcome: row.outcome,
      total: num(row.n),
      recent: num(row.recent)
    }))
  })

  const workers = Effect.flatMap(Clock.currentTimeMillis, (now) => liveWorkers(sql, now)).pipe(
    Effect.withSpan("ReadModel.workers")
  )

  const runWork = Effect.fn("ReadModel.runWork")(function* (runIds: ReadonlyArray<string>) {
    if (runIds.length === 0) return []
    const rows = yield* sql<{ run_id: string; queue: string; state: string; n: number }>`
      SELECT run_id, queue, state, count(*) AS n FROM baton_tasks
      WHERE state IN ('pending', 'running') AND run_id IN ${sql.in(runIds)} GROUP BY run_id, queue, state`
    const byKey = new Map<string, { runId: string; queue: string; pending: number; running: number }>()
    for (const row of rows) {
      const key = JSON.stringify([row.run_id, row.queue])
      const entry = byKey.get(key) ?? { runId: row.run_id, queue: row.queue, pending: 0, running: 0 }
      if (row.state === "pending") entry.pending += num(row.n)
      else entry.running += num(row.n)
      byKey.set(key, entry)
    }
    return [...byKey.values()]
  })

  // The migrations this code knows, for the dialect of the client in context.
  const known = Object.keys(sql.onDialectOrElse({ pg: () => pgMigrations, orElse: () => sqliteMigrations })).sort()
  const schemaStatus = Effect.gen(function* () {
    const exists = yield* sql.onDialectOrElse({
      pg: () =>
        sql<{ t: string | null }>`SELECT to_regclass(${migrationsTable})::text AS t`.pipe(
          Effect.map((rows) => rows[0]?.t != null)
        ),
      orElse: () =>
        sql<{
          n: number
        }>`SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ${migrationsTable}`.pipe(
          Effect.map((rows) => num(rows[0]?.n ?? 0) > 0)
        )
    })
    const ids = exists
      ? new Set(
          (yield* sql<{ id: number }>`SELECT migration_id AS id FROM ${sql(migrationsTable)}`).map((row) => num(row.id))
        )
      : new Set<number>()
    const applied = known.filter((name) => ids.has(parseInt(name, 10)))
    const missing = known.filter((name) => !ids.has(parseInt(name, 10)))
    return { current: missing.length === 0, applied, missing }
  }).pipe(Effect.withSpan("ReadModel.schemaStatus"))

  return ReadModel.of({
    workers,
    runWork,
    schemaStatus,
    checkpointStats,
    checkpoints,
    chordsByKey,
    chordsByKeyPrefix,
    chordCounts,
    chordLatencies,
    completionCounts
  })
})
