/**
 * Chords (SqlChordRegistry), Postgres. Times are epoch milliseconds.
 *
 * One row per chord. The counters (`succeeded`, `failed`, `cancelled`) move in the transaction that moves a body task
 * to a terminal state (see src/internal/chordLedger.ts); the task row's own guarded transition is the idempotent
 * ledger, so no per-completion ledger table is needed. The counters are in no index and no index predicate, and the
 * table leaves half of each page free (fillfactor 50), so the hot counter update of a big chord stays a HOT update.
 * `callback` / `on_error` hold the sealed callback specs (JSON); `failure` the ChordFailure (JSON).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_chords (
    id text PRIMARY KEY,
    namespace text NOT NULL,
    tags text NOT NULL,
    idempotency_key text,
    state text NOT NULL DEFAULT 'running',
    failure_policy text NOT NULL,
    expected integer NOT NULL,
    succeeded integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    cancelled integer NOT NULL DEFAULT 0,
    callback_name text NOT NULL,
    callback text NOT NULL,
    on_error text,
    callback_task_id text,
    error_task_id text,
    failure text,
    healed integer NOT NULL DEFAULT 0,
    body_open integer NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    last_body_at bigint,
    dispatched_at bigint,
    CONSTRAINT baton_chords_idempotency UNIQUE (namespace, idempotency_key),
    CONSTRAINT baton_chords_state CHECK (state IN ('running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT baton_chords_policy CHECK (failure_policy IN ('fail', 'continue')),
    CONSTRAINT baton_chords_expected CHECK (expected >= 0)
  ) WITH (fillfactor = 50)`
  // The reconciler's scans: running chords, and failed/cancelled chords whose body may still hold live tasks.
  yield* sql`CREATE INDEX baton_chords_running ON baton_chords (created_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX baton_chords_body_open ON baton_chords (created_at) WHERE body_open = 1`
})
