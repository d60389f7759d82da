/**
 * Probe (issue 14): per-checkpoint client latency, fsync taken out (run against a database with synchronous_commit
 * off: PROBE_PG_URL). Alternates: the coordinator (create → complete → await), the same two statements through the
 * Effect SQL client, and through a bare `pg` client.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import pg from "pg"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as SqlCheckpointCoordinator from "../src/SqlCheckpointCoordinator.js"
import * as Storage from "../src/Storage.js"

const n = Number(process.argv[2] ?? 2000)
const rounds = Number(process.argv[3] ?? 3)
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/drain_nosync"
const schema = "perf_checkpoint_latency"
const layer = SqlCheckpointCoordinator.layer.pipe(
  Layer.provideMerge(Storage.layerPg({ url, schema, maxConnections: 4 }))
)
const insert = `INSERT INTO ${schema}.baton_checkpoints (id, run_id, batch_index, status, created_at)
  VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (run_id, batch_index) DO NOTHING RETURNING id, run_id, batch_index`
const update = `UPDATE ${schema}.baton_checkpoints SET status = 'completed', result = $2, completed_at = $3
  WHERE id = $1 AND status = 'pending' RETURNING run_id`
const settle = `WITH cur AS (
    SELECT status, result, error FROM ${schema}.baton_checkpoints WHERE id = $1
  ), upd AS (
    UPDATE ${schema}.baton_checkpoints SET status = 'completed', result = $2, error = NULL, completed_at = $3
    WHERE id = $1 AND status = 'pending' RETURNING run_id
  ), ins AS (
    INSERT INTO ${schema}.baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
    SELECT 'checkpoint.completed', NULL, NULL, NULL, 'default', '[]', 'succeeded', NULL, run_id, $3::bigint
    FROM upd RETURNING seq
  )
  SELECT (SELECT count(*) FROM upd)::int AS updated,
    (SELECT pg_notify('baton_${schema}_completions', max(seq)::text) FROM ins HAVING count(*) > 0) AS notified,
    cur.status, cur.result, cur.error
  FROM (SELECT 1) AS one LEFT JOIN cur ON true`
const program = Effect.gen(function* () {
  const coordinator = yield* CheckpointCoordinator
  const sql = yield* SqlClient.SqlClient
  const client = new pg.Client({ connectionString: url })
  yield* Effect.promise(() => client.connect())
  let cpu0 = process.cpuUsage()
  const rate = (t0: number) => {
    const cpu = process.cpuUsage(cpu0)
    cpu0 = process.cpuUsage()
    return `${Math.round((n / (performance.now() - t0)) * 1000)} (${Math.round((cpu.user + cpu.system) / n)} us CPU)`
  }
  for (let r = 0; r < rounds; r++) {
    const run = `run-${Date.now()}-${r}`
    let t0 = performance.now()
    cpu0 = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const token = yield* coordinator.createCheckpoint(run, i)
      yield* coordinator.completeCheckpoint(token, { i })
      yield* coordinator.awaitCheckpoint(token)
    }
    const ours = rate(t0)
    t0 = performance.now()
    cpu0 = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const id = crypto.randomUUID()
      yield* sql.unsafe(insert, [id, `${run}e`, i, Date.now()])
      yield* sql.unsafe(update, [id, JSON.stringify({ i }), Date.now()])
    }
    const effectSql = rate(t0)
    t0 = performance.now()
    cpu0 = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const id = crypto.randomUUID()
      yield* Effect.promise(() => client.query(insert, [id, `${run}b`, i, Date.now()]))
      yield* Effect.promise(() => client.query(update, [id, JSON.stringify({ i }), Date.now()]))
    }
    const bare = rate(t0)
    t0 = performance.now()
    cpu0 = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const id = crypto.randomUUID()
      yield* Effect.promise(() => client.query(insert, [id, `${run}c`, i, Date.now()]))
      yield* Effect.promise(() => client.query(settle, [id, JSON.stringify({ i }), Date.now()]))
    }
    const bareEvent = rate(t0)
    console.log(
      `round ${r + 1}: coordinator ${ours}/s, same SQL via Effect sql ${effectSql}/s, bare pg ${bare}/s, bare pg + log/NOTIFY ${bareEvent}/s`
    )
  }
  yield* Effect.promise(() => client.end())
})
Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  console.error(e)
  process.exit(1)
})
