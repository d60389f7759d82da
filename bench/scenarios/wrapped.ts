/**
 * Scenarios measured by the other engineers' standalone scripts, run from here so that `npm run bench` covers them:
 * chord-fanin (bench/chord-fanin.ts), completion-stream (bench/completion-stream.ts) and memory
 * (bench/checkpoints-memory.ts + bench/continuations-memory.ts). The first two write bench/results/<scenario>.json
 * themselves in the issue's shape; they are read back and returned so the runner stamps node/postgres/when.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { printTable, type ScenarioResult } from "../lib/report.js"
import { runScript } from "../lib/spawn.js"
import type { ScenarioOptions } from "./types.js"

type Result = Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">

const read = (scenario: string): Record<string, any> =>
  JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, `../results/${scenario}.json`), "utf8"))

const fromScript = (json: Record<string, any>, options: ScenarioOptions, notes: ReadonlyArray<string>): Result => ({
  scenario: json.scenario,
  unit: json.unit,
  higherIsBetter: json.higherIsBetter,
  headline: json.headline,
  ours: json.ours,
  peers: json.peers ?? {},
  ratios: json.ratios ?? {},
  quick: options.quick,
  rounds: json.rounds ?? options.rounds,
  notes: [...(json.notes ?? []), ...notes]
})

export const chordFanin = async (options: ScenarioOptions): Promise<Result> => {
  const args = options.quick
    ? ["--plan", "10:10,1000:3,10000:1", "--topologies", "1x100"]
    : ["--plan", "10:50,1000:10,10000:3"]
  const output = await runScript("bench/chord-fanin.ts", args, { timeoutMs: 900_000 })
  options.log(output.trim().split("\n").slice(-25).join("\n"))
  return fromScript(read("chord-fanin"), options, [
    "BullMQ FlowProducer (the peer for this scenario) is NOT measured: bullmq 6.7 needs a Redis client (ioredis or redis), and neither is installed; PEERS.md's BullMQ reference figures are p99 5.7 / 1.07 / 0.5 ms for 10 / 1,000 / 10,000 children (a quieter machine, not this run)",
    `run by bench/run.ts as: npx tsx bench/chord-fanin.ts ${args.join(" ")}`
  ])
}

export const completionStream = async (options: ScenarioOptions): Promise<Result> => {
  const args = options.quick ? ["300", "500", "5000"] : []
  const output = await runScript("bench/completion-stream.ts", args, { timeoutMs: 900_000 })
  options.log(output.trim().split("\n").slice(-20).join("\n"))
  return fromScript(read("completion-stream"), options, [
    "no peer: none of the peers offers a filtered, resumable stream of completions",
    `run by bench/run.ts as: npx tsx bench/completion-stream.ts ${args.join(" ")}`
  ])
}

const grab = (output: string, pattern: RegExp): number | undefined => {
  const match = pattern.exec(output)
  return match === null ? undefined : Number(match[1]!.replace(/,/g, ""))
}

export const memory = async (options: ScenarioOptions): Promise<Result> => {
  const churn = options.quick ? 50_000 : 1_000_000
  const live = options.quick ? 5_000 : 100_000
  const flags = { nodeFlags: ["--expose-gc"], timeoutMs: 900_000 }
  const checkpoints = await runScript("bench/checkpoints-memory.ts", [String(churn), String(live)], flags)
  const continuations = await runScript("bench/continuations-memory.ts", [String(churn), String(live)], flags)
  options.log(checkpoints.trim())
  options.log(continuations.trim())
  const ours = {
    checkpointsChurned: churn,
    bytesRetainedPerChurnedCheckpoint: grab(checkpoints, /(-?[\d.]+) bytes retained per checkpoint/),
    bytesPerPendingCheckpoint: grab(checkpoints, /(-?[\d,]+) bytes per pending checkpoint/),
    continuationsFired: churn,
    bytesRetainedPerFiredContinuation: grab(continuations, /(-?[\d.]+) bytes retained per discarded handle/),
    bytesPerLiveContinuation: grab(continuations, /running, one callback each: (-?[\d,]+) bytes per handle/),
    liveItems: live,
    output: { checkpoints: checkpoints.trim().split("\n"), continuations: continuations.trim().split("\n") }
  }
  printTable(
    `memory: heap after ${churn.toLocaleString("en-US")} checkpoints / continuations (post-GC; bytes)`,
    ["measure", "bytes"],
    [
      ["retained per churned checkpoint", ours.bytesRetainedPerChurnedCheckpoint],
      [`per pending checkpoint (${live.toLocaleString("en-US")} live)`, ours.bytesPerPendingCheckpoint],
      ["retained per fired continuation", ours.bytesRetainedPerFiredContinuation],
      [`per live continuation (${live.toLocaleString("en-US")} live)`, ours.bytesPerLiveContinuation]
    ]
  )
  return {
    scenario: "memory",
    unit: "bytes",
    higherIsBetter: false,
    headline: "bytesRetainedPerChurnedCheckpoint",
    ours,
    peers: {},
    ratios: {},
    quick: options.quick,
    rounds: 1,
    notes: [
      "in-memory CheckpointCoordinator and Continuations; heap measured after forced GC (node --expose-gc)",
      "no peer: the peers keep this state in their databases, not in the process",
      `run by bench/run.ts as: node --expose-gc --import tsx bench/checkpoints-memory.ts ${churn} ${live} and bench/continuations-memory.ts ${churn} ${live}`
    ]
  }
}
