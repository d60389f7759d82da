import { Console, Effect, Fiber, Layer, Schedule } from "effect"
import { Baton, CheckpointCoordinator, ExtractionWorkflow, Worker } from "../src/index.js"

const documents = Array.from({ length: 12 }, (_, i) => ({
  path: `notes/${i}.md`,
  content: `# Note ${i}\n\nShipped on 2024-05-${String(i + 1).padStart(2, "0")}, see https://example.com/${i}.\n`
}))

const program = Effect.gen(function* () {
  const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
  const checkpoints = yield* CheckpointCoordinator.CheckpointCoordinator
  // Workers can run here or in other processes (`baton worker`): they share the database.
  yield* Worker.run({ tasks: ExtractionWorkflow.tasks, concurrency: 4 })
  const run = yield* Effect.fork(workflow.run({ runId: "notes", documents, batchSize: 4 }))
  // While it runs: the batch in flight has a pending checkpoint; progress moves only once it is confirmed.
  const watch = yield* Effect.fork(
    Effect.repeat(
      Effect.flatMap(checkpoints.getPendingCheckpoints("notes"), (pending) =>
        Console.log(`pending checkpoints: [${pending.map((token) => token.batchIndex).join(", ")}]`)
      ),
      Schedule.spaced("100 millis")
    )
  )
  const result = yield* Fiber.join(run)
  yield* Fiber.interrupt(watch)
  yield* Console.log(
    `${result.documents} documents, ${result.summary.links} links, dates ${result.summary.earliestDate}…${result.summary.latestDate}`
  )
}).pipe(
  Effect.scoped,
  // Baton.layer* provide the core services; the reference workflow is a layer of its own on top.
  Effect.provide(ExtractionWorkflow.layer.pipe(Layer.provideMerge(Baton.layerSqlite({ filename: "scratchpad/readme-example.db" }))))
)

Effect.runPromise(program)
