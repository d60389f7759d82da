/**
 * Chord bookkeeping and dispatch in SQL. Every function here runs inside a transaction that the caller owns:
 * - `recordBodies` inside the transaction that moves body tasks to a terminal state (called by the finish path,
 *   `finishPath.ts`),
 * - `settleChord` / `cancelChord` / `sweepBody` inside the registry's own short transactions.
 *
 * The scheme (docs/chords.md has the full argument):
 * 1. Counting. The completing transaction has just run the task's guarded transition (`UPDATE baton_tasks ... WHERE
 *    id AND lease_id AND state = 'running' RETURNING`). Only the rows it returned are counted, with one
 *    `UPDATE baton_chords SET succeeded = succeeded + n ... WHERE id = $chord RETURNING *` per chord, in chord id order
 *    (no deadlock between two batches touching the same chords). A terminal task never leaves its terminal state, so
 *    the task row itself is the idempotent ledger: each body task is counted exactly once, in O(1).
 * 2. Deciding. The counter update holds the chord row lock until commit. On Postgres READ COMMITTED a concurrent
 *    updater blocks on that lock and then re-reads the committed row, so the totals each transaction sees are
 *    distinct and increasing: exactly one sees `succeeded + failed + cancelled = expected`. Every transaction that
 *    added to the count committed before the lock was granted, so the next statement sees all their task rows.
 * 3. Dispatching. `UPDATE baton_chords SET state = 'completed', dispatched_at = ... WHERE id = $1 AND state =
 *    'running' AND dispatched_at IS NULL RETURNING id` and the INSERT of the callback task run in that same
 *    transaction: the mark and the task commit together or not at all. The reconciler uses the same function, under
 *    the same guard, after locking the row, so a chord is dispatched once whoever gets there.
 * 4. Chords of chords. An inner chord (`parent_id`, `parent_index`) inserts its callback task as the outer chord's body
 *    task at `parent_index` (`sealedRow`), so its completion counts for the outer chord by step 1, level by level. An
 *    inner chord that ends without its callback (failed, cancelled, past its deadline) ends its outer body slot in the
 *    same transaction (`endSlot`: a body task row inserted and moved to `failed` / `cancelled` through the guarded
 *    transition, then counted by `recordBodies`), so the outer chord fails under the same guard. An outer chord that
 *    fails or is cancelled cancels its running inner chords (`cancelBody`).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import {
  type ChordFailure,
  chordsCompleted,
  chordsExpired,
  chordsFailed,
  chordsHealed,
  dispatchLatency,
  timeToCallback
} from "../../ChordRegistry.js"
import type { Dialect } from "../../Storage.js"
import type { RawEnqueue } from "../../TaskQueue.js"
import { type AppendLog, type LogEntry, makeAppendLog, taskEntries } from "./completionLog.js"
import { byDialect } from "./dialect.js"
import { currentHandoff, handOver, insertLeasedPg, leaseInserted, takeLease } from "./handoff.js"
import {
  findByIdempotencyKey,
  type FinishedTask,
  finishedColumns,
  guardedFinish,
  type InsertRow,
  type InsertTasks,
  insertRecordPg,
  makeInsertTasks,
  type TaskRow,
  toClaimed,
  toInsertRow
} from "./taskRows.js"
import { completionsChannel, makeWakeQueues, tasksChannel } from "./wakes.js"

/**
 * What the ledger works with, built once per layer (`makeLedgerContext`): the client, the log writer, the task insert,
 * and the dialect's statements.
 */
export interface LedgerContext {
  readonly sql: SqlClient.SqlClient
  /** Appends completions-log rows (NOTIFY on Postgres) inside the current transaction. */
  readonly append: AppendLog
  /** The ONE task insert (callbacks and onError tasks). */
  readonly insertTasks: InsertTasks
  /** The dialect's statements. */
  readonly statements: LedgerStatements
}

