/**
 * checkpoints: a workflow of N sequential durable checkpointed steps. Per round, in turn:
 * - Baton and the physical limit: bench/checkpoints-durable.ts (owned by the checkpoints engineer) with one round —
 *   Baton's `SqlCheckpointCoordinator` (create → complete → await), its variants, and bare single-row INSERT +
 *   UPDATE autocommit pairs on one connection (a durable checkpoint is two commits), interleaved in blocks;
 * - DBOS Transact: one workflow of N sequential no-op steps (bench/peers/dbos.ts).
 * Medians over the rounds. The Baton figures are whatever that script measures; this scenario adds the DBOS peer
 * and the rounds around it, and rewrites bench/results/checkpoints.json with every figure.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { ensureDatabase } from "../lib/db.js"
import { printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { runScript, spawnAgent } from "../lib/spawn.js"
import { median, round } from "../lib/stats.js"
import type { ScenarioOptions } from "./types.js"

const resultFile = path.resolve(import.meta.dirname, "../results/checkpoints.json")

type Figures = Record<string, { checkpointsPerSecond: number; settings?: string }>

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const n = options.quick ? 100 : 2000
  const perRound: Array<{ ours: Record<string, number>; peers: Record<string, number> }> = []
  let settings: Record<string, string> = {}
  const dbos = spawnAgent("dbos")
  try {
    await dbos.call("setup", { url: await ensureDatabase("bench_dbos") }, 120_000)
    await dbos.call("steps", { n: Math.min(n, 200) }) // warm-up
    for (let r = 0; r < options.rounds; r++) {
      const first = r % 2 === 0 ? "baton" : "dbos"
      let baton: { ours: Record<string, unknown>; peers: Figures } | undefined
      let dbosRate = 0
      for (const which of first === "baton" ? ["baton", "dbos"] : ["dbos", "baton"]) {
        if (which === "baton") {
          await runScript("bench/checkpoints-durable.ts", [String(n), "1"])
          baton = JSON.parse(fs.readFileSync(resultFile, "utf8"))
        } else {
          dbosRate = (await dbos.call<{ perSecond: number }>("steps", { n })).perSecond
        }
      }
      const ours = baton!.ours as Record<string, unknown>
      const sub = (key: string) => (ours[key] as { checkpointsPerSecond?: number } | undefined)?.checkpointsPerSecond
      const row = {
        ours: {
          checkpointsPerSecond: ours.checkpointsPerSecond as number,
          ...(sub("inTransaction") !== undefined ? { inTransaction: sub("inTransaction")! } : {}),
          ...(sub("asyncCreate") !== undefined ? { asyncCreate: sub("asyncCreate")! } : {})
        },
        peers: {
          ...Object.fromEntries(Object.entries(baton!.peers).map(([name, v]) => [name, v.checkpointsPerSecond])),
          dbos: dbosRate
        }
      }
      settings = Object.fromEntries(Object.entries(baton!.peers).map(([name, v]) => [name, v.settings ?? ""]))
      settings.ours = String(ours.settings ?? "")
      perRound.push(row)
      options.log(`  round ${r + 1}: ${JSON.stringify(row)}`)
    }
  } finally {
    await dbos.call("teardown").catch(() => undefined)
    await dbos.close()
  }
  const med = (pick: (row: (typeof perRound)[number]) => number | undefined) => {
    const values = perRound.map(pick).filter((v): v is number => typeof v === "number")
    return values.length === 0 ? undefined : round(median(values))
  }
  const ours: Record<string, unknown> = {
    checkpointsPerSecond: med((row) => row.ours.checkpointsPerSecond),
    rounds: perRound.map((row) => row.ours.checkpointsPerSecond),
    inTransaction: { checkpointsPerSecond: med((row) => row.ours.inTransaction) },
    asyncCreate: { checkpointsPerSecond: med((row) => row.ours.asyncCreate) },
    settings: settings.ours
  }
  const peerNames = Object.keys(perRound[0]?.peers ?? {})
  const peers: Record<string, Record<string, unknown>> = {}
  for (const name of peerNames) {
    peers[name] = {
      checkpointsPerSecond: med((row) => row.peers[name]),
      rounds: perRound.map((row) => row.peers[name]),
      settings:
        name === "dbos"
          ? "DBOS Transact 5.3: one workflow of N sequential no-op steps (registerWorkflow / registerStep, defaults), own system database"
          : settings[name]
    }
  }
  const table: Array<Array<unknown>> = [
    ["baton", ours.checkpointsPerSecond],
    [
      "baton (completion in the caller's transaction)",
      (ours.inTransaction as { checkpointsPerSecond?: number }).checkpointsPerSecond
    ],
    ["baton (asyncCreate)", (ours.asyncCreate as { checkpointsPerSecond?: number }).checkpointsPerSecond],
    ...peerNames.map((name) => [name, peers[name]!.checkpointsPerSecond])
  ]
  printTable(
    `checkpoints: ${n} sequential durable checkpoints, median of ${options.rounds} rounds (checkpoints/s)`,
    ["system", "checkpoints/s"],
    table
  )
  return {
    scenario: "checkpoints",
    unit: "checkpoints/s",
    higherIsBetter: true,
    headline: "checkpointsPerSecond",
    ours,
    peers,
    ratios: ratios("checkpointsPerSecond", ours, peers),
    quick: options.quick,
    rounds: options.rounds,
    notes: [
      "Baton and bare-commit figures come from bench/checkpoints-durable.ts (one round per runner round); DBOS runs in its own agent process between them, the order alternating",
      "bare-commit is the physical limit: two autocommit commits per checkpoint on one connection"
    ]
  }
}
