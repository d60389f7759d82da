/**
 * Appending to the completions log. Called only inside the transaction that moves a task (or a chord, or a
 * checkpoint) to its terminal state, so the event exists if and only if that state change committed.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type { Dialect } from "../Storage.js"
import { type LedgerContext, recordBodies } from "./chordLedger.js"

/** The NOTIFY channel carrying "the completions log grew" (payload: the highest new seq). */
export const completionsChannel = (prefix: string): string => `${prefix}_completions`
/** The NOTIFY channel carrying "work is available on queue X" (payload: the queue name). */
export const tasksChannel = (prefix: string): string => `${prefix}_tasks`

/** One row of the completions log before insertion. */
export interface LogEntry {
  readonly kind: string
  readonly task_id: string | null
  readonly task_name: string | null
  readonly queue: string | null
  readonly namespace: string
  readonly tags: string
  readonly outcome: string
  readonly chord_id: string | null
  readonly run_id: string | null
  readonly at: number
}

/** Appends entries to the log (and NOTIFYs on Postgres, delivered at commit). Must run inside a transaction. */
export const appendLog = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string,
  entries: ReadonlyArray<LogEntry>
): Effect.Effect<void, SqlError> => {
  if (entries.length === 0) return Effect.void
  if (dialect === "pg") {
    // One round trip: insert and notify with ids only (never payloads: NOTIFY is limited to 8000 bytes).
    return sql`WITH ins AS (
      INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
      SELECT kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at
      FROM json_populate_recordset(NULL::baton_completions, ${JSON.stringify(entries)}::json)
      RETURNING seq
    ) SELECT pg_notify(${completionsChannel(channelPrefix)}, (SELECT max(seq) FROM ins)::text)`.pipe(Effect.asVoid)
  }
  return sql`INSERT INTO baton_completions ${sql.insert(entries as unknown as Array<Record<string, unknown>>)}`.pipe(
    Effect.zipRight(Effect.sync(() => signalAppend(sql)))
  )
}

/**
 * Synchronous in-process listeners per SQL client. Not a PubSub: they must run inside the writing transaction's
 * statement sequence, synchronously, with nothing to await (see the two uses below).
 */
const inProcessSignal = <A>() => {
  const listeners = new WeakMap<object, Set<(value: A) => void>>()
  return {
    fire: (sql: SqlClient.SqlClient, value: A): void => {
      const registered = listeners.get(sql)
      if (registered !== undefined) for (const listener of registered) listener(value)
    },
    on: (sql: SqlClient.SqlClient, listener: (value: A) => void): (() => void) => {
      let registered = listeners.get(sql)
      if (registered === undefined) listeners.set(sql, (registered = new Set()))
      const set = registered
      set.add(listener)
      return () => {
        set.delete(listener)
      }
    }
  }
}

// SQLite has no NOTIFY: in-process subscribers (SqlCompletionBackend) register here to be woken when this process
// appends. Fired inside the transaction; a reader on the same SQLite connection waits for its commit (one writer).
const appendSignal = inProcessSignal<void>()
const signalAppend = (sql: SqlClient.SqlClient): void => appendSignal.fire(sql, undefined)

/** Calls `listener` whenever this process appends to the log through `sql` (SQLite). Returns the unregister. */
export const onAppend = (sql: SqlClient.SqlClient, listener: () => void): (() => void) => appendSignal.on(sql, listener)

/** A task row that just reached a terminal state, as returned by the guarded UPDATE. */
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

/** Log entries for finished tasks. */
export const taskEntries = (rows: ReadonlyArray<FinishedTask>, outcome: string, now: number): ReadonlyArray<LogEntry> =>
  rows.map((row) => ({
    kind: "task",
    task_id: row.id,
    task_name: row.name,
    queue: row.queue,
    namespace: row.namespace,
    tags: row.tags,
    outcome,
    chord_id: row.chord_id,
    run_id: row.run_id,
    at: now
  }))

/** The chord ledger's view of a transaction: its client and the log writers. */
export const ledgerContext = (sql: SqlClient.SqlClient, dialect: Dialect, channelPrefix: string): LedgerContext => ({
  sql,
  dialect,
  append: (entries) => appendLog(sql, dialect, channelPrefix, entries),
  appendFinished: (rows, outcome, now) => appendLog(sql, dialect, channelPrefix, taskEntries(rows, outcome, now)),
  tasksChannel: tasksChannel(channelPrefix),
  wake: (queues) =>
    dialect === "pg"
      ? Effect.forEach(new Set(queues), (queue) => sql`SELECT pg_notify(${tasksChannel(channelPrefix)}, ${queue})`, {
          discard: true
        })
      : Effect.sync(() => signalEnqueued(sql, queues))
})

// SQLite has no NOTIFY either for "tasks were enqueued": a task inserted inside a transaction of this process (a chord
// callback dispatched by a completion) wakes this process's workers through these listeners (SqlTaskQueue registers
// one). Fired inside the transaction; the woken worker's claim runs on the same SQLite connection, which the
// transaction holds, so the claim runs after the commit and finds the task.
const enqueueSignal = inProcessSignal<ReadonlyArray<string>>()
const signalEnqueued = (sql: SqlClient.SqlClient, queues: ReadonlyArray<string>): void =>
  enqueueSignal.fire(sql, queues)

/** Calls `listener` with the queues whenever a transaction of this process enqueues tasks through `sql` (SQLite). */
export const onEnqueued = (sql: SqlClient.SqlClient, listener: (queues: ReadonlyArray<string>) => void): (() => void) =>
  enqueueSignal.on(sql, listener)

/**
 * Records that tasks reached a terminal state, inside the transaction of their guarded transition: log rows, NOTIFY,
 * and, for body tasks of a chord, the chord's counters (and its dispatch when this completes it). The counters move
 * in this same transaction, so a completion is counted if and only if the task's own transition committed — once.
 * Chord bookkeeping is plain SQL on tables every migrated database has: it does not depend on any service being
 * installed in the completing process.
 */
export const recordFinished = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string,
  rows: ReadonlyArray<FinishedTask>,
  outcome: string,
  now: number
): Effect.Effect<void, SqlError> => {
  if (rows.length === 0) return Effect.void
  // The chord counters last: their row lock is then held only for the rest of this transaction (the commit).
  return Effect.zipRight(
    appendLog(sql, dialect, channelPrefix, taskEntries(rows, outcome, now)),
    recordChordBodies(sql, dialect, channelPrefix, rows, outcome, now)
  )
}

/**
 * The chord half of `recordFinished`: counts the chord body tasks among `rows` (and dispatches what that completes),
 * for a caller that already appended the rows' log entries in this transaction.
 */
export const recordChordBodies = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string,
  rows: ReadonlyArray<FinishedTask>,
  outcome: string,
  now: number
): Effect.Effect<void, SqlError> => {
  const chordRows = rows.filter((row) => row.chord_id !== null)
  if (chordRows.length === 0) return Effect.void
  return recordBodies(ledgerContext(sql, dialect, channelPrefix), chordRows, outcome, now)
}
