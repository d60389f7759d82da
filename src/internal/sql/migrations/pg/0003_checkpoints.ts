/**
 * Checkpoints (SqlCheckpointCoordinator), Postgres. Times are epoch milliseconds.
 *
 * `(run_id, batch_index)` is unique, so creating a run's checkpoint twice yields one row. `result` / `error` hold
 * canonical JSON text. fillfactor 90 leaves room on each page so that completing a checkpoint (an UPDATE of
 * unindexed columns) can stay a HOT update.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_checkpoints (
    id text PRIMARY KEY,
    run_id text NOT NULL,
    batch_index integer NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    result text,
    error text,
    created_at bigint NOT NULL,
    completed_at bigint,
    CONSTRAINT baton_checkpoints_run_batch UNIQUE (run_id, batch_index),
    CONSTRAINT baton_checkpoints_status CHECK (status IN ('pending', 'completed', 'failed')),
    CONSTRAINT baton_checkpoints_batch_index CHECK (batch_index >= 0)
  ) WITH (fillfactor = 90)`
})
