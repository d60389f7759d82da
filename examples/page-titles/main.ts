/**
 * Runs (or resumes) a page-titles run with an in-process worker, printing a line per confirmed batch.
 *
 *   node --import tsx examples/page-titles/main.ts <sqlite-file> <run-id> [url ...]
 *
 * With URLs it starts the run (or continues it, if the id exists); without, it resumes the run. Workers could as well
 * run in other processes: they only need the implementations in worker.ts and the same database.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Baton from "../../src/Baton.js"
import * as Worker from "../../src/Worker.js"
import { tasks } from "./worker.js"
import * as PageTitles from "./workflow.js"

const [filename, runId, ...urls] = process.argv.slice(2)
if (filename === undefined || runId === undefined) {
  console.error("usage: main.ts <sqlite-file> <run-id> [url ...]")
  process.exit(2)
}

const program = Effect.gen(function* () {
  const workflow = yield* PageTitles.PageTitles
  yield* Worker.run({
    tasks,
    concurrency: 8,
    leaseDuration: "1 second",
    pollInterval: { min: "5 millis", max: "50 millis" }
  })
  console.log("workers ready")
  yield* Effect.forkScoped(
    Stream.runForEach(workflow.events, (event) =>
      Effect.sync(() => {
        if (event._tag === "BatchConfirmed") console.log(`batch ${event.completedBatches}/${event.totalBatches}`)
      })
    )
  )
  const run = urls.length > 0 ? yield* workflow.run({ runId, items: urls }) : yield* workflow.resume(runId)
  const status = yield* workflow.status(run.id)
  console.log(`run ${run.id} ${run.state}: ${status.itemsDone}/${status.totalItems} pages`)
}).pipe(Effect.scoped)

Effect.runPromise(
  program.pipe(Effect.provide(PageTitles.layer.pipe(Layer.provideMerge(Baton.layerSqlite({ filename })))))
).then(
  () => process.exit(0),
  (error) => {
    console.error(String(error))
    process.exit(1)
  }
)
