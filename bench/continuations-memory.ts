/**
 * Memory bench for Continuations: does a finished handle drop its callbacks, and does churn leave the heap flat?
 *
 *   npx tsx --expose-gc bench/continuations-memory.ts [churn=1000000] [live=100000] [rounds=5] [pool]
 *
 * With `pool` (a number), every handle is made with `{ concurrency: pool }` (callbacks through a bounded pool).
 *
 * 1. Churn: `churn` handles, one after another, each with one callback, completed, settled and its scope closed.
 *    The heap after (post-GC) should match the heap before; read in `rounds` segments (heap after each).
 * 2. Live: `live` handles kept at once, each with one registered callback; bytes per handle while running, after
 *    completion (callback map dropped, exit latched), and the heap after their scope closed and they were released.
 *    Note: tsx keeps function names, which makes closures heavier than in compiled output.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Continuations from "../src/Continuations.js"
import { churnInRounds, heapAfterGc, mb, reportChurn, requireGc } from "./lib/heap.js"

const churn = Number(process.argv[2] ?? 1_000_000)
const live = Number(process.argv[3] ?? 100_000)
const rounds = Number(process.argv[4] ?? 5)
const options = process.argv[5] === undefined ? undefined : { concurrency: Number(process.argv[5]) }

const heap = heapAfterGc(requireGc("bench/continuations-memory.ts"))

const program = Effect.gen(function* () {
  let fired = 0
  const callback = () => Effect.sync(() => void fired++)

  // Warm up the code paths so JIT and lazily created runtime structures are not counted as growth.
  const once = (i: number) =>
    Effect.scoped(
      Effect.gen(function* () {
        const c = yield* Continuations.make<number, never>(options)
        yield* c.addOrRunNow("cb", callback)
        yield* c.complete(Exit.succeed(i))
        yield* c.settled
      })
    )
  for (let i = 0; i < 10_000; i++) yield* once(i)
  fired = 0

  const result = yield* churnInRounds(heap, churn, rounds, (from, n) =>
    Effect.gen(function* () {
      for (let i = from; i < from + n; i++) yield* once(i)
    })
  )
  console.log(
    `churn: ${churn} handles created, fired (${fired} callbacks) and discarded in ${Math.round(result.elapsed)} ms`
  )
  reportChurn("discarded handle", result, churn)

  // Twice: the first round also raises some runtime high-water marks (scheduler and V8 queues sized for 100,000
  // fibers at once), which stay; only growth that repeats would be retention per handle.
  const base = yield* heap
  for (const round of [1, 2]) {
    const roundBase = yield* heap
    let kept: Array<Continuations.Continuations<number, never>> = []
    yield* Effect.scoped(
      Effect.gen(function* () {
        for (let i = 0; i < live; i++) {
          const c = yield* Continuations.make<number, never>(options)
          yield* c.addOrRunNow("cb", callback)
          kept.push(c)
        }
        const running = yield* heap
        for (const c of kept) yield* c.complete(Exit.succeed(1))
        for (const c of kept) yield* c.settled
        const done = yield* heap
        console.log(`live, round ${round}: ${live} handles held at once`)
        console.log(`  running, one callback each: ${((running - roundBase) / live).toFixed(0)} bytes per handle`)
        console.log(`  done (map dropped, exit latched): ${((done - roundBase) / live).toFixed(0)} bytes per handle`)
      })
    )
    kept = []
    const released = yield* heap
    console.log(
      `  released (scope closed, handles dropped): heap ${mb(released - roundBase)} vs this round's start, ` +
        `${mb(released - base)} vs the first round's`
    )
  }
})

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
