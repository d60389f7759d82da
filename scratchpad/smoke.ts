import { Effect, Schema } from "effect"
import { Baton, Task, TaskQueue, Worker } from "../src/index.js"

const Double = Task.make("double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) => Effect.succeed(n * 2)
})

const url = process.argv[2]
const layer = url?.startsWith("sqlite:")
  ? Baton.layerSqlite({ filename: url.slice(7) })
  : url
    ? Baton.layerPg({ url, schema: `smoke_${Date.now()}` })
    : Baton.layerMemory
const program = Effect.gen(function* () {
  const queue = yield* TaskQueue.TaskQueue
  const id = yield* queue.enqueue(Double, { n: 21 })
  yield* Worker.run({ tasks: [Double], concurrency: 10 })
  const t0 = Date.now()
  while (Date.now() - t0 < 5000) {
    const info = yield* queue.get(id)
    if (info.state === "succeeded") break
    yield* Effect.sleep("10 millis")
  }
  console.log(yield* queue.get(id), yield* queue.result(Double, id))
  const n = 10000
  const s = Date.now()
  const ids = yield* queue.enqueueMany(Array.from({ length: n }, (_, i) => Task.call(Double, { n: i })))
  const e = Date.now()
  while ((yield* queue.counts).succeeded < n + 1) yield* Effect.sleep("20 millis")
  console.log(`enqueue ${n}: ${Math.round((n / (e - s)) * 1000)}/s; drain: ${Math.round((n / (Date.now() - e)) * 1000)}/s`, ids.length)
}).pipe(Effect.scoped, Effect.provide(layer))

Effect.runPromise(program).catch((e) => {
  console.error(e)
  process.exit(1)
})
