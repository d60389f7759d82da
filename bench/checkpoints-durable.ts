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
 * bench/results/checkpoints-durable.json (the checkpoints scenario of `npm run bench` runs the same measurement with the peers).
 * Environment: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test; the bench uses its own database).
 */
import {
  bareSettings,
  blockSize,
  makeCheckpointBench,
  oursSettings,
  type Variant,
  variants
} from "./lib/checkpointsDurable.js"
import { ensureDatabase, serverInfo } from "./lib/db.js"
import { machine, printTable, ratios, writeResult } from "./lib/report.js"
import { median, round } from "./lib/stats.js"

const count = Number(process.argv[2] ?? 2000)
const rounds = Number(process.argv[3] ?? 5)

const main = async () => {
  const url = await ensureDatabase("bench_checkpoints")
  const postgres = await serverInfo()
  console.log(`durable checkpoints: ${count} sequential create → complete → await per measurement, ${rounds} rounds`)
  console.log(`node ${process.version}, ${postgres}, ${machine()}`)
  const bench = await makeCheckpointBench(url)
  const runRound = bench.round

  const samples: Record<Variant, Array<number>> = {
    ours: [],
    "ours-tx": [],
    "ours-async-create": [],
    "bare-commit": [],
    "bare-commit-with-event": []
  }
  for (let r = 0; r < rounds; r++) {
    const rates = await runRound(count)
    for (const variant of variants) samples[variant].push(rates[variant]!)
    console.log(`round ${r + 1}: ${variants.map((v) => `${v} ${Math.round(rates[v]!)}/s`).join(", ")}`)
  }

  const figure = (variant: Variant) => ({
    checkpointsPerSecond: round(median(samples[variant])),
    rounds: samples[variant].map((rate) => round(rate))
  })
  const oursResult = {
    ...figure("ours"),
    inTransaction: figure("ours-tx"),
    asyncCreate: figure("ours-async-create"),
    settings: oursSettings
  }
  const peers = {
    "bare-commit": { ...figure("bare-commit"), settings: bareSettings["bare-commit"] },
    "bare-commit-with-event": { ...figure("bare-commit-with-event"), settings: bareSettings["bare-commit-with-event"] }
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
    scenario: "checkpoints-durable",
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
  await bench.close()
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
