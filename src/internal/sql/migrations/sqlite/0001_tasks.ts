/** Tasks and the durable completions log (SQLite). Times are epoch milliseconds. */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    namespace TEXT NOT NULL,
    tags TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms INTEGER,
    backoff TEXT,
    run_at INTEGER NOT NULL,
    lease_id TEXT,
    lease_expires_at INTEGER,
    worker_id TEXT,
    idempotency_key TEXT,
    result TEXT,
    error TEXT,
    chord_id TEXT,
    chord_index INTEGER,
    run_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    UNIQUE (namespace, idempotency_key)
  )`
  yield* sql`CREATE INDEX baton_tasks_claim ON baton_tasks (queue, priority DESC, run_at) WHERE state = 'pending'`
  yield* sql`CREATE INDEX baton_tasks_lease ON baton_tasks (lease_expires_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX baton_tasks_chord ON baton_tasks (chord_id, chord_index) WHERE chord_id IS NOT NULL`
  yield* sql`CREATE INDEX baton_tasks_state ON baton_tasks (state)`
  // SQLite has one writer at a time, so sequence order is commit order. AUTOINCREMENT: never reuse a pruned seq.
  yield* sql`CREATE TABLE baton_completions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    task_id TEXT,
    task_name TEXT,
    queue TEXT,
    namespace TEXT NOT NULL,
    tags TEXT NOT NULL,
    outcome TEXT NOT NULL,
    chord_id TEXT,
    run_id TEXT,
    at INTEGER NOT NULL
  )`
  yield* sql`CREATE INDEX baton_completions_at ON baton_completions (at)`
})
