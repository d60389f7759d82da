/** Printing result tables and writing bench/results/<scenario>.json in the shape issue 7 asks for. */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { round } from "./stats.js"

/**
 * Where results go: bench/results, or bench/results/quick for `--quick` runs (the runner sets BENCH_RESULTS_DIR for
 * itself and the scripts it starts), so that reduced-size figures never overwrite a full run's.
 */
export const resultsDir = (): string => process.env.BENCH_RESULTS_DIR ?? path.resolve(import.meta.dirname, "../results")

/** A secondary figure for the summary table: `key` of `ours` and of each peer that has it. */
export interface SummaryRow {
  readonly figure: string
  readonly key: string
  /** Defaults to the scenario's. */
  readonly unit?: string | undefined
  readonly higherIsBetter?: boolean | undefined
}

/** The JSON one scenario writes. */
export interface ScenarioResult {
  readonly scenario: string
  /** Unit of the headline figure. */
  readonly unit: string
  readonly higherIsBetter: boolean
  /** Which field of `ours` / each peer the ratios compare. */
  readonly headline: string
  readonly ours: Record<string, unknown>
  readonly peers: Record<string, Record<string, unknown>>
  /** ours / peer for the headline figure. */
  readonly ratios: Record<string, number>
  /**
   * ours / the best configuration of each peer (by family: "pg-boss" and "pg-boss (perf)" are one peer) for the
   * headline figure. Absent in files written before it existed.
   */
  readonly bestRatios?:
    Record<string, { readonly peer: string; readonly value: number; readonly ratio: number }> | undefined
  readonly node: string
  readonly postgres: string
  readonly when: string
  readonly quick: boolean
  readonly rounds: number
  readonly machine: string
  readonly notes?: ReadonlyArray<string> | undefined
  /** Rows of the summary table (default: the headline only). */
  readonly summary?: ReadonlyArray<SummaryRow> | undefined
}

/** A one-line description of this machine. */
export const machine = (): string => {
  const cpus = os.cpus()
  return `${cpus.length} x ${cpus[0]?.model.trim() ?? "cpu"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}`
}

/** Ratios ours/peer for the headline field (peers without the field are left out). */
export const ratios = (
  headline: string,
  ours: Record<string, unknown>,
  peers: Record<string, Record<string, unknown>>
): Record<string, number> => {
  const out: Record<string, number> = {}
  const mine = ours[headline]
  if (typeof mine !== "number") return out
  for (const [name, peer] of Object.entries(peers)) {
    const theirs = peer[headline]
    if (typeof theirs === "number" && theirs !== 0) out[name] = round(mine / theirs)
  }
  return out
}

/** A peer's family: its name without a parenthesised configuration ("pg-boss (perf)" → "pg-boss"). */
export const family = (name: string): string => name.replace(/ \(.*\)$/, "")

/**
 * The best configuration of each peer family for `key` (highest, or lowest when lower is better), with ours / it.
 * A family with one configuration is its own best.
 */
export const bestRatios = (
  key: string,
  higherIsBetter: boolean,
  ours: Record<string, unknown>,
  peers: Record<string, Record<string, unknown>>
): Record<string, { readonly peer: string; readonly value: number; readonly ratio: number }> => {
  const best = new Map<string, { peer: string; value: number }>()
  for (const [name, peer] of Object.entries(peers)) {
    const value = peer[key]
    if (typeof value !== "number" || value === 0) continue
    const current = best.get(family(name))
    if (current === undefined || (higherIsBetter ? value > current.value : value < current.value)) {
      best.set(family(name), { peer: name, value })
    }
  }
  const mine = ours[key]
  const out: Record<string, { peer: string; value: number; ratio: number }> = {}
  if (typeof mine !== "number") return out
  for (const [name, { peer, value }] of best) out[name] = { peer, value, ratio: round(mine / value) }
  return out
}

/** Writes the JSON file; returns its path. */
export const writeResult = (result: ScenarioResult): string => {
  const dir = resultsDir()
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${result.scenario}.json`)
  const complete = {
    ...result,
    bestRatios: result.bestRatios ?? bestRatios(result.headline, result.higherIsBetter, result.ours, result.peers)
  }
  fs.writeFileSync(file, JSON.stringify(complete, null, 2) + "\n")
  return file
}

const format = (value: unknown): string => {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value)
    const r = round(value)
    return Math.abs(r) >= 1000 ? Math.round(r).toLocaleString("en-US") : String(r)
  }
  if (value === undefined || value === null) return "–"
  return String(value)
}

/** Prints an aligned table. */
export const printTable = (
  title: string,
  headers: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<unknown>>
) => {
  const cells = [headers.map(String), ...rows.map((row) => row.map(format))]
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? "").length)))
  const line = (row: ReadonlyArray<string>) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ")
  console.log(`\n${title}`)
  console.log(line(cells[0]!))
  console.log(widths.map((w) => "-".repeat(w)).join("  "))
  for (const row of cells.slice(1)) console.log(line(row))
}
