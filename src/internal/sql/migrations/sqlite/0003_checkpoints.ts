/**
 * Checkpoints (SqlCheckpointCoordinator), SQLite. Times are epoch milliseconds.
 *
 * `(run_id, batch_index)` is unique, so creating a run's checkpoint twice yields one row. `result` / `error` hold
 * canonical JSON text.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_checkpoints (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    batch_index INTEGER NOT NULL CHECK (batch_index >= 0),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    result TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    UNIQUE (run_id, batch_index)
  )`
})
