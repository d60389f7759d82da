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
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress double precision`
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress_message text`
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN progress_at bigint`
  yield* sql`ALTER TABLE baton_completions ADD COLUMN progress double precision`
  yield* sql`ALTER TABLE baton_completions ADD COLUMN progress_message text`
  yield* sql`CREATE TABLE baton_workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text NOT NULL,
    concurrency integer NOT NULL,
    started_at bigint NOT NULL,
    last_heartbeat bigint NOT NULL,
    expires_at bigint NOT NULL,
    tasks_in_hand integer NOT NULL DEFAULT 0
  )`
  yield* sql`CREATE INDEX baton_workers_expires ON baton_workers (expires_at)`
})
