/**
 * Baton's chords as a benchmark agent (see bench/lib/agent.ts), the counterpart of bench/peers/bullmq.ts: a chord of
 * `size` no-op body tasks on queue "bodies" (one `Worker.run`, concurrency 10, which also runs the callback task and
 * claims "callbacks", so the callback can be handed off to it) and a callback on queue "callbacks" (another
 * `Worker.run`, concurrency 1), like BullMQ's children and parent workers. Everything else is Baton's
 * defaults: `SqlChordRegistry.layer` + `SqlCompletionBackend.layer` + `SqlTaskQueue.layer` on `Storage.layerPg`.
 *
 * Instants, all on the host's monotonic clock (`nowMs`, this process):
 * - body done: the last statement of each body handler (the handler returns right after it); the chord's "last body
 *   completion" is the latest of them;
 * - callback start: the first statement of the callback handler (its payload already holds every body result).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as ChordRegistry from "../../src/ChordRegistry.js"
import * as SqlChordRegistry from "../../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Storage from "../../src/Storage.js"
import * as Task from "../../src/Task.js"
import * as Worker from "../../src/Worker.js"
import { type ChordRun, ChordTracker } from "../lib/chords.js"

const tracker = new ChordTracker()

const Body = Task.make("bench-chord-body", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) => Effect.sync(() => tracker.bodyDone(n * 2))
})

const Callback = Task.make("bench-chord-callback", {
  payload: ChordRegistry.callbackPayload(Schema.Number),
  success: Schema.Number,
  handler: ({ results }) =>
    Effect.sync(() => {
      tracker.callbackStarted()
      tracker.callbackHasResults(results.length)
      return results.length
    })
})

const layerFor = (url: string, schema: string) =>
  SqlChordRegistry.layer.pipe(
    Layer.provideMerge(SqlCompletionBackend.layer),
    Layer.provideMerge(SqlTaskQueue.layer),
    Layer.provideMerge(Storage.layerPg({ url, schema, applicationName: "bench-baton-chord" }))
  )

let runtime: ManagedRuntime.ManagedRuntime<Layer.Layer.Success<ReturnType<typeof layerFor>>, unknown> | undefined
let workers: Scope.CloseableScope | undefined

const rt = () => {
  if (runtime === undefined) throw new Error("setup first")
  return runtime
}

const startWorkers = async () => {
  const scope = await rt().runPromise(Scope.make())
  await rt().runPromise(
    Effect.all(
      [
        // The body worker also runs the callback task and claims its queue, so the worker that completes the last
        // body task can start the callback itself (the hand-off, docs/chords.md); the callback worker stays, as
        // BullMQ's parent worker.
        Worker.run({ tasks: [Body, Callback], queues: ["bodies", "callbacks"], concurrency: 10 }),
        Worker.run({ tasks: [Callback], queues: ["callbacks"], concurrency: 1 })
      ],
      { discard: true }
    ).pipe(Scope.extend(scope))
  )
  workers = scope
}

const stopWorkers = async () => {
  const scope = workers
  workers = undefined
  if (scope !== undefined) await rt().runPromise(Scope.close(scope, Exit.void))
}

export const commands = {
  setup: async (args: { url: string; schema: string }) => {
    runtime = ManagedRuntime.make(layerFor(args.url, args.schema))
    await runtime.runPromise(Effect.void)
    await startWorkers()
  },
  /** Empties the tables between rounds (workers stopped meanwhile). */
  reset: async () => {
    await stopWorkers()
    await rt().runPromise(
      Effect.flatMap(SqlClient.SqlClient, (sql) => sql`TRUNCATE baton_tasks, baton_chords, baton_completions`)
    )
    await startWorkers()
  },
  /** One chord of `size` bodies, from the `chord(...)` call to its callback's handler start. */
  chord: (args: { size: number }): Promise<ChordRun> =>
    tracker.run(args.size, () =>
      rt().runPromise(
        Effect.flatMap(ChordRegistry.ChordRegistry, (registry) =>
          registry.chord({
            body: Array.from({ length: args.size }, (_, n) => Task.call(Body, { n }, { queue: "bodies" })),
            callback: ChordRegistry.callback(Callback, {}, { queue: "callbacks" })
          })
        )
      )
    ),
  teardown: async () => {
    await stopWorkers()
    if (runtime !== undefined) await runtime.dispose()
    runtime = undefined
  }
}
