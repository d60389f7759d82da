/**
 * Memory bench for the in-memory CheckpointCoordinator: throughput of create → complete → await, and whether a
 * million of them in a row leave the heap flat.
 *
 *   npx tsx --expose-gc bench/checkpoints-memory.ts [churn=1000000] [live=100000] [rounds=5]
 *
 * 1. Churn: `churn` sequential create → complete → await (one run, increasing batch index). The heap after (post-GC)
 *    should match the heap before: awaited checkpoints are forgotten beyond the retained 1,000 most recent, which the
 *    warm-up already filled. The churn is read in `rounds` segments (heap after each): bytes per item per round.
 * 2. Rate: checkpoints per second in that loop, and for `churn` checkpoints completed by one fiber while another
 *    awaits each (a real hand-off through the `Deferred`).
 * 3. Live: `live` pending checkpoints held at once: bytes per pending checkpoint, and the heap after they were all
 *    completed and awaited.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import { CheckpointCoordinator, type CheckpointToken, layerMemory } from "../src/CheckpointCoordinator.js"
import { churnInRounds, heapAfterGc, mb, reportChurn, requireGc } from "./lib/heap.js"

const churn = Number(process.argv[2] ?? 1_000_000)
const live = Number(process.argv[3] ?? 100_000)
const rounds = Number(process.argv[4] ?? 5)

const heap = heapAfterGc(requireGc("bench/checkpoints-memory.ts"))

const program = Effect.gen(function* () {
  const coordinator = yield* CheckpointCoordinator

  const sequential = (runId: string, n: number) =>
    Effect.gen(function* () {
      for (let i = 0; i < n; i++) {
        const token = yield* coordinator.createCheckpoint(runId, i)
        yield* coordinator.completeCheckpoint(token, { batch: i })
        yield* coordinator.awaitCheckpoint(token)
      }
    })

  // Warm-up: JIT, lazily created runtime structures, and the retention window (1,000 awaited checkpoints).
  yield* sequential("warm-up", 20_000)

  // One run, batch indexes continuing across the rounds.
  const result = yield* churnInRounds(heap, churn, rounds, (from, n) =>
    Effect.gen(function* () {
      for (let i = from; i < from + n; i++) {
        const token = yield* coordinator.createCheckpoint("churn", i)
        yield* coordinator.completeCheckpoint(token, { batch: i })
        yield* coordinator.awaitCheckpoint(token)
      }
    })
  )
  console.log(`churn: ${churn} create → complete → await in ${Math.round(result.elapsed)} ms`)
  console.log(`  ${Math.round(churn / (result.elapsed / 1000)).toLocaleString("en-US")} checkpoints/s (one fiber)`)
  reportChurn("checkpoint", result, churn)

  // Hand-off: a producer creates and completes, a consumer awaits each token (Deferred wake-up across fibers).
  const handoff = (n: number) =>
    Effect.gen(function* () {
      const tokens = yield* Queue.bounded<CheckpointToken>(64)
      const done = yield* Deferred.make<void>()
      const consumer = yield* Effect.fork(
        Effect.gen(function* () {
          for (let i = 0; i < n; i++) yield* coordinator.awaitCheckpoint(yield* Queue.take(tokens))
          yield* Deferred.succeed(done, undefined)
        })
      )
      const t0 = performance.now()
      for (let i = 0; i < n; i++) {
        const token = yield* coordinator.createCheckpoint("handoff", i)
        yield* Queue.offer(tokens, token)
        yield* coordinator.completeCheckpoint(token, i)
      }
      yield* Deferred.await(done)
      yield* Fiber.join(consumer)
      return performance.now() - t0
    })
  const handoffMs = yield* handoff(Math.min(churn, 200_000))
  console.log(
    `hand-off: ${Math.round(Math.min(churn, 200_000) / (handoffMs / 1000)).toLocaleString("en-US")} checkpoints/s ` +
      `(create + complete in one fiber, await in another)`
  )

  // Live: many pending at once.
  const base = yield* heap
  const pending: Array<CheckpointToken> = []
  for (let i = 0; i < live; i++) pending.push(yield* coordinator.createCheckpoint("live", i))
  const held = yield* heap
  for (const token of pending) yield* coordinator.completeCheckpoint(token, null)
  for (const token of pending) yield* coordinator.awaitCheckpoint(token)
  pending.length = 0
  const released = yield* heap
  console.log(`live: ${live} pending checkpoints held at once`)
  console.log(`  ${Math.round((held - base) / live)} bytes per pending checkpoint (${mb(held - base)})`)
  console.log(`  after completing and awaiting all: ${mb(released - base)} above the base (1,000 retained)`)
})

Effect.runPromise(Effect.provide(program, layerMemory)).catch((error) => {
  console.error(error)
  process.exit(1)
})
