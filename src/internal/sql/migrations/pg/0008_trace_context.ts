/**
 * Trace context: `trace_context` (JSON `{"traceId","spanId"}` of the span that enqueued the task; NULL = none) on
 * `baton_tasks`, so that a worker's `Worker.execute` span continues the producer's trace.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE baton_tasks ADD COLUMN trace_context TEXT`
})
