/**
 * The ONE way a task finishes. Every terminal transition (succeeded, failed, dead, cancelled) goes through these
 * steps, in one transaction, in this order:
 *
 * 1. the guarded UPDATE of the task rows (`… WHERE id AND lease_id AND state = 'running' RETURNING …`): only the rows
 *    it returns count, so a task that runs twice (lease lost) finishes once;
 * 2. one completions-log row per returned task (`completionLog.ts`; NOTIFY on Postgres, delivered at commit);
 * 3. for chord body tasks among them, the chord counters (`chordLedger.recordBodies`), last, so the counter row lock is
 *    held only for the rest of the transaction;
 * 4. when a count decides its chord, the dispatch under the guard (callback insert, or failure and onError) in that
 *    same transaction (`chordLedger.settleChord`).
 *
 * A batch's log rows follow the order of its request (the order its handlers finished in).
 *
 * The dialects differ only in how many statements that takes: on Postgres a success is steps 1 and 2 in ONE statement
 * (and, for a batch without chord body tasks, one autocommitted statement); on SQLite each step is its own statement.
 * The strategy is chosen once, when the task queue is built. Callers own the transaction.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type { Dialect } from "../../Storage.js"
import { type FastDispatch, type LedgerContext, recordBodies, recordFastDispatches } from "./chordLedger.js"
import { taskEntries } from "./completionLog.js"
import { byDialect } from "./dialect.js"
import { type FinishedTask, guardedFinish } from "./taskRows.js"
import { currentHandoff } from "./handoff.js"
import { completionsChannel, tasksChannel } from "./wakes.js"
import * as Prepared from "./prepared.js"

/** What `baton_succeed_bodies` returns. */
interface BodiesResult {
  readonly done: ReadonlyArray<FinishedTask>
  readonly dispatched: ReadonlyArray<FastDispatch>
}

/** A claimed task to mark succeeded: its id, the lease it was claimed under, and its encoded result. */
export interface Success {
  readonly id: string
  readonly leaseId: string
  readonly result: unknown
}

/** The finish path of one storage. */
export interface FinishPath {
  /** Marks tasks succeeded (steps 1–4). Run inside a transaction. The rows that moved. */
  readonly succeed: (
    successes: ReadonlyArray<Success>,
    now: number
  ) => Effect.Effect<ReadonlyArray<FinishedTask>, SqlError>
  /**
   * Postgres only (undefined on SQLite): marks tasks succeeded that are not chord body tasks, steps 1 and 2 in one
   * autocommitted statement; chord body tasks are left alone (their counters must move in the same transaction).
   */
  readonly succeedPlain:
    | ((
        successes: ReadonlyArray<Success>,
        now: number
      ) => Effect.Effect<ReadonlyArray<Pick<FinishedTask, "id">>, SqlError>)
    | undefined
  /**
   * Postgres only (undefined on SQLite): marks tasks succeeded, chord body tasks among them, steps 1–4 in ONE
   * autocommitted call (`baton_succeed_bodies`, migration 0012) when every chord it decides completes with all its
   * body tasks succeeded; undefined (nothing written) when a chord needs the general path (`succeed` in a transaction).
   */
  readonly succeedBodies:
    | ((
        successes: ReadonlyArray<Success>,
        now: number
      ) => Effect.Effect<ReadonlyArray<FinishedTask> | undefined, SqlError>)
    | undefined
  /** Any terminal transition: `UPDATE … SET set WHERE where` as step 1, then steps 2–4. Run inside a transaction. */
  readonly finish: (
    set: Statement.Statement<unknown>,
    where: Statement.Statement<unknown>,
    outcome: string,
    now: number
  ) => Effect.Effect<ReadonlyArray<FinishedTask>, SqlError>
}

const successesJson = (successes: ReadonlyArray<Success>) =>
  JSON.stringify(successes.map((s) => ({ id: s.id, lease_id: s.leaseId, result: JSON.stringify(s.result ?? null) })))

/**
 * The request as one JSON object keyed by task id: the position of its first entry (`o`), and each lease it is
 * completed under with that entry's encoded result (`l`: lease id → result). A task can appear twice in a batch
 * (its lease expired and it ran again): only the entry whose lease the row still holds moves it.
 */