/** The ledger statements that differ by dialect. */
interface LedgerStatements {
  /** Locks a running chord's row for the rest of the transaction; the row if it is running. */
  readonly lockRunning: (chordId: string) => Effect.Effect<ReadonlyArray<ChordRow>, SqlError>
  /** What the counter bump returns. */
  readonly bumpReturning: Statement.Fragment
  /** A task id quoted as JSON text. */
  readonly quotedId: Statement.Fragment
  /** After inserting a callback task: wakes the workers of its queue (SQLite; Postgres' insert notified itself). */
  readonly wakeInserted: (queues: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  /**
   * Marks the chord completed under the dispatch guard and inserts its callback task; undefined if the guard lost,
   * else the callback's id and queue.
   */
  readonly dispatch: (
    ctx: LedgerContext,
    chord: ChordRow,
    sealed: SealedCall,
    payload: string,
    at: number,
    healed: boolean,
    entries: (task: { readonly id: string; readonly queue: string }) => ReadonlyArray<LogEntry>
  ) => Effect.Effect<{ readonly id: string; readonly queue: string; readonly logged: boolean } | undefined, SqlError>
  /** Locks the running inner chords of a chord (skipping rows another transaction holds: the sweep retries). */
  readonly lockInner: (chordId: string) => Effect.Effect<ReadonlyArray<ChordRow>, SqlError>
  /** Moves the body tasks still pending or running to cancelled; the rows moved. */
  readonly cancelBodyRows: (
    chordId: string,
    set: Statement.Fragment
  ) => Effect.Effect<ReadonlyArray<FinishedTask>, SqlError>
}

/** A callback (or onError) sealed into the chord row: the enqueue request without payload, and the encoded args. */
export interface SealedCall {
  readonly request: Omit<RawEnqueue, "payload" | "chordId" | "chordIndex">
  /** Delay applied at dispatch (a `delay` option is relative to dispatch, not to the chord's creation). */
  readonly delayMs?: number | undefined
  /** The encoded payload fields other than `results` / `failure`. */
  readonly args: Readonly<Record<string, unknown>>
  /**
   * A callback's dispatch template, for the one-call finish of a batch of body tasks on Postgres
   * (`baton_succeed_bodies`, migration 0012): absent in onError calls and in chords sealed before it.
   */
  readonly fast?: DispatchTemplate | undefined
}

/**
 * The callback's task row as `sealedRow` builds it, minus what is known only at dispatch (id, payload, run_at,
 * created_at, updated_at), and how to finish those: the payload is `{"results":[…]` + `suffix`.
 */
export interface DispatchTemplate {
  readonly row: Omit<InsertRow, "id" | "payload" | "run_at" | "created_at" | "updated_at">
  readonly suffix: string
  /** An absolute `runAt` of the callback's request, else null: dispatch time + `delayMs`. */
  readonly runAt: number | null
  readonly delayMs: number
}

/** The dispatch template of a callback sealed for a chord (`slot`: an inner chord's place in its outer chord). */
export const dispatchTemplate = (
  sealed: SealedCall,
  slot: Pick<ChordRow, "parent_id" | "parent_index">
): DispatchTemplate => {
  const {
    id: _id,
    payload: _payload,
    run_at: _runAt,
    created_at: _created,
    updated_at: _updated,
    ...row
  } = sealedRow(sealed, "[]", 0, slot)
  return {
    row,
    suffix: payloadText(sealed.args, "results", "[]").slice('{"results":[]'.length),
    runAt: sealed.request.runAt ?? null,
    delayMs: sealed.delayMs ?? 0
  }
}

/** A chord that `baton_succeed_bodies` dispatched: what the metrics and the hand-off need of it. */
export interface FastDispatch {
  readonly chord: string
  readonly name: string
  readonly expected: number
  readonly created_at: number
  readonly last_body_at: number | null
  /** Inserted leased to the committing worker (its offer fitted). */
  readonly leased: boolean
  /** The callback task row as inserted. */
  readonly task: TaskRow
}

/**
 * After `baton_succeed_bodies` committed: the metrics of each chord it dispatched, and its callback started by this
 * worker when it was handed over (the offer's room taken).
 */
export const recordFastDispatches = (dispatched: ReadonlyArray<FastDispatch>, now: number) =>
  Effect.gen(function* () {
    const offer = yield* FiberRef.get(currentHandoff)
    for (const d of dispatched) {
      if (d.leased && offer !== undefined) {
        offer.free--
        offer.handed.push(toClaimed(d.task))
      }
      yield* Metric.increment(chordsCompleted)
      yield* recordDispatch({ created_at: d.created_at, last_body_at: d.last_body_at }, now, false).pipe(
        Effect.withSpan("ChordRegistry.dispatch", {
          captureStackTrace: false,
          attributes: { chordId: d.chord, callback: d.name, expected: d.expected, healed: false }
        })
      )
    }
  })

/** A `baton_chords` row. */
export interface ChordRow {
  readonly id: string
  readonly namespace: string
  readonly tags: string
  readonly idempotency_key: string | null
  readonly state: "running" | "completed" | "failed" | "cancelled"
  readonly failure_policy: "fail" | "continue"
  readonly expected: number
  readonly succeeded: number
  readonly failed: number
  readonly cancelled: number
  readonly callback_name: string
  readonly callback: string
  readonly on_error: string | null
  readonly callback_task_id: string | null
  readonly error_task_id: string | null
  readonly failure: string | null
  readonly healed: number
  readonly body_open: number
  readonly created_at: number
  readonly last_body_at: number | null
  readonly dispatched_at: number | null
  /** Epoch ms; null: no deadline (undefined only in rows read before the column existed in a test's hand-made row). */
  readonly deadline_at?: number | null
  /** An inner chord's outer chord and body position (null: a top-level chord; undefined in rows read before 0011). */
  readonly parent_id?: string | null
  readonly parent_index?: number | null
}

interface BodyRow {
  readonly id: string
  readonly name: string
  readonly chord_index: number
  readonly state: string
  readonly error: string | null
  /** The inner chord that filled this body slot, if it was one, and its state. */
  readonly inner_id?: string | null
  readonly inner_state?: string | null
}

const done = (row: Pick<ChordRow, "succeeded" | "failed" | "cancelled">): number =>
  Number(row.succeeded) + Number(row.failed) + Number(row.cancelled)

/** Whether a body outcome counts as a failure under the `fail` policy. */
const isFailure = (state: string): boolean => state === "failed" || state === "dead" || state === "cancelled"

/** Locks a running chord's row for the rest of the transaction and returns it (None if it is not running). */
export const lockRunning = (ctx: LedgerContext, chordId: string) =>
  Effect.map(ctx.statements.lockRunning(chordId), (rows) => rows[0])

type Counters = Pick<
  ChordRow,
  "id" | "state" | "failure_policy" | "expected" | "succeeded" | "failed" | "cancelled" | "body_open"
> & { readonly full_row?: string | null }

// The hot statement of a big chord: it returns only the counters (the full row is read once, when settling).
const bump = (ctx: LedgerContext, chordId: string, outcome: string, n: number, now: number) => {
  const { sql } = ctx
  const returning = ctx.statements.bumpReturning
  const statement =
    outcome === "succeeded"
      ? sql<Counters>`UPDATE baton_chords SET succeeded = succeeded + ${n}, last_body_at = ${now}
          WHERE id = ${chordId} RETURNING ${returning}`
      : outcome === "cancelled"
        ? sql<Counters>`UPDATE baton_chords SET cancelled = cancelled + ${n}, last_body_at = ${now}
            WHERE id = ${chordId} RETURNING ${returning}`
        : sql<Counters>`UPDATE baton_chords SET failed = failed + ${n}, last_body_at = ${now}
            WHERE id = ${chordId} RETURNING ${returning}`
  return Effect.map(statement, (rows) => rows[0])
}

/**
 * Counts body tasks that just reached a terminal state (the rows returned by their guarded transition) and, when a
 * count completes or fails a running chord, dispatches it. Runs inside the completing transaction.
 */
export const recordBodies = (
  ctx: LedgerContext,
  rows: ReadonlyArray<FinishedTask>,
  outcome: string,
  now: number
): Effect.Effect<void, SqlError> =>
  Effect.gen(function* () {
    const byChord = new Map<string, number>()
    for (const row of rows) {
      if (row.chord_id !== null) byChord.set(row.chord_id, (byChord.get(row.chord_id) ?? 0) + 1)
    }
    // Chord id order: two transactions touching the same chords lock their rows in the same order.
    for (const chordId of [...byChord.keys()].sort()) {
      const chord = yield* bump(ctx, chordId, outcome, byChord.get(chordId)!, now)
      if (chord === undefined) continue // tasks pointing at a chord that does not exist: nothing to count
      if (chord.state === "running") {
        const failing = chord.failure_policy === "fail" && isFailure(outcome)
        if (failing || done(chord) >= Number(chord.expected)) {
          // This transaction holds the row lock (the UPDATE above) until it commits.
          const full =
            typeof chord.full_row === "string"
              ? [JSON.parse(chord.full_row) as ChordRow]
              : yield* ctx.sql<ChordRow>`SELECT * FROM baton_chords WHERE id = ${chordId}`
          if (full[0] !== undefined) yield* settleChord(ctx, full[0], now, false)
        }
      } else if (chord.body_open === 1 && done(chord) >= Number(chord.expected)) {
        yield* ctx.sql`UPDATE baton_chords SET body_open = 0 WHERE id = ${chordId}`
      }
    }
  })

interface Tally {
  readonly total: number
  readonly succeeded: number
  readonly failed: number
  readonly cancelled: number
  /** The callback's `results` as JSON text (when asked for). */
  readonly results: string | undefined
}

const noError = JSON.stringify({ kind: "failure", message: "no error recorded", attempt: 0 })

/**
 * Reads the body in one pass over the chord's index entries: counts by state and, when asked, the callback's `results`
 * as JSON text, built by the database in body order from the stored (already encoded) JSON of each body task — one
 * row comes back, not one row per body task (a 100,000-task chord is one round trip).
 */
const readBody = (ctx: LedgerContext, chordId: string, results: "fail" | "continue" | undefined) => {
  const { sql } = ctx
  const quotedId = ctx.statements.quotedId
  const element =
    results === "continue"
      ? sql`CASE WHEN state = 'succeeded'
          THEN '{"_tag":"Success","taskId":' || ${quotedId} || ',"value":' || COALESCE(result, 'null') || '}'
          ELSE '{"_tag":"Failure","taskId":' || ${quotedId} || ',"state":"' || state || '","error":'
            || COALESCE(error, ${noError}) || '}' END`
      : sql`COALESCE(result, 'null')`
  const aggregate = results === undefined ? sql`NULL` : sql`string_agg(${element}, ',' ORDER BY chord_index)`
  return Effect.map(
    ctx.sql<{ total: number; succeeded: number; failed: number; cancelled: number; results: string | null }>`
      SELECT count(*) AS total,
        count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
        count(*) FILTER (WHERE state IN ('failed', 'dead')) AS failed,
        count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
        ${aggregate} AS results
      FROM baton_tasks WHERE chord_id = ${chordId}`,
    (rows): Tally => ({
      total: Number(rows[0]?.total ?? 0),
      succeeded: Number(rows[0]?.succeeded ?? 0),
      failed: Number(rows[0]?.failed ?? 0),
      cancelled: Number(rows[0]?.cancelled ?? 0),
      results: results === undefined ? undefined : `[${rows[0]?.results ?? ""}]`
    })
  )
}

/** The body task that failed first (earliest finish, then lowest index), with the inner chord of its slot if any. */
const firstFailure = (ctx: LedgerContext, chordId: string) =>
  Effect.map(
    ctx.sql<BodyRow>`SELECT t.id, t.name, t.chord_index, t.state, t.error, c.id AS inner_id, c.state AS inner_state
      FROM baton_tasks t LEFT JOIN baton_chords c ON c.parent_id = t.chord_id AND c.parent_index = t.chord_index
      WHERE t.chord_id = ${chordId} AND t.state IN ('failed', 'dead', 'cancelled')
      ORDER BY t.finished_at, t.chord_index LIMIT 1`,
    (rows) => rows[0]
  )

/** The result of settling a chord. */
export type Settled = "completed" | "failed" | "waiting" | "not-running"

/**
 * Decides a running chord whose row the transaction holds locked: counts its body from the task rows (repairing the
 * counters if they drifted), and completes or fails it under the dispatch guard.
 */
export const settleChord = (
  ctx: LedgerContext,
  chord: ChordRow,
  now: number,
  healed: boolean
): Effect.Effect<Settled, SqlError> =>
  Effect.gen(function* () {
    // The results are built in the same pass unless the counters already say this chord fails.
    const failing = chord.failure_policy === "fail" && Number(chord.failed) + Number(chord.cancelled) > 0
    const tally = yield* readBody(ctx, chord.id, failing ? undefined : chord.failure_policy)
    if (
      tally.succeeded !== Number(chord.succeeded) ||
      tally.failed !== Number(chord.failed) ||
      tally.cancelled !== Number(chord.cancelled)
    ) {
      // Only reachable if a terminal transition bypassed recordFinished (or by fault injection in tests).
      yield* Effect.logWarning("chord counters drifted from the body task rows; repaired", {
        chordId: chord.id,
        counted: [chord.succeeded, chord.failed, chord.cancelled].join("/"),
        actual: [tally.succeeded, tally.failed, tally.cancelled].join("/")
      })
      yield* ctx.sql`UPDATE baton_chords SET succeeded = ${tally.succeeded}, failed = ${tally.failed},
        cancelled = ${tally.cancelled} WHERE id = ${chord.id}`
    }
    if (chord.failure_policy === "fail" && tally.failed + tally.cancelled > 0) {
      const failing = yield* firstFailure(ctx, chord.id)
      if (failing === undefined) return "waiting"
      return (yield* failChord(ctx, chord, failing, now, healed)) ? "failed" : "not-running"
    }
    const open = tally.total - tally.succeeded - tally.failed - tally.cancelled
    if (open > 0 || tally.total < Number(chord.expected)) return "waiting"
    const results = tally.results ?? (yield* readBody(ctx, chord.id, chord.failure_policy)).results ?? "[]"
    return (yield* completeChord(ctx, chord, results, now, healed)) ? "completed" : "not-running"
  })

const parseTaskError = (text: string | null): ChordFailure["error"] => {
  if (text === null) return undefined
  try {
    return JSON.parse(text) as ChordFailure["error"]
  } catch {
    return undefined
  }
}

const cancelledError = (message: string) => JSON.stringify({ kind: "cancelled", message, attempt: 0 })

/** `{ ...args, [field]: valueJson }` as JSON text, splicing already-encoded JSON without re-parsing it. */
const payloadText = (args: Readonly<Record<string, unknown>>, field: string, valueJson: string): string => {
  const rest = JSON.stringify(args)
  return `{${JSON.stringify(field)}:${valueJson}${rest === "{}" ? "" : `,${rest.slice(1, -1)}`}}`
}

/**
 * The task row of a sealed call (callback or onError) with its payload. An inner chord's callback (`slot` given) is
 * the outer chord's body task at the inner chord's position.
 */
const sealedRow = (
  sealed: SealedCall,
  payload: string,
  now: number,
  slot?: Pick<ChordRow, "parent_id" | "parent_index">
): InsertRow => {
  const request = sealed.request
  const parent = slot?.parent_id ?? undefined
  return {
    ...toInsertRow(
      {
        ...request,
        payload: null,
        chordId: parent,
        chordIndex: parent === undefined ? undefined : Number(slot?.parent_index ?? 0),
        runAt: request.runAt ?? now + (sealed.delayMs ?? 0)
      },
      now
    ),
    payload
  }
}

/** The task that won an idempotency-key conflict against `row`. */
const existingTask = (ctx: LedgerContext, row: InsertRow) =>
  Effect.flatMap(findByIdempotencyKey(ctx.sql, row), (id) =>
    id === undefined
      ? Effect.dieMessage(`chord: task ${row.id} neither inserted nor found`)
      : Effect.succeed({ id, queue: row.queue })
  )

/**
 * Inserts a task for a sealed call (callback or onError); returns its id (an existing task's on a key conflict) and
 * the row when this call inserted it.
 */
const insertSealed = (
  ctx: LedgerContext,
  sealed: SealedCall,
  payload: string,
  now: number,
  slot?: Pick<ChordRow, "parent_id" | "parent_index">
) =>
  Effect.gen(function* () {
    const row = sealedRow(sealed, payload, now, slot)
    const inserted = yield* ctx.insertTasks([row])
    yield* ctx.statements.wakeInserted([row.queue])
    if (inserted[0] !== undefined) return { id: inserted[0], queue: row.queue, row: row as InsertRow | undefined }
    return { ...(yield* existingTask(ctx, row)), row: undefined }
  })

const chordEntry = (
  chord: ChordRow,
  kind: string,
  outcome: string,
  at: number,
  task?: { readonly id: string; readonly name: string; readonly queue: string | null }
): LogEntry => ({
  kind,
  task_id: task?.id ?? null,
  task_name: task?.name ?? null,
  queue: task?.queue ?? null,
  namespace: chord.namespace,
  tags: chord.tags,
  outcome,
  chord_id: chord.id,
  run_id: null,
  at
})

const recordDispatch = (chord: Pick<ChordRow, "created_at" | "last_body_at">, at: number, healed: boolean) =>
  Effect.zipRight(
    Effect.zipRight(
      chord.last_body_at === null
        ? Effect.void
        : Metric.update(dispatchLatency, Math.max(0, at - Number(chord.last_body_at))),
      Metric.update(timeToCallback, Math.max(0, at - Number(chord.created_at)))
    ),
    healed ? Metric.increment(chordsHealed) : Effect.void
  )

const completeChord = (
  ctx: LedgerContext,
  chord: ChordRow,
  results: string,
  now: number,
  healed: boolean
): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function* () {
    const sealed = JSON.parse(chord.callback) as SealedCall
    const at = Math.max(now, yield* Clock.currentTimeMillis)
    const payload = payloadText(sealed.args, "results", results)
    const entries = (task: { readonly id: string; readonly queue: string }) => [
      chordEntry(chord, "chord.completed", "succeeded", at),
      chordEntry(chord, "chord.callback.enqueued", "succeeded", at, {
        id: task.id,
        name: sealed.request.name,
        queue: task.queue
      })
    ]
    const task = yield* ctx.statements.dispatch(ctx, chord, sealed, payload, at, healed, entries)
    // The guard: of all transactions that get here, only one sees the chord running and undispatched.
    if (task === undefined) return false
    // On Postgres the dispatch statement logged them itself (unless the callback was an existing task).
    if (!task.logged) yield* ctx.append(entries(task))
    yield* Metric.increment(chordsCompleted)
    yield* recordDispatch(chord, at, healed)
    return true
  }).pipe(
    Effect.withSpan("ChordRegistry.dispatch", {
      attributes: { chordId: chord.id, callback: chord.callback_name, expected: chord.expected, healed }
    })
  )

