import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlCompletionBackend from "./src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "./src/SqlTaskQueue.js"
import * as Storage from "./src/Storage.js"
import * as Task from "./src/Task.js"
import * as TaskQueue from "./src/TaskQueue.js"
import * as Worker from "./src/Worker.js"
const services = SqlCompletionBackend.layerWith({ pollInterval: { min: "2 millis", max: "50 millis" } }).pipe(
  Layer.provideMerge(SqlTaskQueue.layer), Layer.provideMerge(Storage.layerMemory))
const Echo = Task.make("echo", { payload: Schema.Struct({ i: Schema.Number }), success: Schema.Number, handler: ({ i }) => Effect.succeed(i) })
const p = Effect.gen(function* () {
  const queue = yield* TaskQueue.TaskQueue
  const id = yield* queue.enqueue(Echo, { i: 3 })
  console.log("enq", id)
  const f = yield* Effect.fork(TaskQueue.awaitResult(Echo, id).pipe(Effect.tap(r => Effect.log("got", r))))
  yield* Effect.sleep(100)
  console.log("starting worker")
  yield* Worker.run({ tasks: [Echo] })
  yield* Effect.sleep(1000)
  console.log(yield* queue.get(id))
  console.log(f.unsafePoll())
}).pipe(Effect.scoped, Effect.provide(services))
Effect.runPromise(p).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
