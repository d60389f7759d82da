/** Tasks and the durable completions log (Postgres). Times are epoch milliseconds (int8). */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_tasks (
    id text PRIMARY KEY,
    name text NOT NULL,
    queue text NOT NULL,
    namespace text NOT NULL,
    tags text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout_ms integer,
    backoff text,
    run_at bigint NOT NULL,
    lease_id text,
    lease_expires_at bigint,
    worker_id text,
    idempotency_key text,
    result text,
    error text,
    chord_id text,
    chord_index integer,
    run_id text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    started_at bigint,
    finished_at bigint,
    CONSTRAINT baton_tasks_idempotency UNIQUE (namespace, idempotency_key)
  )`
  yield* sql`CREATE INDEX baton_tasks_claim ON baton_tasks (queue, priority DESC, run_at) WHERE state = 'pending'`
  yield* sql`CREATE INDEX baton_tasks_lease ON baton_tasks (lease_expires_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX baton_tasks_chord ON baton_tasks (chord_id, chord_index) WHERE chord_id IS NOT NULL`
  yield* sql`CREATE INDEX baton_tasks_state ON baton_tasks (state)`
  // seq is taken before commit, so it is not commit order; xid (the writer's top-level transaction id) is what
  // readers order and resume by: see docs/completion-backend.md.
  yield* sql`CREATE TABLE baton_completions (
    seq bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind text NOT NULL,
    task_id text,
    task_name text,
    queue text,
    namespace text NOT NULL,
    tags text NOT NULL,
    outcome text NOT NULL,
    chord_id text,
    run_id text,
    at bigint NOT NULL
  )`
  yield* sql`CREATE INDEX baton_completions_xid_seq ON baton_completions (xid, seq)`
  yield* sql`CREATE INDEX baton_completions_at ON baton_completions (at)`
})