/** Cancels the body tasks still pending or running (skipping rows another transaction holds; the sweep retries). */
const cancelBody = (ctx: LedgerContext, chordId: string, message: string, now: number) =>
  Effect.gen(function* () {
    const { sql } = ctx
    const error = cancelledError(message)
    const set = sql`state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, error = ${error},
      finished_at = ${now}, updated_at = ${now}`
    const rows = yield* ctx.statements.cancelBodyRows(chordId, set)
    yield* ctx.append(taskEntries(rows, "cancelled", now))
    yield* sql`UPDATE baton_chords SET cancelled = cancelled + ${rows.length} WHERE id = ${chordId}`
    // Its running inner chords are cancelled too (each ends its slot here, counted as cancelled).
    for (const inner of yield* ctx.statements.lockInner(chordId)) yield* cancelLocked(ctx, inner, now)
    yield* sql`UPDATE baton_chords SET body_open = CASE
        WHEN EXISTS (SELECT 1 FROM baton_tasks WHERE chord_id = ${chordId} AND state IN ('pending', 'running'))
          OR EXISTS (SELECT 1 FROM baton_chords WHERE parent_id = ${chordId} AND state = 'running')
        THEN 1 ELSE 0 END
      WHERE id = ${chordId}`
    return rows.length
  })

