/**
 * The statements of `CheckpointCoordinator` on `@effect/sql` (Postgres, a SQLite file, or SQLite `:memory:`); the
 * public module `SqlCheckpointCoordinator.ts` builds its layers from `make`. Each checkpoint is a row of
 * `baton_checkpoints`, so another process can await it and a restarted run sees where it stopped.
 *
 * Guarantees:
 * - `createCheckpoint` is one statement (`INSERT … ON CONFLICT (run_id, batch_index) DO NOTHING RETURNING id`); only
 *   when the checkpoint already exists does a second statement read its id.
 * - `completeCheckpoint` / `failCheckpoint` join the caller's `sql.withTransaction` when there is one: the guarded
 *   `UPDATE … WHERE status = 'pending'` and the completions-log event (`checkpoint.completed` /
 *   `checkpoint.failed`, plus NOTIFY on Postgres) commit or roll back with the caller's work. A rollback leaves the
 *   checkpoint pending. On Postgres that is one statement (one round trip, atomic on its own); on SQLite a short
 *   transaction (a savepoint inside the caller's).
 * - Nothing in this process is told about a completion before it committed: outside a transaction the local waiters
 *   are resolved after the commit; inside the caller's transaction they are only nudged to re-read the row, which
 *   shows the completion once (and only if) the caller's transaction commits.
 * - `awaitCheckpoint` registers its local waiter (and its completion-stream subscription, with
 *   a `CompletionBackend` in the layer's context) before it reads the row, then waits: a completion landing between the read and the wait
 *   is never lost. Completions by other processes are seen through the completion stream when provided, and always
 *   through a re-read of the row on an adaptive schedule (fast at first, then backing off).
 * - In-process memory is bounded: a waiter entry lives only while someone awaits; outcomes completed here are kept
 *   (for an immediate await) in a bounded cache, dropped once awaited.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import {
  type AwaitOptions,
  CheckpointConflict,
  CheckpointCoordinator,
  CheckpointFailed,
  CheckpointId,
  CheckpointNotFound,
  CheckpointStatus,
  CheckpointTimeout,
  CheckpointToken,
  timeoutMillis,
  validateBatchIndex
} from "../../CheckpointCoordinator.js"
import { CompletionBackend } from "../../CompletionBackend.js"
import { canonicalJson } from "../checkpointJson.js"
import { type LogEntry, makeAppendLog } from "./completionLog.js"
import { byDialect } from "./dialect.js"
import { completionsChannel } from "./wakes.js"
import { Storage } from "../../Storage.js"
import * as Prepared from "./prepared.js"

/** Options of the SQL coordinator. */
export interface Options {
  /**
   * First delay between re-reads of a pending checkpoint's row while awaiting it (default 2 ms; with a completion
   * stream, `pollMax`: checkpoint events wake waiters, and the re-read is only a safety net, so an await on the happy
   * path does not poll).
   */
  readonly pollMin?: Duration.DurationInput | undefined
  /** Longest delay between re-reads (default 100 ms; 1 s with a completion stream, which wakes waiters itself). */
  readonly pollMax?: Duration.DurationInput | undefined
  /**
   * Outcomes completed in this process kept for an immediate local await (default 1,000; oldest dropped first; an
   * outcome is dropped once awaited, and one over 16 KiB of JSON is never kept: its await reads the row).
   */
  readonly localCacheSize?: number | undefined
  /**
   * Postgres only: commit a checkpoint's creation asynchronously (`synchronous_commit = off` for that one statement,
   * and only outside a caller's transaction). It is visible to every session at once and survives any crash of the
   * client; a crash of the Postgres server itself can lose creations of the last few hundred milliseconds that no
   * later synchronous commit flushed (a completion flushes them, WAL being written in order). Default false.
   */
  readonly asyncCreate?: boolean | undefined
  /** Wake waiters from the completion stream (the layers pass the `CompletionBackend` of their context, if any). */
  readonly completions?: CompletionBackend["Type"] | undefined
}

type Status = "pending" | "completed" | "failed"

interface TokenRow {
  readonly id: string
  readonly run_id: string
  readonly batch_index: number
}

