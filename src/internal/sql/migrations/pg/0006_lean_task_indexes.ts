/**
 * Fewer indexes per task row (Postgres): every enqueue writes each index of `baton_tasks`, so each one that no
 * query needs is a tax on enqueue throughput (issue 7).
 * - `baton_tasks_state` (all rows) goes: every query that filters on state is served by a partial index (claim:
 *   `baton_tasks_claim`; leases and reclaim: `baton_tasks_lease`; chords: `baton_tasks_chord`); `counts` scans.
 * - The idempotency constraint becomes a partial unique index over the rows that have a key (most have none and no
 *   longer get an entry). `ON CONFLICT DO NOTHING` without a target still arbitrates on it.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`DROP INDEX IF EXISTS baton_tasks_state`
  yield* sql`ALTER TABLE baton_tasks DROP CONSTRAINT IF EXISTS baton_tasks_idempotency`
  yield* sql`CREATE UNIQUE INDEX baton_tasks_idempotency ON baton_tasks (namespace, idempotency_key)
    WHERE idempotency_key IS NOT NULL`
})