/**
 * An inner chord ended without its callback (failed or cancelled, in this transaction): ends the outer chord's body
 * slot it fills with a task row moved to `failed` (or `cancelled`) through the guarded transition, its error naming
 * the inner chord (its `ChordFailure` in `error.error`), logged and counted like any body task — which fails the outer
 * chord (policy `fail`) under the dispatch guard, or becomes its `Failure` outcome (policy `continue`).
 */
const endSlot = (
  ctx: LedgerContext,
  chord: ChordRow,
  failure: ChordFailure,
  state: "failed" | "cancelled",
  now: number
): Effect.Effect<void, SqlError> =>
  Effect.gen(function* () {
    if (chord.parent_id === null || chord.parent_id === undefined) return
    const { sql } = ctx
    const sealed = JSON.parse(chord.callback) as SealedCall
    const row = sealedRow({ ...sealed, request: { ...sealed.request, idempotencyKey: undefined } }, "null", now, chord)
    yield* ctx.insertTasks([{ ...row, run_at: now }])
    const error = JSON.stringify({
      kind: state === "cancelled" ? "cancelled" : "failure",
      message: `inner chord ${chord.id} ${state === "cancelled" ? "was cancelled" : `failed (${failure.reason})`}`,
      attempt: 0,
      error: failure
    })
    const rows = yield* guardedFinish(
      sql,
      sql`state = ${state}, error = ${error}, finished_at = ${now}, updated_at = ${now}`,
      sql`id = ${row.id} AND state = 'pending'`
    )
    yield* ctx.append(taskEntries(rows, state, now))
    yield* recordBodies(ctx, rows, state, now)
  })

