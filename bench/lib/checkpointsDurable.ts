/**
 * Durable checkpoints on Postgres next to the physical limit, as one reusable measurement (used by the standalone
 * bench/checkpoints-durable.ts and by the checkpoints scenario's agent, bench/peers/baton-checkpoints.ts):
 * - `ours`: `SqlCheckpointCoordinator.layer` (defaults): create → complete → await, sequentially, one run;
 * - `ours-tx`: the completion inside `sql.withTransaction` (how a workflow saves a batch with its checkpoint);
 * - `ours-async-create`: `layerWith({ asyncCreate: true })`;
 * - `bare-commit`: single-row `INSERT` + `UPDATE` autocommit pairs with the `pg` driver on one connection, on a table
 *   of the same shape (a durable checkpoint is a creation and a completion: two commits) — the physical limit;
 * - `bare-commit-with-event`: the same, the UPDATE being ours' completion statement (log row + NOTIFY).
 * A round runs `n` of each, interleaved in blocks of 20 in a rotating order (the disk's fsync latency drifts;
 * interleaving makes every variant see the same drift), after truncating the tables.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { CheckpointCoordinator } from "../../src/CheckpointCoordinator.js"
import * as SqlCheckpointCoordinator from "../../src/SqlCheckpointCoordinator.js"
import * as Storage from "../../src/Storage.js"
import { connect } from "./db.js"

export const variants = ["ours", "ours-tx", "ours-async-create", "bare-commit", "bare-commit-with-event"] as const
export type Variant = (typeof variants)[number]

export const blockSize = 20
export const schema = "bench_cp"
export const oursSettings = "SqlCheckpointCoordinator.layer defaults; pool of 4; sequential, one run"
export const bareSettings = {
  "bare-commit": "pg driver, one connection, INSERT then UPDATE per item, each its own autocommit transaction",
  "bare-commit-with-event":
    "as bare-commit, the UPDATE being ours' completion statement (log row + NOTIFY), on baton_checkpoints"
} as const

/** Connects, creates the bare table, warms up; `round(n)` returns checkpoints/s per variant (of `only`, or all). */
export const makeCheckpointBench = async (url: string, only: ReadonlyArray<Variant> = variants) => {
  const storage = Storage.layerPg({ url, schema, maxConnections: 4 })
  const runtimes = {
    ours: ManagedRuntime.make(SqlCheckpointCoordinator.layer.pipe(Layer.provideMerge(storage))),
    "ours-async-create": ManagedRuntime.make(
      SqlCheckpointCoordinator.layerWith({ asyncCreate: true }).pipe(Layer.provideMerge(storage))
    )
  }
  const client = await connect(url)
  await client.query(`DROP TABLE IF EXISTS bench_bare_commits`)
  await client.query(`CREATE TABLE bench_bare_commits (
    id text PRIMARY KEY, run_id text NOT NULL, batch_index integer NOT NULL, status text NOT NULL DEFAULT 'pending',
    result text, error text, created_at bigint NOT NULL, completed_at bigint,
    CONSTRAINT bench_bare_run_batch UNIQUE (run_id, batch_index)
  ) WITH (fillfactor = 90)`)

  const truncate = async () => {
    await runtimes.ours.runPromise(
      Effect.flatMap(SqlClient.SqlClient, (sql) => sql`TRUNCATE baton_checkpoints, baton_completions`)
    )
    await client.query("TRUNCATE bench_bare_commits")
  }

  // One block of `n` checkpoints of run `runId` from batch `from`; returns the elapsed milliseconds.
  const ours = (runtime: (typeof runtimes)["ours"], inTransaction: boolean, runId: string, from: number, n: number) =>
    runtime.runPromise(
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const sql = yield* SqlClient.SqlClient
        const started = performance.now()
        for (let i = from; i < from + n; i++) {
          const token = yield* coordinator.createCheckpoint(runId, i)
          const complete = coordinator.completeCheckpoint(token, { batch: i, documents: 10 })
          yield* inTransaction ? sql.withTransaction(complete) : complete
          yield* coordinator.awaitCheckpoint(token)
        }
        return performance.now() - started
      })
    )

  // `n` checkpoints as bare statement pairs on the `pg` connection: `insert` ($1 id, $2 run, $3 batch, $4 now), then
  // `update` ($1 id, $2 result, $3 now), each its own autocommit transaction.
  const pairs = (insert: string, update: string) => async (runId: string, from: number, n: number) => {
    const started = performance.now()
    for (let i = from; i < from + n; i++) {
      const id = crypto.randomUUID()
      await client.query(insert, [id, runId, i, Date.now()])
      await client.query(update, [id, JSON.stringify({ batch: i, documents: 10 }), Date.now()])
    }
    return performance.now() - started
  }

  const bare = pairs(
    "INSERT INTO bench_bare_commits (id, run_id, batch_index, status, created_at) VALUES ($1, $2, $3, 'pending', $4)",
    "UPDATE bench_bare_commits SET status = 'completed', result = $2, completed_at = $3 WHERE id = $1"
  )

  // Ours' completion statement, sent through the bare driver: separates the event's cost from the client's.
  const bareWithEvent = pairs(
    `INSERT INTO ${schema}.baton_checkpoints (id, run_id, batch_index, status, created_at) VALUES ($1, $2, $3, 'pending', $4)`,
    `WITH upd AS (
      UPDATE ${schema}.baton_checkpoints SET status = 'completed', result = $2, completed_at = $3
      WHERE id = $1 AND status = 'pending' RETURNING run_id
    ), ins AS (
      INSERT INTO ${schema}.baton_completions (kind, namespace, tags, outcome, run_id, at)
      SELECT 'checkpoint.completed', 'default', '[]', 'succeeded', run_id, $3::bigint FROM upd RETURNING seq
    ) SELECT (SELECT pg_notify('baton_${schema}_completions', max(seq)::text) FROM ins HAVING count(*) > 0)`
  )

  const block: Record<Variant, (runId: string, from: number, n: number) => Promise<number>> = {
    ours: (runId, from, n) => ours(runtimes.ours, false, runId, from, n),
    "ours-tx": (runId, from, n) => ours(runtimes.ours, true, runId, from, n),
    "ours-async-create": (runId, from, n) => ours(runtimes["ours-async-create"], false, runId, from, n),
    "bare-commit": bare,
    "bare-commit-with-event": bareWithEvent
  }

  /** `n` checkpoints per variant, interleaved in blocks in a rotating order; checkpoints/s per variant. */
  const round = async (n: number): Promise<Partial<Record<Variant, number>>> => {
    await truncate()
    const elapsed = new Map(only.map((v) => [v, 0]))
    const runIds = new Map(only.map((v) => [v, `bench-${v}-${crypto.randomUUID()}`]))
    for (let from = 0, b = 0; from < n; from += blockSize, b++) {
      const size = Math.min(blockSize, n - from)
      for (let i = 0; i < only.length; i++) {
        const variant = only[(i + b) % only.length]!
        elapsed.set(variant, elapsed.get(variant)! + (await block[variant](runIds.get(variant)!, from, size)))
      }
    }
    return Object.fromEntries(only.map((v) => [v, n / (elapsed.get(v)! / 1000)]))
  }

  // Warm-up (JIT, pools, plans), not measured.
  await round(100)

  const close = async () => {
    await client.end()
    await runtimes.ours.dispose()
    await runtimes["ours-async-create"].dispose()
  }
  return { round, close }
}
