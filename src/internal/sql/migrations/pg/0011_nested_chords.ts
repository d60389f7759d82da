/**
 * Chords of chords: `parent_id` / `parent_index` on `baton_chords` link an inner chord to the outer chord whose body
 * slot it fills (its callback task is that slot's body task), and an index over the linked chords, so that an outer
 * chord finds its inner chords (cascading a failure or cancel, `list({ parent })`) without a scan.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE baton_chords ADD COLUMN parent_id TEXT`
  yield* sql`ALTER TABLE baton_chords ADD COLUMN parent_index INTEGER`
  yield* sql`CREATE INDEX baton_chords_parent ON baton_chords (parent_id, parent_index) WHERE parent_id IS NOT NULL`
})
