/**
 * Probe (issue 14): the time of one `TaskQueue.enqueue` call on Postgres, alone (no worker), sequential, one fiber.
 * Usage: npx tsx scratchpad/enqueue-latency.ts [n=300]
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"

const n = Number(process.argv[2] ?? 300)
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const Noop = Task.make("probe-noop", { payload: Schema.Struct({ t: Schema.Number }), handler: () => Effect.void })
const layer = SqlTaskQueue.layer.pipe(
  Layer.provideMerge(Storage.layerPg({ url, schema: `perf_enqueue_latency_${process.pid}` }))
)
const program = Effect.gen(function* () {
  const queue = yield* TaskQueue
  const times: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    yield* queue.enqueue(Noop, { t: i })
    times.push(performance.now() - t0)
    yield* Effect.sleep("5 millis")
  }
  const s = times.slice(20).sort((a, b) => a - b)
  const p = (q: number) => s[Math.floor(q * s.length)]!.toFixed(2)
  console.log(`enqueue call p50 ${p(0.5)} p90 ${p(0.9)} p99 ${p(0.99)} ms`)
})
Effect.runPromise(program.pipe(Effect.provide(layer))).then(
  () => process.exit(0),
  (e) => {
    console.error(e)
    process.exit(1)
  }
)
