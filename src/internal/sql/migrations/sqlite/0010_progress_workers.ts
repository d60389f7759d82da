/**
 * Progress and live workers.
 * - `baton_tasks.progress` (a fraction 0..1), `progress_message`, `progress_at` (epoch ms): the last progress a running
 *   task's handler reported (`TaskContext.progress`).
 * - `baton_completions.progress`, `progress_message`: carried by `task.progress` events (NULL for every other kind).
 * - `baton_workers`: one row per running worker, heart-beaten with its leases and deleted at graceful shutdown; a row
 *   past `expires_at` is a worker that is gone (crashed or cut off).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress REAL`
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress_message TEXT`
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress_at INTEGER`
  yield* sql`ALTER TABLE baton_completions ADD COLUMN progress REAL`
  yield* sql`ALTER TABLE baton_completions ADD COLUMN progress_message TEXT`
  yield* sql`CREATE TABLE baton_workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    tasks_in_hand INTEGER NOT NULL DEFAULT 0
  )`
  yield* sql`CREATE INDEX baton_workers_expires ON baton_workers (expires_at)`
})
