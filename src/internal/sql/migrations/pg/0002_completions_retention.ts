/**
 * Retention watermark of the completions log (Postgres): the position `(xid, seq)` of the newest pruned row in
 * delivery order and the highest pruned `seq`. A resume point below it fails with `CursorExpired` instead of
 * silently skipping pruned events (see docs/completion-backend.md).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_completions_pruned (
    id integer PRIMARY KEY CHECK (id = 1),
    xid xid8,
    seq bigint NOT NULL DEFAULT 0,
    max_seq bigint NOT NULL DEFAULT 0,
    rows bigint NOT NULL DEFAULT 0
  )`
  yield* sql`INSERT INTO baton_completions_pruned (id) VALUES (1)`
})
