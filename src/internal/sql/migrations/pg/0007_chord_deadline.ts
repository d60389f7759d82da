/**
 * Chord deadlines: `deadline_at` (epoch ms; NULL = none) on `baton_chords`, and a partial index over the running
 * chords that have one, so that the coordinators' "next deadline" and "past deadline" queries read only those.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE baton_chords ADD COLUMN deadline_at BIGINT`
  yield* sql`CREATE INDEX baton_chords_deadline ON baton_chords (deadline_at)
    WHERE state = 'running' AND deadline_at IS NOT NULL`
})