const requestJson = (successes: ReadonlyArray<Success>) => {
  const request: Record<string, { o: number; l: Record<string, string> }> = {}
  for (let i = 0; i < successes.length; i++) {
    const s = successes[i]!
    const entry = (request[s.id] ??= { o: i, l: {} })
    entry.l[s.leaseId] ??= JSON.stringify(s.result ?? null)
  }
  return JSON.stringify(request)
}

/** The distinct task ids of a request (one array parameter). */
const idsOf = (successes: ReadonlyArray<Success>): Array<string> => [...new Set(successes.map((s) => s.id))]

/**
 * The rows in the order of the request (RETURNING gives no order): a batch's log rows, and so its completion events,
 * follow the order its handlers finished in.
 */
const inRequestOrder = (
  rows: ReadonlyArray<FinishedTask>,
  successes: ReadonlyArray<Success>
): ReadonlyArray<FinishedTask> => {
  if (rows.length < 2) return rows
  const position = new Map<string, number>()
  for (let i = 0; i < successes.length; i++) position.set(successes[i]!.id, i)
  return [...rows].sort((a, b) => position.get(a.id)! - position.get(b.id)!)
}

/** Builds the finish path (the dialect's statements chosen once). */
export const makeFinishPath = (
  sql: SqlClient.SqlClient,
  dialect: Dialect,
  channelPrefix: string,
  ledger: LedgerContext
): FinishPath => {
  // Steps 3 and 4: the chord body tasks among the rows.
  const countChordBodies = (rows: ReadonlyArray<FinishedTask>, outcome: string, now: number) => {
    const chordRows = rows.filter((row) => row.chord_id !== null)
    return chordRows.length === 0 ? Effect.void : recordBodies(ledger, chordRows, outcome, now)
  }
  // Steps 2 to 4, for rows whose guarded update did not log them itself.
  const afterUpdate = (rows: ReadonlyArray<FinishedTask>, outcome: string, now: number) =>
    rows.length === 0
      ? Effect.void
      : Effect.zipRight(ledger.append(taskEntries(rows, outcome, now)), countChordBodies(rows, outcome, now))

  const finish: FinishPath["finish"] = (set, where, outcome, now) =>
    Effect.tap(guardedFinish(sql, set, where), (rows) => afterUpdate(rows, outcome, now))

  return byDialect<FinishPath>(dialect, {
    pg: () => {
      const channel = completionsChannel(channelPrefix)
      // Steps 1 and 2 as ONE statement: the guarded UPDATE, its completions-log rows and their NOTIFY. (The NOTIFY is
      // a column of the result on purpose: a join the result does not read from is removed by the planner, and its
      // NOTIFY with it.) `plainOnly` leaves chord body tasks alone.
      // The plan must reach the tasks through the primary key whatever the statistics say (a table that grew from
      // empty a second ago has none until autovacuum analyzes it: a minute later by default, never where autovacuum
      // is off, as on this project's CI server). So there is no join for the planner to order: the request is one
      // JSON object keyed by task id (`requestJson`), the tasks are picked by an array of their ids (one parameter,
      // `id = ANY(…)`), and the guard's `state = 'running'` is compared with a subquery's value, not a constant (a
      // constant matches the partial lease index, whose entries for finished tasks linger until vacuum).
      // Joining a JSON recordset instead, with a stale estimate of one matching task, the planner drove a nested loop
      // from the tasks side and re-read every request row for each task: auto_explain in a 20,000-task drain showed
      // 9–34 ms per batch of 160–251 rows.
      // What comes back: a plain batch's caller needs only the ids (fewer bytes to parse per task on the hot path).
      const plainColumns = sql.literal("id")
      const allColumns = sql.literal("id, name, queue, namespace, tags, chord_id, chord_index, run_id")
      const updateAndLog = (successes: ReadonlyArray<Success>, now: number, plainOnly: boolean) =>
        Prepared.run(
          sql,
          sql<FinishedTask>`WITH req AS (SELECT ${requestJson(successes)}::jsonb AS m), done AS (
            UPDATE baton_tasks t SET state = 'succeeded', result = req.m -> t.id -> 'l' ->> t.lease_id,
              lease_id = NULL, lease_expires_at = NULL, finished_at = ${now}, updated_at = ${now}
            FROM req
            WHERE t.id = ANY(${idsOf(successes)}::text[])
              AND (req.m -> t.id -> 'l' ->> t.lease_id) IS NOT NULL AND t.state = (SELECT 'running')
              ${plainOnly ? sql`AND t.chord_id IS NULL` : sql``}
            RETURNING t.id, t.name, t.queue, t.namespace, t.tags, t.chord_id, t.chord_index, t.run_id,
              (req.m -> t.id ->> 'o')::int AS ord
          ), log AS (
            INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
            SELECT 'task', id, name, queue, namespace, tags, 'succeeded', chord_id, run_id, ${now}::bigint FROM done
            ORDER BY ord
            RETURNING seq
          ), notified AS (
            SELECT pg_notify(${channel}, max(seq)::text) AS n FROM log HAVING count(*) > 0
          )
          SELECT ${plainOnly ? plainColumns : allColumns}, (SELECT count(*) FROM notified) AS notified FROM done`
        )
      const tasks = tasksChannel(channelPrefix)
      const succeedBodies = (successes: ReadonlyArray<Success>, now: number) =>
        Effect.gen(function* () {
          const offer = yield* FiberRef.get(currentHandoff)
          const offerJson =
            offer === undefined
              ? null
              : JSON.stringify({
                  w: offer.workerId,
                  ms: offer.leaseMs,
                  names: [...offer.names],
                  queues: [...offer.queues],
                  free: offer.free
                })
          // The function's jsonb comes back as text: one JSON.parse, whatever the driver's type parsers.
          const result = yield* Prepared.run(
            sql,
            sql<{
              r: string
            }>`SELECT baton_succeed_bodies(${requestJson(successes)}::jsonb, ${idsOf(successes)}::text[],
              ${now}, ${channel}, ${tasks}, ${offerJson}::jsonb)::text AS r`
          ).pipe(
            Effect.map((rows): BodiesResult | undefined => JSON.parse(rows[0]!.r) as BodiesResult),
            // SQLSTATE BTN01: a chord this batch decides needs the general path; the call rolled back whole.
            Effect.catchIf(
              (error) => (error.cause as { code?: unknown } | undefined)?.code === "BTN01",
              () => Effect.succeed(undefined)
            )
          )
          if (result === undefined) return undefined
          if (result.dispatched.length > 0) yield* recordFastDispatches(result.dispatched, now)
          return result.done
        })
      return {
        succeed: (successes, now) =>
          Effect.tap(updateAndLog(successes, now, false), (rows) => countChordBodies(rows, "succeeded", now)),
        succeedPlain: (successes, now) => updateAndLog(successes, now, true),
        succeedBodies,
        finish
      }
    },
    sqlite: () => {
      const update = (successes: ReadonlyArray<Success>, now: number) =>
        sql<FinishedTask>`UPDATE baton_tasks SET state = 'succeeded', result = v.result,
            lease_id = NULL, lease_expires_at = NULL, finished_at = ${now}, updated_at = ${now}
          FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.lease_id') AS lease_id,
                  json_extract(value, '$.result') AS result FROM json_each(${successesJson(successes)})) AS v
          WHERE baton_tasks.id = v.id AND baton_tasks.lease_id = v.lease_id AND baton_tasks.state = 'running'
          RETURNING baton_tasks.id, baton_tasks.name, baton_tasks.queue, baton_tasks.namespace,
            baton_tasks.tags, baton_tasks.chord_id, baton_tasks.chord_index, baton_tasks.run_id`
      return {
        succeed: (successes, now) =>
          Effect.tap(
            Effect.map(update(successes, now), (rows) => inRequestOrder(rows, successes)),
            (rows) => afterUpdate(rows, "succeeded", now)
          ),
        succeedPlain: undefined,
        succeedBodies: undefined,
        finish
      }
    }
  })
}
