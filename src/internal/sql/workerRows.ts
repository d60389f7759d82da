/**
 * The live-workers table (`baton_workers`, migration 0010): one row per running worker, written by the worker side of
 * `TaskQueue` (register, heartbeat, deregister) and read by `TaskQueue.workers` and `ReadModel.workers`. A row whose
 * `expires_at` has passed is a worker that stopped heart-beating: it is not listed.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type { WorkerInfo } from "../../TaskQueue.js"

export interface WorkerRow {
  readonly id: string
  readonly host: string
  readonly pid: number
  readonly queues: string
  readonly concurrency: number
  readonly started_at: number
  readonly last_heartbeat: number
  readonly expires_at: number
  readonly tasks_in_hand: number
}

export const toWorkerInfo = (row: WorkerRow): WorkerInfo => {
  let queues: ReadonlyArray<string> = []
  try {
    const parsed: unknown = JSON.parse(row.queues)
    if (Array.isArray(parsed)) queues = parsed.filter((queue): queue is string => typeof queue === "string")
  } catch {
    // a malformed row shows no queues
  }
  return {
    id: row.id,
    host: row.host,
    pid: Number(row.pid),
    queues,
    concurrency: Number(row.concurrency),
    startedAt: new Date(Number(row.started_at)),
    lastHeartbeat: new Date(Number(row.last_heartbeat)),
    expiresAt: new Date(Number(row.expires_at)),
    tasksInHand: Number(row.tasks_in_hand)
  }
}

/** The workers whose heartbeat has not expired at `now`, oldest first (at most 1,000). */
export const liveWorkers = (sql: SqlClient.SqlClient, now: number) =>
  sql<WorkerRow>`SELECT * FROM baton_workers WHERE expires_at >= ${now} ORDER BY started_at, id LIMIT 1000`.pipe(
    Effect.map((rows) => rows.map(toWorkerInfo))
  )
