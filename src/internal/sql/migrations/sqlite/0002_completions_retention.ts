/**
 * Retention watermark of the completions log (SQLite): the highest pruned `seq` (sequence order is commit order
 * here). A resume point below it fails with `CursorExpired` instead of silently skipping pruned events.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_completions_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL DEFAULT 0,
    max_seq INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0
  )`
  yield* sql`INSERT INTO baton_completions_pruned (id) VALUES (1)`
})