/** Cancels a running chord whose row this transaction holds (its body and inner chords too); its slot if inner. */
const cancelLocked = (ctx: LedgerContext, chord: ChordRow, now: number): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function* () {
    const failure: ChordFailure = { chordId: chord.id, reason: "cancelled" }
    const won = yield* ctx.sql<{ id: string }>`UPDATE baton_chords SET state = 'cancelled', dispatched_at = ${now},
      failure = ${JSON.stringify(failure)}
      WHERE id = ${chord.id} AND state = 'running' AND dispatched_at IS NULL RETURNING id`
    if (won.length === 0) return false
    yield* cancelBody(ctx, chord.id, `chord ${chord.id} cancelled`, now)
    yield* ctx.append([chordEntry(chord, "chord.failed", "cancelled", now)])
    yield* endSlot(ctx, chord, failure, "cancelled", now)
    return true
  })

const failChord = (
  ctx: LedgerContext,
  chord: ChordRow,
  failing: BodyRow | undefined,
  now: number,
  healed: boolean
): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function* () {
    const { sql } = ctx
    const at = Math.max(now, yield* Clock.currentTimeMillis)
    const error = failing === undefined ? undefined : parseTaskError(failing.error)
    // No failing body task: the chord failed at its deadline.
    const innerFailed =
      failing?.inner_id !== null &&
      failing?.inner_id !== undefined &&
      (failing.inner_state === "failed" || failing.inner_state === "cancelled")
    const failure: ChordFailure =
      failing === undefined
        ? { chordId: chord.id, reason: "deadline" }
        : {
            chordId: chord.id,
            reason: innerFailed ? "inner_failed" : "body_failed",
            taskId: failing.id,
            taskName: failing.name,
            index: Number(failing.chord_index),
            taskState: failing.state,
            ...(error === undefined ? {} : { error }),
            ...(failing.inner_id === null || failing.inner_id === undefined ? {} : { innerChordId: failing.inner_id })
          }
    const failureJson = JSON.stringify(failure)
    const won = yield* sql<{ id: string }>`UPDATE baton_chords SET state = 'failed', dispatched_at = ${at},
      failure = ${failureJson}, healed = ${healed ? 1 : 0}
      WHERE id = ${chord.id} AND state = 'running' AND dispatched_at IS NULL RETURNING id`
    if (won.length === 0) return false
    yield* cancelBody(ctx, chord.id, `chord ${chord.id} failed`, at)
    const entries: Array<LogEntry> = [
      failing === undefined
        ? chordEntry(chord, "chord.failed", "failed", at)
        : chordEntry(chord, "chord.failed", "failed", at, { id: failing.id, name: failing.name, queue: null })
    ]
    if (chord.on_error !== null) {
      const sealed = JSON.parse(chord.on_error) as SealedCall
      const task = yield* insertSealed(ctx, sealed, payloadText(sealed.args, "failure", failureJson), at)
      yield* sql`UPDATE baton_chords SET error_task_id = ${task.id} WHERE id = ${chord.id}`
      entries.push(
        chordEntry(chord, "chord.callback.enqueued", "failed", at, {
          id: task.id,
          name: sealed.request.name,
          queue: task.queue
        })
      )
    }
    yield* ctx.append(entries)
    yield* Metric.increment(failing === undefined ? chordsExpired : chordsFailed)
    yield* recordDispatch(chord, at, healed)
    // An inner chord: its outer body slot fails with it (level by level, in this transaction).
    yield* endSlot(ctx, chord, failure, "failed", at)
    return true
  }).pipe(
    Effect.withSpan("ChordRegistry.fail", {
      attributes: {
        chordId: chord.id,
        callback: chord.callback_name,
        failedTask: failing?.name ?? "(deadline)",
        healed
      }
    })
  )

