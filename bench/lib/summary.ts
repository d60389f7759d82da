/**
 * The markdown summary of a results directory: one row per scenario figure and peer (ours, theirs, ours / theirs),
 * ready to paste into README.md or docs/benchmarks.md. `npm run bench` prints it at the end and writes it to
 * <results dir>/summary.md; `npx tsx bench/lib/summary.ts [dir]` regenerates it from the JSON files alone.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { bestRatios, family, resultsDir, type ScenarioResult } from "./report.js"
import { round } from "./stats.js"

/** Scenario order of the table (others follow alphabetically). */
const order = [
  "queue-throughput",
  "queue-latency",
  "chord-fanin",
  "checkpoints",
  "completion-stream",
  "memory",
  "scale-out",
  "soak"
]

const cell = (value: unknown): string => {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–"
  const r = round(value)
  return Math.abs(r) >= 1000 ? Math.round(r).toLocaleString("en-US") : String(r)
}

const readResults = (dir: string): Array<ScenarioResult> =>
  fs
    .readdirSync(dir)
    .filter((file) => file.endsWith(".json"))
    .map((file) => JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as ScenarioResult)
    .filter((result) => typeof result.scenario === "string" && result.ours !== undefined)
    .sort((a, b) => {
      const ia = order.indexOf(a.scenario)
      const ib = order.indexOf(b.scenario)
      return (ia < 0 ? order.length : ia) - (ib < 0 ? order.length : ib) || a.scenario.localeCompare(b.scenario)
    })

/** Builds the markdown summary of every `<scenario>.json` in `dir`. */
export const summaryMarkdown = (dir: string = resultsDir()): string => {
  const results = readResults(dir).filter((result) => order.includes(result.scenario))
  const lines = [
    "| scenario | figure | Baton | peer | peer's figure | Baton / peer | Baton ahead? |",
    "|---|---|---|---|---|---|---|"
  ]
  for (const result of results) {
    const rows = result.summary ?? [{ figure: result.headline, key: result.headline }]
    for (const row of rows) {
      const unit = row.unit ?? result.unit
      const higherIsBetter = row.higherIsBetter ?? result.higherIsBetter
      const ours = result.ours[row.key]
      const figure = `${row.figure} (${unit}, ${higherIsBetter ? "higher" : "lower"} is better)`
      const peers = Object.entries(result.peers).filter(([, peer]) => typeof peer[row.key] === "number")
      if (peers.length === 0) {
        lines.push(`| ${result.scenario} | ${figure} | ${cell(ours)} | – | – | – | – |`)
        continue
      }
      const line = (label: string, mine: unknown, name: string, theirs: number) => {
        const ratio = typeof mine === "number" && theirs !== 0 ? mine / theirs : Number.NaN
        const ahead = Number.isFinite(ratio) ? ((higherIsBetter ? ratio >= 1 : ratio <= 1) ? "yes" : "no") : "–"
        lines.push(
          `| ${result.scenario} | ${label} | ${cell(mine)} | ${name} | ${cell(theirs)} | ${Number.isFinite(ratio) ? `${cell(ratio)}×` : "–"} | ${ahead} |`
        )
      }
      for (const [name, peer] of peers) line(figure, ours, name, peer[row.key] as number)
      // Against the best configuration of each peer that has several ("pg-boss" and "pg-boss (perf)").
      const families = new Map<string, number>()
      for (const [name] of peers) families.set(family(name), (families.get(family(name)) ?? 0) + 1)
      const best = bestRatios(row.key, higherIsBetter, result.ours, result.peers)
      for (const [name, { peer, value }] of Object.entries(best)) {
        if ((families.get(name) ?? 0) > 1) line(figure, ours, `best ${name}: ${peer}`, value)
      }
      // Baton's other configurations (ours.variants) against the best configuration of every peer.
      const variants = (result.ours.variants ?? {}) as Record<string, Record<string, unknown>>
      for (const [variant, figures] of Object.entries(variants)) {
        if (typeof figures[row.key] !== "number") continue
        for (const [name, { peer, value }] of Object.entries(best)) {
          line(
            `${figure}, Baton variant: ${variant}`,
            figures[row.key],
            families.get(name)! > 1 ? `best ${name}: ${peer}` : peer,
            value
          )
        }
      }
    }
  }
  const stamps = results.map((r) => `${r.scenario} ${r.when}${r.quick ? " (quick)" : ""}, ${r.rounds} rounds`)
  const first = results[0]
  const header = first
    ? [
        `Machine: ${first.machine}; node ${first.node}; ${first.postgres}.`,
        `Runs: ${stamps.join("; ")}.`,
        `Reproduce: \`npm run bench${results.every((r) => r.quick) ? " -- --quick" : ""}\` (figures: medians over rounds; details in bench/results/*.json).`,
        ""
      ]
    : ["No results yet: run `npm run bench`.", ""]
  return [...header, ...lines].join("\n") + "\n"
}

/** Writes <dir>/summary.md and returns its text. */
export const writeSummary = (dir: string = resultsDir()): { readonly file: string; readonly text: string } => {
  const text = summaryMarkdown(dir)
  const file = path.join(dir, "summary.md")
  fs.writeFileSync(file, text)
  return { file, text }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const { file, text } = writeSummary(process.argv[2] ?? resultsDir())
  console.log(text)
  console.log(`wrote ${file}`)
}
