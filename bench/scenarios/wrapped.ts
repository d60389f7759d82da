/**
 * Scenarios measured by the other engineers' standalone scripts, run from here so that `npm run bench` covers them:
 * completion-stream (bench/completion-stream.ts) and memory (bench/checkpoints-memory.ts +
 * bench/continuations-memory.ts). The first writes <results dir>/<scenario>.json itself in the issue's shape; they are read back and returned so the runner stamps node/postgres/when.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { printTable, resultsDir, type ScenarioResult } from "../lib/report.js"
import { runScript } from "../lib/spawn.js"
import type { ScenarioOptions } from "./types.js"

type Result = Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">

const read = (scenario: string): Record<string, any> =>
  JSON.parse(fs.readFileSync(path.join(resultsDir(), `${scenario}.json`), "utf8"))

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
  notes: [...(json.notes ?? []), ...notes],
  summary: [
    { figure: "commit → event in another process p50", key: "latencyP50Ms", unit: "ms", higherIsBetter: false },
    { figure: "commit → event in another process p99", key: "latencyP99Ms", unit: "ms", higherIsBetter: false },
    { figure: "events/s, one live subscriber", key: "liveEventsPerSecond", unit: "events/s", higherIsBetter: true },
    { figure: "events/s, replay", key: "replayEventsPerSecond", unit: "events/s", higherIsBetter: true }
  ]
})

export const completionStream = async (options: ScenarioOptions): Promise<Result> => {
  // latency samples, their rate per second, throughput events, held-back phase completions (see the script).
  const args = [
    ...(options.quick ? ["100", "500", "2000", "250"] : ["5000", "500", "50000", "600"]),
    String(options.rounds)
  ]
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
  const churn = options.quick ? 20_000 : 1_000_000
  const live = options.quick ? 2_000 : 100_000
  const flags = { nodeFlags: ["--expose-gc"], timeoutMs: 900_000 }
  // Two processes at once (two cores; each measures its own heap).
  const [checkpoints, continuations] = await Promise.all([
    runScript("bench/checkpoints-memory.ts", [String(churn), String(live), String(options.rounds)], flags),
    runScript("bench/continuations-memory.ts", [String(churn), String(live), String(options.rounds)], flags)
  ])
  options.log(checkpoints.trim())
  options.log(continuations.trim())
  const ours = {
    checkpointsChurned: churn,
    // Median over the rounds (segments of the churn); the whole run's figure next to it.
    bytesRetainedPerChurnedCheckpoint: grab(checkpoints, /bytes retained per checkpoint; median (-?[\d.]+)/),
    bytesRetainedPerChurnedCheckpointWholeRun: grab(checkpoints, /(-?[\d.]+) bytes retained per checkpoint\n/),
    bytesPerPendingCheckpoint: grab(checkpoints, /(-?[\d,]+) bytes per pending checkpoint/),
    continuationsFired: churn,
    bytesRetainedPerFiredContinuation: grab(continuations, /bytes retained per discarded handle; median (-?[\d.]+)/),
    bytesRetainedPerFiredContinuationWholeRun: grab(continuations, /(-?[\d.]+) bytes retained per discarded handle\n/),
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
    rounds: options.rounds,
    summary: [
      {
        figure: `heap retained per checkpoint after ${churn.toLocaleString("en-US")}`,
        key: "bytesRetainedPerChurnedCheckpoint"
      },
      {
        figure: `heap retained per continuation after ${churn.toLocaleString("en-US")} fired`,
        key: "bytesRetainedPerFiredContinuation"
      },
      { figure: "heap per pending checkpoint", key: "bytesPerPendingCheckpoint" },
      { figure: "heap per live continuation", key: "bytesPerLiveContinuation" }
    ],
    notes: [
      "in-memory CheckpointCoordinator and Continuations; heap measured after forced GC (node --expose-gc)",
      "no peer: the peers keep this state in their databases, not in the process",
      `rounds: the churn is read in ${options.rounds} consecutive segments (heap after forced GC after each); bytesRetainedPer… = median over the segments, …WholeRun = (heap after − heap before) / ${churn}`,
      `run by bench/run.ts as: node --expose-gc --import tsx bench/checkpoints-memory.ts ${churn} ${live} ${options.rounds} and bench/continuations-memory.ts ${churn} ${live} ${options.rounds}, the two at once`
    ]
  }
}
