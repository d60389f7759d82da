/**
 * Probe (issue 14): Node CPU of the worker's per-task path without a database — claimed tasks through `ready`, the
 * slots and `Attempt.make`, into the completions queue (drained by a fiber that drops them). µs per task.
 * Usage: npx tsx scratchpad/attempt-micro.ts [tasks=200000] [rounds=5]
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Task from "../src/Task.js"
import type { ClaimedTask, TaskQueue } from "../src/TaskQueue.js"
import * as Attempt from "../src/internal/worker/attempt.js"
import * as ClaimLoop from "../src/internal/worker/claimLoop.js"
import * as GroupCommit from "../src/internal/worker/groupCommit.js"
import * as LocalQueue from "../src/internal/worker/localQueue.js"

const n = Number(process.argv[2] ?? 200000)
const rounds = Number(process.argv[3] ?? 5)
const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: () => Effect.void
})
const task = (i: number): ClaimedTask =>
  ({
    id: `t${i}`,
    name: "noop",
    queue: "default",
    namespace: "default",
    payload: "{}",
    priority: 0,
    attempt: 1,
    maxAttempts: 3,
    backoff: { baseMs: 100, factor: 2, maxMs: 1000 },
    leaseId: "L",
    chordId: undefined,
    runId: undefined,
    timeoutMs: undefined
  }) as unknown as ClaimedTask

const program = Effect.gen(function* () {
  for (let r = 0; r < rounds; r++) {
    const local = yield* LocalQueue.make(10, 1000)
    const completions = yield* GroupCommit.make(10)
    const outcomes = { record: () => Effect.void } as any
    const execute = Attempt.make({
      queue: {} as TaskQueue["Type"],
      registry: new Map([["noop", Noop as Task.Any]]),
      workerId: "w",
      spans: false,
      local,
      completions,
      outcomes,
      leaseMs: 30_000
    })
    const tasks = Array.from({ length: n }, (_, i) => task(i))
    let taken = 0
    const drainer = yield* Effect.fork(
      Effect.whileLoop({
        while: () => taken < n,
        body: () => Queue.takeBetween(completions.queue, 1, 1000),
        step: (chunk) => {
          taken += chunk.length
        }
      })
    )
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const slots = yield* Effect.forkAll(Array.from({ length: 10 }, () => ClaimLoop.slot(local, execute)))
    for (let i = 0; i < n; i++) {
      local.held.set(tasks[i]!.id, tasks[i]!)
      local.buffered++
      Queue.unsafeOffer(local.ready, tasks[i]!)
      if (i % 1000 === 999) yield* Effect.yieldNow()
    }
    yield* Fiber.join(drainer)
    const ms = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    for (let i = 0; i < 10; i++) Queue.unsafeOffer(local.ready, LocalQueue.stop)
    yield* Fiber.join(slots)
    console.log(
      `round ${r + 1}: ${((ms / n) * 1000).toFixed(2)} us/task wall, ${((cpu.user + cpu.system) / n).toFixed(2)} us/task CPU`
    )
  }
})
Effect.runPromise(program)
