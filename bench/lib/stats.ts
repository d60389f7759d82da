/** Small statistics helpers for the benchmarks: medians, percentiles, summaries of samples. */

/** The p-th percentile (0..100) of the samples, by linear interpolation between closest ranks. */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = (p / 100) * (sorted.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  const a = sorted[lo]!
  const b = sorted[hi]!
  return a + (b - a) * (rank - lo)
}

/** The median of the samples. */
export const median = (samples: ReadonlyArray<number>): number => percentile(samples, 50)

/** Mean of the samples. */
export const mean = (samples: ReadonlyArray<number>): number =>
  samples.length === 0 ? Number.NaN : samples.reduce((a, b) => a + b, 0) / samples.length

/** p50 / p90 / p99 / max of a set of latency samples (milliseconds). */
export type LatencySummary = {
  readonly count: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

export const latencySummary = (samples: ReadonlyArray<number>): LatencySummary => ({
  count: samples.length,
  p50: percentile(samples, 50),
  p90: percentile(samples, 90),
  p99: percentile(samples, 99),
  max: samples.length === 0 ? Number.NaN : Math.max(...samples)
})

/**
 * The median of each numeric field across rounds: `[{a: 1}, {a: 3}, {a: 2}]` → `{a: 2}`; also keeps every round's
 * values under `rounds` so the JSON shows the spread.
 */
export const medianOfRounds = <K extends string>(
  rounds: ReadonlyArray<Readonly<Record<K, number>>>
): Record<K, number> & { readonly rounds: ReadonlyArray<Readonly<Record<K, number>>> } => {
  const out: Record<string, unknown> = {}
  const keys = new Set<string>()
  for (const round of rounds) for (const key of Object.keys(round)) keys.add(key)
  for (const key of keys) {
    out[key] = median(
      rounds.map((round) => (round as Record<string, number>)[key]).filter((v): v is number => typeof v === "number")
    )
  }
  out.rounds = rounds
  return out as Record<K, number> & { readonly rounds: ReadonlyArray<Readonly<Record<K, number>>> }
}

/** Rounds to a sensible number of significant digits for printing and JSON. */
export const round = (value: number, digits = 3): number => {
  if (!Number.isFinite(value) || value === 0) return value
  const magnitude = Math.floor(Math.log10(Math.abs(value)))
  const decimals = Math.max(0, digits - 1 - magnitude)
  return Number(value.toFixed(Math.min(decimals, 6)))
}

/** Monotonic clock in milliseconds shared by all processes on the host (CLOCK_MONOTONIC via hrtime). */
export const nowMs = (): number => Number(process.hrtime.bigint() / 1000n) / 1000
