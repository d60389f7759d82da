
import { Effect, Schema } from "effect"
import { Baton, Task, TaskQueue, Worker } from "../src/index.js"

const Resize = Task.make("resize", {
  payload: Schema.Struct({ url: Schema.String, width: Schema.Int }),
  success: Schema.Struct({ bytes: Schema.Number }),
  maxAttempts: 5,
  handler: ({ url, width }) => Effect.succeed({ bytes: url.length * width })
})

const program = Effect.gen(function* () {
  const queue = yield* TaskQueue.TaskQueue
  const id = yield* queue.enqueue(Resize, { url: "https://example.com/a.png", width: 300 }, { idempotencyKey: "a-300" })
  yield* Worker.run({ tasks: [Resize], concurrency: 10 }) // scoped: graceful shutdown when the scope closes
  let info = yield* queue.get(id)
  while (info.state !== "succeeded") info = yield* Effect.zipRight(Effect.sleep("10 millis"), queue.get(id))
  console.log(yield* queue.result(Resize, id)) // Option.some({ bytes: 7500 })
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Baton.layerSqlite({ filename: "/tmp/readme-task.db" }))))
