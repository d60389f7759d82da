/**
 * `npm run bench` — Baton against its peers, side by side in one run (issue 7).
 *
 *   npm run bench                      all scenarios
 *   npm run bench -- queue-latency     one scenario (several may be named)
 *   npm run bench -- --quick           reduced sizes (whole run under a minute), same JSON
 *   npm run bench -- --rounds 7        more rounds (default 5, or 3 with --quick)
 *   npm run bench -- --systems baton,pg-boss   only some systems (Baton always runs)
 *
 * Each scenario prints a table and writes bench/results/<scenario>.json (bench/results/quick/ with --quick); the run
 * ends with a markdown summary of every result there, also written to summary.md. Environment: BENCH_PG_URL
 * (default postgres://postgres@127.0.0.1:5432/test; each system gets its own database on that server),
 * BENCH_DB_PREFIX (prefix of those databases), BENCH_REDIS_URL, BENCH_REDIS_DB (default 5), BENCH_RESULTS_DIR,
 * BENCH_CPU_PROF=<dir> (CPU profiles of the agent processes), BENCH_VERBOSE=1.
 */
import * as os from "node:os"
import * as path from "node:path"
import { serverInfo } from "./lib/db.js"
import { machine, resultsDir, type ScenarioResult, writeResult } from "./lib/report.js"
import { writeSummary } from "./lib/summary.js"
import type { ScenarioOptions } from "./scenarios/types.js"

type Scenario = (options: ScenarioOptions) => Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">>

const scenarios: Record<string, () => Promise<Scenario>> = {
  "queue-throughput": async () => (await import("./scenarios/queue-throughput.js")).run,
  "queue-latency": async () => (await import("./scenarios/queue-latency.js")).run,
  "chord-fanin": async () => (await import("./scenarios/chord-fanin.js")).run,
  checkpoints: async () => (await import("./scenarios/checkpoints.js")).run,
  "completion-stream": async () => (await import("./scenarios/wrapped.js")).completionStream,
  memory: async () => (await import("./scenarios/wrapped.js")).memory,
  faults: async () => (await import("./scenarios/faults.js")).run
}

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const roundsArg = flag("--rounds")
const systemsArg = flag("--systems")
const flagValues = new Set([roundsArg, systemsArg].filter((v) => v !== undefined))
const named = args.filter((arg) => !arg.startsWith("--") && !flagValues.has(arg))
for (const name of named) {
  if (!(name in scenarios)) {
    console.error(`unknown scenario "${name}"; known: ${Object.keys(scenarios).join(", ")}`)
    process.exit(2)
  }
}
const selected = named.length > 0 ? named : Object.keys(scenarios)
const rounds = roundsArg !== undefined ? Math.max(1, Number(roundsArg)) : quick ? 3 : 5
// Quick figures go to bench/results/quick (for this process and the scripts it starts), never over a full run's.
if (quick && process.env.BENCH_RESULTS_DIR === undefined) {
  process.env.BENCH_RESULTS_DIR = path.join(resultsDir(), "quick")
}

const main = async () => {
  const postgres = await serverInfo()
  const started = performance.now()
  console.log(`Baton benchmarks — node ${process.version}, ${postgres}`)
  console.log(
    `machine: ${machine()}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`
  )
  console.log(`scenarios: ${selected.join(", ")}; rounds: ${rounds}${quick ? " (quick)" : ""}`)
  let failed = 0
  for (const name of selected) {
    const t0 = performance.now()
    console.log(`\n=== ${name}`)
    try {
      const scenario = await scenarios[name]!()
      const result = await scenario({
        quick,
        rounds,
        systems: systemsArg?.split(","),
        log: (line) => console.log(line)
      })
      const file = writeResult({
        ...result,
        node: process.version,
        postgres,
        when: new Date().toISOString(),
        machine: machine()
      })
      console.log(`ratios (ours / peer, ${result.headline}): ${JSON.stringify(result.ratios)}`)
      console.log(`wrote ${file} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    } catch (error) {
      failed++
      console.error(`scenario ${name} failed:`, error)
    }
  }
  const summary = writeSummary()
  console.log(`\nsummary (every result in ${resultsDir()}; paste into README / docs):\n\n${summary.text}`)
  console.log(`wrote ${summary.file}`)
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s`)
  process.exit(failed > 0 ? 1 : 0)
}

main()
