/**
 * Operations (issue 18), SQLite (the same as on Postgres):
 * - `baton_queues`: per-queue flow control (`QueueControl`). A row exists only for a queue with a setting (paused, a
 *   rate limit or a concurrency limit), so the claim's "queues without settings" check reads an empty table in the
 *   common case. `window_start` / `window_count` are the rate limit's current fixed window, moved by the claim that
 *   takes from the queue, in the claim's transaction.
 * - `baton_tasks_finished`: finished tasks by state and finish time, for retention (`Retention`): prune by age and
 *   keep-the-newest-N per state without scanning the table. Only finished rows have an entry.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_queues (
    queue TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    rate_limit INTEGER,
    rate_interval_ms INTEGER,
    concurrency_limit INTEGER,
    window_start INTEGER NOT NULL DEFAULT 0,
    window_count INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    CONSTRAINT baton_queues_rate CHECK (rate_limit IS NULL OR (rate_limit >= 1 AND rate_interval_ms >= 1)),
    CONSTRAINT baton_queues_concurrency CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1)
  )`
  yield* sql`CREATE INDEX baton_tasks_finished ON baton_tasks (state, finished_at) WHERE finished_at IS NOT NULL`
})