/**
 * A running chord past its deadline, whose row the transaction holds locked: settled normally if its body is in fact
 * decided (complete, or failed under the `fail` policy), else failed with reason `deadline` under the dispatch guard
 * (pending body tasks cancelled, onError enqueued once). Whichever process gets here first wins; the others find the
 * chord no longer running.
 */
export const expireChord = (ctx: LedgerContext, chord: ChordRow, now: number): Effect.Effect<Settled, SqlError> =>
  Effect.gen(function* () {
    if (chord.deadline_at === null || chord.deadline_at === undefined || Number(chord.deadline_at) > now) {
      return "waiting"
    }
    const settled = yield* settleChord(ctx, chord, now, false)
    if (settled !== "waiting") return settled
    return (yield* failChord(ctx, chord, undefined, now, false)) ? "failed" : "not-running"
  })

/** Cancels a running chord under the dispatch guard; true if this call cancelled it. */
export const cancelChord = (ctx: LedgerContext, chordId: string, now: number): Effect.Effect<boolean, SqlError> =>
  Effect.flatMap(lockRunning(ctx, chordId), (chord) =>
    chord === undefined ? Effect.succeed(false) : cancelLocked(ctx, chord, now)
  )

/** Cancels what is left of a failed or cancelled chord's body; true once nothing is left. */
export const sweepBody = (ctx: LedgerContext, chordId: string, now: number): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function* () {
    const rows = yield* ctx.sql<{ id: string; state: string }>`UPDATE baton_chords SET body_open = body_open
      WHERE id = ${chordId} AND body_open = 1 RETURNING id, state`
    const chord = rows[0]
    if (chord === undefined) return true
    yield* cancelBody(ctx, chordId, `chord ${chordId} ${chord.state}`, now)
    const left = yield* ctx.sql<{ body_open: number }>`SELECT body_open FROM baton_chords WHERE id = ${chordId}`
    return Number(left[0]?.body_open ?? 0) === 0
  })

