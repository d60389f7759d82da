/**
 * The worker process of the `faults` scenario: `node --import tsx bench/lib/faultWorker.ts <url> <schema> <appName>
 * <tasks>`. Opens its storage (connections named <appName>, so the scenario can terminate them), enqueues <tasks>
 * one-millisecond tasks, prints "ready", and on a "go" line on stdin starts one worker at concurrency 10 (other
 * options default). Runs until killed.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as readline from "node:readline"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Storage from "../../src/Storage.js"
import * as Task from "../../src/Task.js"
import { TaskQueue } from "../../src/TaskQueue.js"
import * as Worker from "../../src/Worker.js"

const [url = "", schema = "", applicationName = "baton-faults", count = "3000"] = process.argv.slice(2)

const Tick = Task.make("bench.tick", {
  payload: Schema.Struct({ i: Schema.Number }),
  success: Schema.Number,
  handler: ({ i }) => Effect.as(Effect.sleep("1 millis"), i)
})

const go = new Promise<void>((resolve) => {
  readline.createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() === "go") resolve()
  })
})

const program = Effect.gen(function* () {
  const queue = yield* TaskQueue
  const n = Number(count)
  for (let i = 0; i < n; i += 1000) {
    yield* queue.enqueueMany(
      Array.from({ length: Math.min(1000, n - i) }, (_, j) => Task.call(Tick, { i: i + j }, { maxAttempts: 10 }))
    )
  }
  console.log("ready")
  yield* Effect.promise(() => go)
  yield* Worker.run({ tasks: [Tick], concurrency: 10 })
  console.log("started")
  return yield* Effect.never
}).pipe(Effect.scoped)

const layer = SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerPg({ url, schema, applicationName })))
Effect.runPromise(Effect.provide(program, layer)).then(
  () => process.exit(0),
  (error) => {
    console.error(String(error))
    process.exit(1)
  }
)
