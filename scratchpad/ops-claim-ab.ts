/**
 * A/B of the claim statement with and without the flow-control exclusion (`AND queue NOT IN (SELECT queue FROM
 * baton_queues)`), interleaved in one process so machine-load drift hits both alike. Postgres, empty baton_queues.
 * Run: npx tsx scratchpad/ops-claim-ab.ts
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Storage from "../src/Storage.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Layer from "effect/Layer"

const schema = `bt_ab_${process.pid}`
const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const queue = yield* TaskQueue
  const rounds = 8
  const perRound = 150
  const times = { old: [] as Array<number>, new: [] as Array<number> }
  for (let r = 0; r < rounds; r++) {
    yield* sql`DELETE FROM baton_tasks`
    yield* queue.enqueueRaw(Array.from({ length: perRound * 10 * 2 + 10 }, (_, i) => ({ name: "t", payload: i })))
    for (const variant of r % 2 === 0 ? (["old", "new"] as const) : (["new", "old"] as const)) {
      const extra = variant === "new" ? sql` AND queue NOT IN (SELECT queue FROM baton_queues)` : sql``
      const start = performance.now()
      for (let i = 0; i < perRound; i++) {
        const now = Date.now()
        yield* sql`UPDATE baton_tasks SET state = 'running', lease_id = 'x', lease_expires_at = ${now + 60000},
          attempts = attempts + 1, updated_at = ${now} WHERE id IN (
          SELECT id FROM baton_tasks WHERE state = 'pending' AND queue IN ${sql.in(["default"])} AND run_at <= ${now}${extra}
          ORDER BY priority DESC, run_at LIMIT 10 FOR UPDATE SKIP LOCKED)
          AND set_config('synchronous_commit', 'off', true) IS NOT NULL RETURNING id`
      }
      times[variant].push((performance.now() - start) / perRound)
    }
  }
  const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  console.log(`claim of 10, ms per statement, median of ${rounds} rounds x ${perRound}: without exclusion ${median(times.old).toFixed(3)}, with ${median(times.new).toFixed(3)}`)
  console.log(JSON.stringify(times))
  yield* sql`DROP SCHEMA ${sql(schema)} CASCADE`
})
Effect.runPromise(
  program.pipe(
    Effect.provide(
      SqlTaskQueue.layer.pipe(
        Layer.provideMerge(Storage.layerPg({ url: "postgres://postgres@127.0.0.1:5432/test", schema, maxConnections: 2 }))
      )
    )
  )
).then(() => process.exit(0), (e) => (console.error(e), process.exit(1)))