// ---- the dialects' statements, chosen once (makeLedgerContext) ----------------------------------------------------

const pgStatements = (sql: SqlClient.SqlClient, channel: string, completions: string): LedgerStatements => ({
  lockRunning: (chordId) => sql<ChordRow>`SELECT * FROM baton_chords WHERE id = ${chordId} AND state = 'running'
    FOR UPDATE`,
  // When this count decides the chord, the full row comes back too (as JSON), saving the re-read.
  bumpReturning: sql.literal(`id, state, failure_policy, expected, succeeded, failed, cancelled, body_open,
        CASE WHEN state = 'running' AND (succeeded + failed + cancelled >= expected
          OR (failure_policy = 'fail' AND failed + cancelled > 0)) THEN row_to_json(baton_chords.*)::text END AS full_row`),
  quotedId: sql`to_json(id)::text`,
  // The task insert sent its NOTIFY itself.
  wakeInserted: () => Effect.void,
  dispatch: (ctx, chord, sealed, payload, at, healed, entries) =>
    Effect.gen(function* () {
      // The guard, the callback's insert (only if the guard won), its wake-up, the chord's pointer to it and the
      // dispatch's log rows with their NOTIFY in ONE statement: this transaction holds the chord row, so its round
      // trips are on the fan-in's critical path.
      const row = sealedRow(sealed, payload, at, chord)
      // The hand-off (`handoff.ts`): inserted already leased to the committing worker, without a wake-up.
      const lease = takeLease(yield* FiberRef.get(currentHandoff), row, at)
      const [outcome] = yield* sql<{
        won: number
        inserted: string | null
        state: string | null
        logged: number
      }>`WITH won AS (
          UPDATE baton_chords SET state = 'completed', dispatched_at = ${at}, healed = ${healed ? 1 : 0},
            callback_task_id = ${row.id}
          WHERE id = ${chord.id} AND state = 'running' AND dispatched_at IS NULL RETURNING id
        ), ins AS (
          ${lease === undefined ? insertRecordPg(sql, row) : insertLeasedPg(sql, row, lease)}
          WHERE EXISTS (SELECT 1 FROM won)
          ON CONFLICT DO NOTHING RETURNING id, queue, state
        ), log AS (
          INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
          SELECT kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at
          FROM json_populate_recordset(NULL::baton_completions, ${JSON.stringify(entries(row))}::json)
          WHERE EXISTS (SELECT 1 FROM ins)
          RETURNING seq
        ), log_notified AS (
          SELECT pg_notify(${completions}, max(seq)::text) AS n FROM log HAVING count(*) > 0
        )
        SELECT (SELECT count(*) FROM won) AS won, (SELECT id FROM ins) AS inserted,
          (SELECT state FROM ins) AS state,
          (SELECT count(pg_notify(${channel}, queue)) FROM ins WHERE state = 'pending') AS notified,
          (SELECT count(*) FROM log) AS logged, (SELECT count(*) FROM log_notified) AS log_notified`
      const handed = lease !== undefined && outcome?.inserted != null && outcome.state === "running"
      if (lease !== undefined && !handed) lease.offer.free++
      if (outcome === undefined || Number(outcome.won) === 0) return undefined
      if (outcome.inserted !== null) {
        if (handed) handOver(row, lease)
        return { id: outcome.inserted, queue: row.queue, logged: Number(outcome.logged) > 0 }
      }
      // The callback's idempotency key named an existing task: point the chord at that one.
      const task = yield* existingTask(ctx, row)
      yield* sql`UPDATE baton_chords SET callback_task_id = ${task.id} WHERE id = ${chord.id}`
      return { ...task, logged: false }
    }),
  lockInner: (chordId) => sql<ChordRow>`SELECT * FROM baton_chords WHERE parent_id = ${chordId} AND state = 'running'
    ORDER BY id FOR UPDATE SKIP LOCKED`,
  cancelBodyRows: (chordId, set) => sql<FinishedTask>`UPDATE baton_tasks SET ${set} WHERE id IN (
      SELECT id FROM baton_tasks WHERE chord_id = ${chordId} AND state IN ('pending', 'running')
      FOR UPDATE SKIP LOCKED) RETURNING ${sql.literal(finishedColumns)}`
})

