/**
 * The chord callback hand-off, statement side.
 *
 * A worker that commits a batch of completions offers, for that one transaction, to take the tasks the transaction
 * dispatches (`HandoffOffer`, set with `Effect.locally(currentHandoff, offer)` around `TaskQueue.complete`): the task
 * names it runs, the queues it claims from and how many tasks it can still take. When the guarded chord dispatch
 * inside that transaction inserts the callback task and the offer fits (its name and queue, runnable now, room left),
 * the callback is inserted already LEASED to that worker (state `running`, `lease_id`, `lease_expires_at`,
 * `worker_id`, attempt 1), without the NOTIFY, and its claimed form is appended to `offer.handed`. After the commit the
 * worker starts it from its local queue (`src/internal/worker/handoff.ts`): no NOTIFY → claim round trip.
 *
 * Exactly-once is unchanged: the dispatch guard is the same statement; only who holds the first lease differs. If the
 * worker dies before or while running it, the lease expires and the callback is reclaimed like any task. A commit that
 * fails leaves nothing (the offer is made anew for each try, and read only after a successful commit).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as FiberRef from "effect/FiberRef"
import type { ClaimedTask } from "../../TaskQueue.js"
import { claimedColumns, type InsertRow, insertColumns, type TaskRow, toClaimed } from "./taskRows.js"

/** What a committing worker offers to take, for one completing transaction (mutable: `free` and `handed`). */
export interface HandoffOffer {
  readonly workerId: string
  readonly leaseMs: number
  /** The task names the worker runs. */
  readonly names: ReadonlySet<string>
  /** The queues the worker claims from. */
  readonly queues: ReadonlySet<string>
  /** How many more tasks it takes now (free slots and buffer room). */
  free: number
  /** The tasks this transaction handed to the worker (claimed form), to start after the commit. */
  readonly handed: Array<ClaimedTask>
}

/** The offer of the completing transaction running in this fiber (undefined: no hand-off, the usual wake). */
export const currentHandoff: FiberRef.FiberRef<HandoffOffer | undefined> = FiberRef.unsafeMake<
  HandoffOffer | undefined
>(undefined)

/** The first lease of a handed-off task. */
export interface HandoffLease {
  readonly offer: HandoffOffer
  readonly leaseId: string
  readonly workerId: string
  readonly expiresAt: number
  readonly now: number
}

/** The lease `row` gets if `offer` takes it (and the offer's room is taken), else undefined. */
export const takeLease = (offer: HandoffOffer | undefined, row: InsertRow, now: number): HandoffLease | undefined => {
  if (offer === undefined || offer.free <= 0) return undefined
  if (!offer.names.has(row.name) || !offer.queues.has(row.queue) || row.run_at > now) return undefined
  offer.free--
  return { offer, leaseId: crypto.randomUUID(), workerId: offer.workerId, expiresAt: now + offer.leaseMs, now }
}

/** `row` as inserted already leased (for `json_populate_record`): running, attempt 1, the lease's columns. */
export const leasedRecord = (row: InsertRow, lease: HandoffLease): Record<string, unknown> => ({
  ...row,
  state: "running",
  attempts: 1,
  lease_id: lease.leaseId,
  lease_expires_at: lease.expiresAt,
  worker_id: lease.workerId,
  started_at: lease.now
})

/** The lease columns `leasedRecord` adds to the insert's column list (Postgres). */
export const leaseColumns = ["lease_id", "lease_expires_at", "worker_id", "started_at"] as const

/** Records a task inserted leased (its commit pending): the worker starts it once the transaction committed. */
export const handOver = (row: InsertRow, lease: HandoffLease): void => {
  lease.offer.handed.push(
    toClaimed({ ...leasedRecord(row, lease), result: null, error: null, finished_at: null } as TaskRow)
  )
}

/**
 * SQLite (one writer: no round trip saved by folding it into the insert): leases a task this transaction just
 * inserted, if it is still pending and its queue has no setting (paused, limited); the claimed task, if leased.
 */
export const leaseInserted = (sql: SqlClient.SqlClient, id: string, lease: HandoffLease) =>
  sql<TaskRow>`UPDATE baton_tasks SET state = 'running', attempts = attempts + 1, lease_id = ${lease.leaseId},
      lease_expires_at = ${lease.expiresAt}, worker_id = ${lease.workerId}, started_at = ${lease.now},
      updated_at = ${lease.now}
    WHERE id = ${id} AND state = 'pending' AND queue NOT IN (SELECT queue FROM baton_queues)
    RETURNING ${sql.literal(claimedColumns)}`

/**
 * Postgres: the one-row insert of `insertRecordPg`, already leased (the row and its lease columns), for the guarded
 * dispatch statement. A queue with a setting (paused, limited: a row in `baton_queues`) gets the plain pending row
 * instead, so the hand-off never bypasses a pause or a limit; `RETURNING state` tells which it was.
 */
export const insertLeasedPg = (sql: SqlClient.SqlClient, row: InsertRow, lease: HandoffLease) => {
  const controlled = "EXISTS (SELECT 1 FROM baton_queues c WHERE c.queue = r.queue)"
  const pending: Record<string, string> = { state: "'pending'", attempts: "0" }
  const select = [...insertColumns, ...leaseColumns]
    .map((column) =>
      column in pending || (leaseColumns as ReadonlyArray<string>).includes(column)
        ? `CASE WHEN ${controlled} THEN ${pending[column] ?? "NULL"} ELSE r.${column} END`
        : `r.${column}`
    )
    .join(", ")
  return sql`INSERT INTO baton_tasks (${sql.literal([...insertColumns, ...leaseColumns].join(", "))})
    SELECT ${sql.literal(select)}
    FROM json_populate_record(NULL::baton_tasks, ${JSON.stringify(leasedRecord(row, lease))}::json) AS r`
}
