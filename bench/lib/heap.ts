/**
 * Heap measurement for the memory benchmarks (bench/checkpoints-memory.ts, bench/continuations-memory.ts): they run
 * under `node --expose-gc`, and read the heap after forcing full collections.
 */
import * as Effect from "effect/Effect"

/** Node's `gc()`; exits with a usage message when the process was not started with --expose-gc. */
export const requireGc = (script: string): (() => void) => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) {
    console.error(`run with --expose-gc (npx tsx --expose-gc ${script})`)
    process.exit(1)
  }
  return gc
}

/** Bytes of heap in use after three forced collections. */
export const heapAfterGc = (gc: () => void): Effect.Effect<number> =>
  Effect.sync(() => {
    for (let i = 0; i < 3; i++) gc()
    return process.memoryUsage().heapUsed
  })

/** "12.34 MB". */
export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(2)} MB`

/**
 * Runs `total` items as `rounds` consecutive segments (`segment(from, n)`), reading the heap after forced GCs around
 * each: bytes retained per item for each round, and for the whole run.
 */
export const churnInRounds = <E, R>(
  heap: Effect.Effect<number>,
  total: number,
  rounds: number,
  segment: (from: number, n: number) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function* () {
    const size = Math.ceil(total / rounds)
    const perRound: Array<number> = []
    const before = yield* heap
    const started = performance.now()
    let elapsed = 0
    let roundStart = before
    for (let from = 0; from < total; from += size) {
      const n = Math.min(size, total - from)
      const t0 = performance.now()
      yield* segment(from, n)
      elapsed += performance.now() - t0
      const roundEnd = yield* heap
      perRound.push((roundEnd - roundStart) / n)
      roundStart = roundEnd
    }
    const after = roundStart
    const sorted = [...perRound].sort((a, b) => a - b)
    const median = sorted[Math.floor((sorted.length - 1) / 2)]! / 2 + sorted[Math.ceil((sorted.length - 1) / 2)]! / 2
    return { before, after, elapsed, wall: performance.now() - started, perRound, median }
  })

/** The lines both memory scripts print for a churn (parsed by bench/scenarios/wrapped.ts). */
export const reportChurn = (
  what: string,
  result: { before: number; after: number; perRound: ReadonlyArray<number>; median: number },
  total: number
) => {
  console.log(
    `  heap before ${mb(result.before)}, after ${mb(result.after)}, delta ${mb(result.after - result.before)}`
  )
  console.log(`  ${((result.after - result.before) / total).toFixed(3)} bytes retained per ${what}`)
  console.log(
    `  rounds of ${Math.ceil(total / result.perRound.length)}: ${result.perRound.map((b) => b.toFixed(3)).join(", ")} bytes retained per ${what}; median ${result.median.toFixed(3)}`
  )
}