const sqliteStatements = (sql: SqlClient.SqlClient, wake: ReturnType<typeof makeWakeQueues>): LedgerStatements => ({
  // A write first: a deferred transaction that reads before it writes can fail to upgrade its lock.
  lockRunning: (chordId) => sql<ChordRow>`UPDATE baton_chords SET state = state WHERE id = ${chordId}
    AND state = 'running' RETURNING *`,
  bumpReturning: sql.literal("id, state, failure_policy, expected, succeeded, failed, cancelled, body_open"),
  quotedId: sql`json_quote(id)`,
  wakeInserted: wake,
  dispatch: (ctx, chord, sealed, payload, at, healed) =>
    Effect.gen(function* () {
      const won = yield* sql<{ id: string }>`UPDATE baton_chords SET state = 'completed', dispatched_at = ${at},
        healed = ${healed ? 1 : 0} WHERE id = ${chord.id} AND state = 'running' AND dispatched_at IS NULL RETURNING id`
      if (won.length === 0) return undefined
      const task = yield* insertSealed(ctx, sealed, payload, at, chord)
      yield* sql`UPDATE baton_chords SET callback_task_id = ${task.id} WHERE id = ${chord.id}`
      // The hand-off (`handoff.ts`): the callback this call inserted, leased to the committing worker.
      const lease = task.row === undefined ? undefined : takeLease(yield* FiberRef.get(currentHandoff), task.row, at)
      if (lease !== undefined) {
        const [leased] = yield* leaseInserted(sql, task.id, lease)
        if (leased === undefined) lease.offer.free++
        else lease.offer.handed.push(toClaimed(leased))
      }
      return { id: task.id, queue: task.queue, logged: false }
    }),
  lockInner: (chordId) => sql<ChordRow>`SELECT * FROM baton_chords WHERE parent_id = ${chordId} AND state = 'running'
    ORDER BY id`,
  cancelBodyRows: (chordId, set) => sql<FinishedTask>`UPDATE baton_tasks SET ${set}
    WHERE chord_id = ${chordId} AND state IN ('pending', 'running') RETURNING ${sql.literal(finishedColumns)}`
})

/** Builds the ledger's context for one storage: its log writer, task insert and dialect statements, chosen once. */
export const makeLedgerContext = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string
): LedgerContext => ({
  sql,
  append: makeAppendLog(sql, dialect, channelPrefix),
  insertTasks: makeInsertTasks(sql, dialect, channelPrefix),
  statements: byDialect(dialect, {
    pg: () => pgStatements(sql, tasksChannel(channelPrefix), completionsChannel(channelPrefix)),
    sqlite: () => sqliteStatements(sql, makeWakeQueues(sql, dialect, channelPrefix))
  })
})
