import { Effect, Schema } from "effect"
import { Baton, ChordRegistry, Task, TaskQueue, Worker } from "../src/index.js"

const Fetch = Task.make("fetch", {
  payload: Schema.Struct({ url: Schema.String }),
  success: Schema.Struct({ bytes: Schema.Number }),
  handler: ({ url }) => Effect.succeed({ bytes: url.length })
})

// The callback gets its own fields plus `results`: the body results, in body order.
const Report = Task.make("report", {
  payload: ChordRegistry.callbackPayload(Fetch.success, { batch: Schema.Number }),
  success: Schema.Number,
  handler: ({ results }) => Effect.succeed(results.reduce((sum, r) => sum + r.bytes, 0))
})

const program = Effect.gen(function* () {
  const chords = yield* ChordRegistry.ChordRegistry
  const urls = ["https://a.example", "https://bb.example", "https://ccc.example"]
  const handle = yield* chords.chord({
    body: urls.map((url) => Task.call(Fetch, { url })),
    callback: ChordRegistry.callback(Report, { batch: 7 }),
    idempotencyKey: "batch-7" // the same key returns the same chord
  })
  yield* Worker.run({ tasks: [Fetch, Report] })
  const callbackId = yield* handle.await // the callback's TaskId, or fails with ChordFailed
  const queue = yield* TaskQueue.TaskQueue
  let info = yield* queue.get(callbackId)
  while (info.state !== "succeeded") info = yield* Effect.zipRight(Effect.sleep("10 millis"), queue.get(callbackId))
  console.log(yield* queue.result(Report, callbackId)) // Option.some(54)
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Baton.layerMemory)))
