/**
 * Chords (SqlChordRegistry), SQLite. Times are epoch milliseconds. Same shape as the Postgres migration; see there.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_chords (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    tags TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    failure_policy TEXT NOT NULL CHECK (failure_policy IN ('fail', 'continue')),
    expected INTEGER NOT NULL CHECK (expected >= 0),
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    callback_name TEXT NOT NULL,
    callback TEXT NOT NULL,
    on_error TEXT,
    callback_task_id TEXT,
    error_task_id TEXT,
    failure TEXT,
    healed INTEGER NOT NULL DEFAULT 0,
    body_open INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_body_at INTEGER,
    dispatched_at INTEGER,
    UNIQUE (namespace, idempotency_key)
  )`
  yield* sql`CREATE INDEX baton_chords_running ON baton_chords (created_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX baton_chords_body_open ON baton_chords (created_at) WHERE body_open = 1`
})
