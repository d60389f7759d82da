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
