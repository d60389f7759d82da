// The README's first example, contract and worker in one file (run: npx tsx scratchpad/readme-task.ts).
import { Context, Effect, Schema } from "effect"
import { Baton, Task, TaskQueue, Worker } from "../src/index.js"

export const Resize = Task.contract("resize", {
  payload: Schema.Struct({ url: Schema.String, width: Schema.Int }),
  success: Schema.Struct({ bytes: Schema.Number }),
  maxAttempts: 5
})

class Scaler extends Context.Tag("Scaler")<Scaler, { readonly factor: number }>() {}

const ResizeImpl = Task.implement(Resize, ({ url, width }) =>
  Effect.map(Scaler, ({ factor }) => ({ bytes: url.length * width * factor }))
)

const program = Effect.gen(function* () {
  const queue = yield* TaskQueue.TaskQueue
  const id = yield* queue.enqueue(Resize, { url: "https://example.com/a.png", width: 300 }, { idempotencyKey: "a-300" })
  yield* Worker.run({ tasks: [ResizeImpl], concurrency: 10 }) // scoped: graceful shutdown when the scope closes
  let info = yield* queue.get(id)
  while (info.state !== "succeeded") info = yield* Effect.zipRight(Effect.sleep("10 millis"), queue.get(id))
  console.log(yield* queue.result(Resize, id)) // Option.some({ bytes: 7500 })
})

Effect.runPromise(
  program.pipe(
    Effect.scoped,
    Effect.provideService(Scaler, { factor: 1 }), // the handler's services, provided where the worker is built
    Effect.provide(Baton.layerSqlite({ filename: "/tmp/readme-task.db" }))
  )
)
