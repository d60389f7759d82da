/**
 * Durable checkpoints per second on Postgres, next to the physical limit measured in the same run: bare single-row
 * `INSERT` + `UPDATE` autocommit pairs with the `pg` driver on one connection (a durable checkpoint is a creation and
 * a completion, i.e. two commits).
 *
 *   npx tsx bench/checkpoints-durable.ts [count=2000] [rounds=5]
 *
 * Each round runs `count` sequential create → complete → await with
 * - `ours`: `SqlCheckpointCoordinator.layer` (defaults),
 * - `ours-tx`: the completion inside `sql.withTransaction` (how a workflow saves a batch with its checkpoint; the
 *   await then re-reads the row),
 * - `ours-async-create`: `layerWith({ asyncCreate: true })`,
 * and `count` bare pairs on a table of the same shape (same columns, primary key and unique constraint), interleaved in
 * blocks of 20 in a rotating order (the disk's fsync latency drifts; interleaving makes every variant see the same
 * drift). Tables are truncated before each round. Figures are medians over rounds. Writes
 * bench/results/checkpoints.json.
 * Environment: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test; the bench uses its own database).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as SqlCheckpointCoordinator from "../src/SqlCheckpointCoordinator.js"
import * as Storage from "../src/Storage.js"
import { connect, ensureDatabase, serverInfo } from "./lib/db.js"
import { machine, printTable, ratios, writeResult } from "./lib/report.js"
import { median, round } from "./lib/stats.js"

const count = Number(process.argv[2] ?? 2000)
const rounds = Number(process.argv[3] ?? 5)
const blockSize = 20

type Variant = "ours" | "ours-tx" | "ours-async-create" | "bare-commit" | "bare-commit-with-event"

const main = async () => {
  const url = await ensureDatabase("bench_checkpoints")
  const postgres = await serverInfo()
  console.log(`durable checkpoints: ${count} sequential create → complete → await per measurement, ${rounds} rounds`)
  console.log(`node ${process.version}, ${postgres}, ${machine()}`)

  const storage = Storage.layerPg({ url, schema: "bench_cp", maxConnections: 4 })
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

  const bare = async (runId: string, from: number, n: number) => {
    const started = performance.now()
    for (let i = from; i < from + n; i++) {
      const id = crypto.randomUUID()
      await client.query(
        "INSERT INTO bench_bare_commits (id, run_id, batch_index, status, created_at) VALUES ($1, $2, $3, 'pending', $4)",
        [id, runId, i, Date.now()]
      )
      await client.query(
        "UPDATE bench_bare_commits SET status = 'completed', result = $2, completed_at = $3 WHERE id = $1",
        [id, JSON.stringify({ batch: i, documents: 10 }), Date.now()]
      )
    }
    return performance.now() - started
  }

  // Ours' completion statement, sent through the bare driver: separates the event's cost from the client's.
  const bareWithEvent = async (runId: string, from: number, n: number) => {
    const started = performance.now()
    for (let i = from; i < from + n; i++) {
      const id = crypto.randomUUID()
      await client.query(
        "INSERT INTO bench_cp.baton_checkpoints (id, run_id, batch_index, status, created_at) VALUES ($1, $2, $3, 'pending', $4)",
        [id, runId, i, Date.now()]
      )
      await client.query(
        `WITH upd AS (
          UPDATE bench_cp.baton_checkpoints SET status = 'completed', result = $2, completed_at = $3
          WHERE id = $1 AND status = 'pending' RETURNING run_id
        ), ins AS (
          INSERT INTO bench_cp.baton_completions (kind, namespace, tags, outcome, run_id, at)
          SELECT 'checkpoint.completed', 'default', '[]', 'succeeded', run_id, $3::bigint FROM upd RETURNING seq
        ) SELECT (SELECT pg_notify('baton_bench_cp_completions', max(seq)::text) FROM ins HAVING count(*) > 0)`,
        [id, JSON.stringify({ batch: i, documents: 10 }), Date.now()]
      )
    }
    return performance.now() - started
  }

  const block: Record<Variant, (runId: string, from: number, n: number) => Promise<number>> = {
    ours: (runId, from, n) => ours(runtimes.ours, false, runId, from, n),
    "ours-tx": (runId, from, n) => ours(runtimes.ours, true, runId, from, n),
    "ours-async-create": (runId, from, n) => ours(runtimes["ours-async-create"], false, runId, from, n),
    "bare-commit": bare,
    "bare-commit-with-event": bareWithEvent
  }
  const variants = Object.keys(block) as Array<Variant>

  // Runs `n` checkpoints per variant, interleaved in blocks of `blockSize` in a rotating order, so that the drift of
  // the disk's fsync latency (and of whatever else runs on the machine) weighs on every variant alike.
  const runRound = async (n: number): Promise<Record<Variant, number>> => {
    await truncate()
    const elapsed = Object.fromEntries(variants.map((v) => [v, 0])) as Record<Variant, number>
    const runIds = Object.fromEntries(variants.map((v) => [v, `bench-${v}-${crypto.randomUUID()}`])) as Record<
      Variant,
      string
    >
    for (let from = 0, b = 0; from < n; from += blockSize, b++) {
      const size = Math.min(blockSize, n - from)
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + b) % variants.length]!
        elapsed[variant] += await block[variant](runIds[variant], from, size)
      }
    }
    return Object.fromEntries(variants.map((v) => [v, n / (elapsed[v] / 1000)])) as Record<Variant, number>
  }

  // Warm-up (JIT, pools, plans), not measured.
  await runRound(100)

  const samples: Record<Variant, Array<number>> = {
    ours: [],
    "ours-tx": [],
    "ours-async-create": [],
    "bare-commit": [],
    "bare-commit-with-event": []
  }
  for (let r = 0; r < rounds; r++) {
    const rates = await runRound(count)
    for (const variant of variants) samples[variant].push(rates[variant])
    console.log(`round ${r + 1}: ${variants.map((v) => `${v} ${Math.round(rates[v])}/s`).join(", ")}`)
  }

  const figure = (variant: Variant) => ({
    checkpointsPerSecond: round(median(samples[variant])),
    rounds: samples[variant].map((rate) => round(rate))
  })
  const oursResult = {
    ...figure("ours"),
    inTransaction: figure("ours-tx"),
    asyncCreate: figure("ours-async-create"),
    settings: "SqlCheckpointCoordinator.layer defaults; pool of 4; sequential, one run"
  }
  const peers = {
    "bare-commit": {
      ...figure("bare-commit"),
      settings: "pg driver, one connection, INSERT then UPDATE per item, each its own autocommit transaction"
    },
    "bare-commit-with-event": {
      ...figure("bare-commit-with-event"),
      settings: "as bare-commit, the UPDATE being ours' completion statement (log row + NOTIFY), on baton_checkpoints"
    }
  }
  const allRatios = ratios("checkpointsPerSecond", oursResult, peers)
  const inTxRatio = round(median(samples["ours-tx"]) / median(samples["bare-commit"]))
  const asyncRatio = round(median(samples["ours-async-create"]) / median(samples["bare-commit"]))
  printTable(
    "durable checkpoints (median of rounds)",
    ["variant", "per second", "× bare-commit"],
    [
      ["ours (create; complete; await)", median(samples.ours), allRatios["bare-commit"]],
      ["ours, complete in sql.withTransaction", median(samples["ours-tx"]), inTxRatio],
      ["ours, asyncCreate", median(samples["ours-async-create"]), asyncRatio],
      ["bare INSERT + UPDATE (pg, autocommit)", median(samples["bare-commit"]), 1],
      [
        "bare, UPDATE + log row + NOTIFY in one statement",
        median(samples["bare-commit-with-event"]),
        round(median(samples["bare-commit-with-event"]) / median(samples["bare-commit"]))
      ]
    ]
  )
  const file = writeResult({
    scenario: "checkpoints",
    unit: "checkpoints/s",
    higherIsBetter: true,
    headline: "checkpointsPerSecond",
    ours: oursResult,
    peers,
    ratios: { ...allRatios, "bare-commit (in transaction)": inTxRatio, "bare-commit (asyncCreate)": asyncRatio },
    node: process.version,
    postgres,
    when: new Date().toISOString(),
    quick: false,
    rounds,
    machine: machine(),
    notes: [
      `${count} sequential create → complete → await per variant and round, interleaved in blocks of ${blockSize} in rotating order; medians over ${rounds} rounds`,
      "bare-commit: the same table shape, INSERT + UPDATE as two autocommit statements (two commits, like a checkpoint)",
      "bare-commit-with-event: the same, with ours' completion statement (UPDATE + completions-log row + NOTIFY) sent through pg: the gap between it and ours is the Effect SQL client",
      "ours also appends a completions-log row and a NOTIFY in the completing transaction",
      "asyncCreate: the creation commits with synchronous_commit = off (see docs/checkpoint-coordination.md)"
    ]
  })
  console.log(`\nwrote ${file}`)
  await client.end()
  await runtimes.ours.dispose()
  await runtimes["ours-async-create"].dispose()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
