/**
 * Fewer indexes per task row (SQLite), as on Postgres: the full `state` index goes (partial indexes serve every
 * query that filters on state) and the idempotency uniqueness covers only rows that have a key. SQLite cannot drop
 * a table constraint, so the table is rebuilt (same columns, same rows) without the `UNIQUE (namespace,
 * idempotency_key)` constraint, and the indexes are recreated; the migration runs in one transaction.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_tasks_rebuilt (
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
    finished_at INTEGER
  )`
  yield* sql`INSERT INTO baton_tasks_rebuilt (id, name, queue, namespace, tags, payload, state, priority, attempts,
      max_attempts, timeout_ms, backoff, run_at, lease_id, lease_expires_at, worker_id, idempotency_key, result, error,
      chord_id, chord_index, run_id, created_at, updated_at, started_at, finished_at)
    SELECT id, name, queue, namespace, tags, payload, state, priority, attempts,
      max_attempts, timeout_ms, backoff, run_at, lease_id, lease_expires_at, worker_id, idempotency_key, result, error,
      chord_id, chord_index, run_id, created_at, updated_at, started_at, finished_at
    FROM baton_tasks`
  yield* sql`DROP TABLE baton_tasks`
  yield* sql`ALTER TABLE baton_tasks_rebuilt RENAME TO baton_tasks`
  yield* sql`CREATE UNIQUE INDEX baton_tasks_idempotency ON baton_tasks (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL`
  yield* sql`CREATE INDEX baton_tasks_claim ON baton_tasks (queue, priority DESC, run_at) WHERE state = 'pending'`
  yield* sql`CREATE INDEX baton_tasks_lease ON baton_tasks (lease_expires_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX baton_tasks_chord ON baton_tasks (chord_id, chord_index) WHERE chord_id IS NOT NULL`
})