interface StateRow {
  readonly status: Status
  readonly result: string | null
  readonly error: string | null
}

/** A terminal outcome as stored: its status and canonical JSON text. */
interface Outcome {
  readonly status: "completed" | "failed"
  readonly text: string
}

interface Waiter {
  /** Resolved with the outcome once it is known to have committed. */
  readonly done: Deferred.Deferred<Outcome>
  /**
   * "Re-read the row now" (a completion inside a caller's transaction, or a completion-stream event): completed and
   * replaced by a fresh one on each nudge, so a waiter that took it before reading the row never misses a nudge.
   */
  wake: Deferred.Deferred<void>
  count: number
}

const toToken = (row: TokenRow): CheckpointToken =>
  new CheckpointToken(
    { id: CheckpointId.make(row.id), runId: row.run_id, batchIndex: Number(row.batch_index) },
    { disableValidation: true }
  )

const outcomeOf = (row: StateRow): Outcome | undefined =>
  row.status === "completed"
    ? { status: "completed", text: row.result ?? "null" }
    : row.status === "failed"
      ? { status: "failed", text: row.error ?? "null" }
      : undefined

const checkpointKinds = ["checkpoint.completed", "checkpoint.failed"] as const

// Bounds the local cache's memory: larger outcomes are read back from the row by their await.
const maxCachedText = 16 * 1024

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const append = makeAppendLog(sql, storage.dialect, storage.channelPrefix)
  const completions = options.completions
  const asyncCreate = byDialect(storage.dialect, { pg: () => options.asyncCreate === true, sqlite: () => false })
  const cacheSize = Math.max(0, options.localCacheSize ?? 1_000)
  const pollMax = Duration.decode(options.pollMax ?? (completions !== undefined ? Duration.seconds(1) : "100 millis"))
  const pollMin = Duration.min(
    Duration.decode(options.pollMin ?? (completions !== undefined ? pollMax : Duration.millis(2))),
    pollMax
  )
  // Exponential from pollMin, capped at pollMax (union takes the shorter delay).
  const pollSchedule = Schedule.exponential(pollMin, 2).pipe(Schedule.union(Schedule.spaced(pollMax)))

  const waiters = new Map<string, Waiter>()
  // Committed outcomes of completions made in this process (insertion-ordered, bounded).
  const recent = new Map<string, Outcome>()

  const remember = (id: string, outcome: Outcome): void => {
    if (cacheSize === 0 || outcome.text.length > maxCachedText) return
    recent.delete(id)
    recent.set(id, outcome)
    if (recent.size > cacheSize) {
      const oldest = recent.keys().next()
      if (oldest.done !== true) recent.delete(oldest.value)
    }
  }

  const nudge = (waiter: Waiter): void => {
    const wake = waiter.wake
    waiter.wake = Deferred.unsafeMake(FiberId.none)
    Deferred.unsafeDone(wake, Effect.void)
  }

  const inTransaction = Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)

  const readToken = (runId: string, batchIndex: number) =>
    sql<TokenRow>`SELECT id, run_id, batch_index FROM baton_checkpoints
      WHERE run_id = ${runId} AND batch_index = ${batchIndex}`

  const readState = (id: string) =>
    sql<StateRow>`SELECT status, result, error FROM baton_checkpoints WHERE id = ${id}`.pipe(
      Effect.map((rows) => rows[0])
    )

  const createCheckpoint = (runId: string, batchIndex: number) =>
    Effect.gen(function* () {
      yield* validateBatchIndex(batchIndex, runId)
      const now = yield* Clock.currentTimeMillis
      const id = crypto.randomUUID()
      const lazy = asyncCreate && !(yield* inTransaction)
      const inserted = lazy
        ? yield* Prepared.run(
            sql,
            sql<TokenRow>`INSERT INTO baton_checkpoints (id, run_id, batch_index, status, created_at)
              SELECT ${id}, ${runId}, ${batchIndex}::int, 'pending', ${now}::bigint
              FROM (SELECT set_config('synchronous_commit', 'off', true)) AS local_setting
              ON CONFLICT (run_id, batch_index) DO NOTHING RETURNING id, run_id, batch_index`
          )
        : yield* Prepared.run(
            sql,
            sql<TokenRow>`INSERT INTO baton_checkpoints (id, run_id, batch_index, status, created_at)
              VALUES (${id}, ${runId}, ${batchIndex}, 'pending', ${now})
              ON CONFLICT (run_id, batch_index) DO NOTHING RETURNING id, run_id, batch_index`
          )
      const row = inserted[0] ?? (yield* readToken(runId, batchIndex))[0]
      if (row === undefined) {
        // Only possible when the conflicting row is invisible to this transaction's snapshot (REPEATABLE READ).
        return yield* Effect.dieMessage(`createCheckpoint: (${runId}, ${batchIndex}) neither inserted nor found`)
      }
      return toToken(row)
    }).pipe(
      Effect.withSpan("CheckpointCoordinator.createCheckpoint", {
        captureStackTrace: false,
        attributes: { runId, batchIndex }
      })
    )

  const logEntry = (status: "completed" | "failed", runId: string, now: number): LogEntry => ({
    kind: status === "completed" ? "checkpoint.completed" : "checkpoint.failed",
    task_id: null,
    task_name: null,
    queue: null,
    namespace: "default",
    tags: "[]",
    outcome: status === "completed" ? "succeeded" : "failed",
    chord_id: null,
    run_id: runId,
    at: now
  })

  // The guarded update did not apply: an idempotent repeat, a conflicting outcome, or no such checkpoint.
  const judge = (
    token: CheckpointToken,
    status: "completed" | "failed",
    text: string,
    current: StateRow | undefined
  ): Effect.Effect<false, CheckpointConflict | CheckpointNotFound> => {
    if (current === undefined) return Effect.fail(new CheckpointNotFound({ token }))
    const existing = outcomeOf(current)
    if (existing === undefined) {
      return Effect.dieMessage(`completeCheckpoint: ${token.id} is pending but could not be updated`)
    }
    if (existing.status !== status || existing.text !== text) {
      return Effect.fail(new CheckpointConflict({ token, existing: existing.status, attempted: status }))
    }
    return Effect.succeed(false)
  }

  // SQLite: a short transaction (a savepoint inside the caller's): guarded UPDATE, then the log row.
  const settleSqlite = (token: CheckpointToken, status: "completed" | "failed", text: string, now: number) =>
    sql.withTransaction(
      Effect.gen(function* () {
        const updated = yield* sql<{ run_id: string }>`UPDATE baton_checkpoints SET status = ${status},
            result = ${status === "completed" ? text : null}, error = ${status === "failed" ? text : null},
            completed_at = ${now}
          WHERE id = ${token.id} AND status = 'pending' RETURNING run_id`
        const row = updated[0]
        if (row === undefined) return yield* judge(token, status, text, yield* readState(token.id))
        yield* append([logEntry(status, row.run_id, now)])
        return true
      })
    )

  // Postgres: ONE statement, hence one round trip and atomic on its own (its own transaction outside the caller's,
  // part of the caller's inside it): the guarded UPDATE, the log row and its NOTIFY (the same row and payload as
  // `makeAppendLog` writes), and the row's state before the statement for the idempotency check.
  const settlePg = (token: CheckpointToken, status: "completed" | "failed", text: string, now: number) =>
    Effect.gen(function* () {
      const entry = logEntry(status, token.runId, now)
      const rows = yield* Prepared.run(
        sql,
        sql<{ updated: number } & { [K in keyof StateRow]: StateRow[K] | null }>`WITH cur AS (
          SELECT status, result, error FROM baton_checkpoints WHERE id = ${token.id}
        ), upd AS (
          UPDATE baton_checkpoints SET status = ${status},
            result = ${status === "completed" ? text : null}, error = ${status === "failed" ? text : null},
            completed_at = ${now}
          WHERE id = ${token.id} AND status = 'pending' RETURNING run_id
        ), ins AS (
          INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
          SELECT ${entry.kind}::text, NULL, NULL, NULL, ${entry.namespace}::text, ${entry.tags}::text,
            ${entry.outcome}::text, NULL, run_id, ${now}::bigint
          FROM upd RETURNING seq
        )
        SELECT (SELECT count(*) FROM upd)::int AS updated,
          (SELECT pg_notify(${completionsChannel(storage.channelPrefix)}, max(seq)::text) FROM ins
            HAVING count(*) > 0) AS notified,
          cur.status, cur.result, cur.error
        FROM (SELECT 1) AS one LEFT JOIN cur ON true`
      )
      const row = rows[0]
      if (row !== undefined && row.updated > 0) return true
      const before: StateRow | undefined =
        row === undefined || row.status === null
          ? undefined
          : { status: row.status, result: row.result, error: row.error }
      // "pending" in the statement's snapshot but not updated: a concurrent completion committed meanwhile.
      return yield* judge(token, status, text, before?.status === "pending" ? yield* readState(token.id) : before)
    })

  const settleRow = byDialect(storage.dialect, { pg: () => settlePg, sqlite: () => settleSqlite })

  const settle = (token: CheckpointToken, status: "completed" | "failed", value: unknown) =>
    Effect.gen(function* () {
      const text = yield* Effect.try({ try: () => canonicalJson(value), catch: (error) => error }).pipe(Effect.orDie)
      const now = yield* Clock.currentTimeMillis
      const joined = yield* inTransaction
      const applied = yield* settleRow(token, status, text, now)
      const outcome: Outcome = { status, text }
      yield* Effect.sync(() => {
        const waiter = waiters.get(token.id)
        if (joined) {
          // Not committed yet (and maybe never): only ask local waiters to re-read the row.
          if (waiter !== undefined) nudge(waiter)
          return
        }
        remember(token.id, outcome)
        if (waiter !== undefined) Deferred.unsafeDone(waiter.done, Effect.succeed(outcome))
      })
      return applied
    })

  const completeCheckpoint = (token: CheckpointToken, result: unknown) =>
    settle(token, "completed", result).pipe(
      Effect.asVoid,
      Effect.withSpan("CheckpointCoordinator.completeCheckpoint", {
        captureStackTrace: false,
        attributes: { runId: token.runId, batchIndex: token.batchIndex }
      })
    )

  const failCheckpoint = (token: CheckpointToken, error: unknown) =>
    settle(token, "failed", error).pipe(
      Effect.asVoid,
      Effect.withSpan("CheckpointCoordinator.failCheckpoint", {
        captureStackTrace: false,
        attributes: { runId: token.runId, batchIndex: token.batchIndex }
      })
    )

  const deliver = (token: CheckpointToken, outcome: Outcome): Effect.Effect<unknown, CheckpointFailed> =>
    outcome.status === "completed"
      ? Effect.succeed(JSON.parse(outcome.text))
      : Effect.fail(new CheckpointFailed({ token, error: JSON.parse(outcome.text) }))

  const register = (id: string): Waiter => {
    let waiter = waiters.get(id)
    if (waiter === undefined) {
      waiter = { done: Deferred.unsafeMake(FiberId.none), wake: Deferred.unsafeMake(FiberId.none), count: 0 }
      waiters.set(id, waiter)
    }
    waiter.count++
    return waiter
  }

  const unregister = (id: string, waiter: Waiter): void => {
    waiter.count--
    if (waiter.count === 0 && waiters.get(id) === waiter) waiters.delete(id)
  }

  // Waits (subscription first, then re-read, then wait) until the row shows an outcome.
  const waitForOutcome = (token: CheckpointToken, waiter: Waiter) =>
    Effect.scoped(
      Effect.gen(function* () {
        if (completions !== undefined) {
          // Subscribed before the first read of the row. If the stream cannot start or ends, the row poll below
          // remains the safety net.
          yield* completions.subscribe({ filter: { kinds: [...checkpointKinds] } }).pipe(
            Effect.flatMap((events) =>
              events.pipe(
                Stream.filter((event) => event.runId === token.runId),
                Stream.runForEach(() => Effect.sync(() => nudge(waiter))),
                Effect.catchAllCause((cause) => Effect.logDebug("checkpoint wake-up stream ended", cause)),
                Effect.forkScoped
              )
            ),
            Effect.catchAllCause((cause) => Effect.logDebug("checkpoint wake-up stream unavailable", cause))
          )
        }
        const driver = yield* Schedule.driver(pollSchedule)
        for (;;) {
          const wake = waiter.wake
          const row = yield* readState(token.id)
          if (row === undefined) return yield* new CheckpointNotFound({ token })
          const outcome = outcomeOf(row)
          if (outcome !== undefined) {
            yield* Deferred.succeed(waiter.done, outcome)
            return outcome
          }
          const next = yield* Effect.raceAll([
            Effect.map(Deferred.await(waiter.done), Option.some),
            Effect.as(Effect.zipRight(Deferred.await(wake), driver.reset), Option.none<Outcome>()),
            Effect.as(Effect.orDie(driver.next(undefined)), Option.none<Outcome>())
          ])
          if (Option.isSome(next)) return next.value
        }
      })
    )

  const awaitCheckpoint = (token: CheckpointToken, options?: AwaitOptions) =>
    Effect.suspend((): Effect.Effect<unknown, CheckpointFailed | CheckpointTimeout | CheckpointNotFound | SqlError> => {
      // Fast path: completed by this process (and committed).
      const known = recent.get(token.id)
      if (known !== undefined) {
        if (known.status === "completed") recent.delete(token.id)
        return deliver(token, known)
      }
      const millis = timeoutMillis(options)
      const wait = Effect.acquireUseRelease(
        Effect.sync(() => register(token.id)),
        (waiter) => waitForOutcome(token, waiter),
        (waiter) => Effect.sync(() => unregister(token.id, waiter))
      )
      const bounded =
        millis === undefined
          ? wait
          : Effect.timeoutFail(wait, {
              duration: millis,
              onTimeout: () => new CheckpointTimeout({ token, timeoutMillis: millis })
            })
      // Traced only here, where it reads or waits: the cache hit above is a map lookup, cheaper than a span.
      return Effect.flatMap(bounded, (outcome) => deliver(token, outcome)).pipe(
        Effect.withSpan("CheckpointCoordinator.awaitCheckpoint", {
          captureStackTrace: false,
          attributes: { runId: token.runId, batchIndex: token.batchIndex }
        })
      )
    })

  const findCheckpoint = (runId: string, batchIndex: number) =>
    readToken(runId, batchIndex).pipe(
      Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toToken)),
      Effect.withSpan("CheckpointCoordinator.findCheckpoint", {
        captureStackTrace: false,
        attributes: { runId, batchIndex }
      })
    )

  const getPendingCheckpoints = (runId: string) =>
    sql<TokenRow>`SELECT id, run_id, batch_index FROM baton_checkpoints
      WHERE run_id = ${runId} AND status = 'pending' ORDER BY batch_index`.pipe(
      Effect.map((rows) => rows.map(toToken)),
      Effect.withSpan("CheckpointCoordinator.getPendingCheckpoints", {
        captureStackTrace: false,
        attributes: { runId }
      })
    )

  const pollCheckpoint = (token: CheckpointToken) =>
    readState(token.id).pipe(
      Effect.flatMap((row): Effect.Effect<CheckpointStatus, CheckpointNotFound> => {
        if (row === undefined) return Effect.fail(new CheckpointNotFound({ token }))
        const outcome = outcomeOf(row)
        if (outcome === undefined) return Effect.succeed(CheckpointStatus.Pending())
        return Effect.succeed(
          outcome.status === "completed"
            ? CheckpointStatus.Completed({ result: JSON.parse(outcome.text) })
            : CheckpointStatus.Failed({ error: JSON.parse(outcome.text) })
        )
      }),
      Effect.withSpan("CheckpointCoordinator.pollCheckpoint", { captureStackTrace: false })
    )

  return CheckpointCoordinator.of({
    createCheckpoint,
    completeCheckpoint,
    failCheckpoint,
    awaitCheckpoint,
    findCheckpoint,
    getPendingCheckpoints,
    pollCheckpoint
  })
})
