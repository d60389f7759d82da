/**
 * Appending to the completions log (`baton_completions`). Called only inside the transaction that moves a task (or a
 * chord, or a checkpoint) to its terminal state, so the event exists if and only if that state change committed.
 * On Postgres the append and its NOTIFY (ids only, delivered at commit) are one statement.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type { Dialect } from "../../Storage.js"
import { byDialect } from "./dialect.js"
import type { FinishedTask } from "./taskRows.js"
import { completionsChannel, signalAppend } from "./wakes.js"

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
  /** `task.progress` entries only. */
  readonly progress?: number | undefined
  readonly progress_message?: string | null | undefined
}

/** Appends entries to the log (and NOTIFYs on Postgres, delivered at commit). Must run inside a transaction. */
export type AppendLog = (entries: ReadonlyArray<LogEntry>) => Effect.Effect<void, SqlError>

/** The log writer of a dialect, chosen once. */
export const makeAppendLog = (sql: SqlClient.SqlClient, dialect: Dialect, channelPrefix: string): AppendLog => {
  const append = byDialect<AppendLog>(dialect, {
    pg: () => {
      const channel = completionsChannel(channelPrefix)
      // One round trip: insert and notify with ids only (never payloads: NOTIFY is limited to 8000 bytes).
      return (entries) =>
        sql`WITH ins AS (
          INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at,
            progress, progress_message)
          SELECT kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at, progress, progress_message
          FROM json_populate_recordset(NULL::baton_completions, ${JSON.stringify(entries)}::json)
          RETURNING seq
        ) SELECT pg_notify(${channel}, (SELECT max(seq) FROM ins)::text)`.pipe(Effect.asVoid)
    },
    sqlite: () => (entries) =>
      sql`INSERT INTO baton_completions ${sql.insert(entries as unknown as Array<Record<string, unknown>>)}`.pipe(
        Effect.zipRight(Effect.sync(() => signalAppend(sql)))
      )
  })
  return (entries) => (entries.length === 0 ? Effect.void : append(entries))
}

/** Appends entries to the log through a one-off writer (tests and tools; services build theirs once). */
export const appendLog = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string,
  entries: ReadonlyArray<LogEntry>
): Effect.Effect<void, SqlError> => makeAppendLog(sql, dialect, channelPrefix)(entries)

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
