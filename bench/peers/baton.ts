/**
 * Baton as a benchmark agent (see bench/lib/agent.ts): a no-op task on Postgres, enqueued with the public
 * `TaskQueue.enqueueMany` / `enqueue` and run by `Worker.run` with Baton's default settings except concurrency.
 *
 * `syncClaims` (the "baton (sync claims)" row): Baton commits claims and lease extensions with
 * `synchronous_commit = off`, set inside the statement itself (`set_config('synchronous_commit', 'off', true)`), so
 * no session or database setting can override it. This agent turns that call into `'on'` in the `pg` driver's
 * `Client.prototype.query` of its own process, before any connection exists; nothing else changes. The rewrites are
 * counted (`syncClaimsRewrites`) so the runner fails loudly if the statement's text changes and the switch stops
 * applying, instead of reporting the default configuration under this row's name.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Layer from "effect/Layer"
import * as Baton from "../../src/Baton.js"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Storage from "../../src/Storage.js"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Task from "../../src/Task.js"
import { TaskQueue } from "../../src/TaskQueue.js"
import * as Worker from "../../src/Worker.js"
import pg from "pg"
import { JobCounter, produceAtRate } from "../lib/agent.js"

const counter = new JobCounter()

const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: (payload) => Effect.sync(() => counter.onJob(payload))
})

let runtime: ManagedRuntime.ManagedRuntime<TaskQueue | SqlClient.SqlClient, unknown> | undefined
let workerScope: Scope.CloseableScope | undefined

const asyncCommit = "set_config('synchronous_commit', 'off', true)"
let syncClaimsRewrites = 0

/** Makes every statement of this process that sets `synchronous_commit = off` for its transaction set it `on`. */
const commitClaimsSynchronously = () => {
  const proto = pg.Client.prototype as unknown as { query: (...args: Array<unknown>) => unknown }
  const query = proto.query
  proto.query = function (this: unknown, config: unknown, ...rest: Array<unknown>) {
    const on = "set_config('synchronous_commit', 'on', true)"
    if (typeof config === "string" && config.includes(asyncCommit)) {
      syncClaimsRewrites++
      config = config.replaceAll(asyncCommit, on)
    } else if (typeof config === "object" && config !== null && "text" in config) {
      const text = (config as { text: unknown }).text
      if (typeof text === "string" && text.includes(asyncCommit)) {
        syncClaimsRewrites++
        config = { ...config, text: text.replaceAll(asyncCommit, on) }
      }
    }
    return query.call(this, config, ...rest)
  }
}

const rt = () => {
  if (runtime === undefined) throw new Error("setup first")
  return runtime
}

export const commands = {
  setup: async (args: {
    url: string
    schema: string
    layer?: "queue" | "full"
    maxConnections?: number
    syncClaims?: boolean
  }) => {
    if (args.syncClaims === true) commitClaimsSynchronously()
    const storage = { url: args.url, schema: args.schema, maxConnections: args.maxConnections ?? 10 }
    // "queue": the task queue on its storage, what an application that only needs a job queue provides.
    // "full": every Baton service (completion stream, chord coordinator, reconciler, ...) in the same process.
    runtime = ManagedRuntime.make(
      args.layer === "full"
        ? Baton.layerPg(storage)
        : SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerPg(storage)))
    )
    await runtime.runPromise(Effect.void)
  },
  reset: () =>
    rt().runPromise(
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE baton_tasks, baton_completions`
        yield* sql`VACUUM ANALYZE baton_tasks`
        yield* sql`VACUUM ANALYZE baton_completions`
      })
    ),
  enqueueBulk: (args: { n: number }) =>
    rt().runPromise(
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const calls = Array.from({ length: args.n }, () => Task.call(Noop, {}))
        const start = performance.now()
        const ids = yield* queue.enqueueMany(calls)
        return { ms: performance.now() - start, count: ids.length }
      })
    ),
  startWorker: async (args: { concurrency: number; prefetch?: number }) => {
    counter.start()
    const scope = await rt().runPromise(Scope.make())
    workerScope = scope
    await rt().runPromise(
      Worker.run({ tasks: [Noop], concurrency: args.concurrency, prefetch: args.prefetch }).pipe(Scope.extend(scope))
    )
  },
  progress: () => counter.snapshot(),
  syncClaimsRewrites: () => syncClaimsRewrites,
  stopWorker: async () => {
    const scope = workerScope
    workerScope = undefined
    if (scope !== undefined) await rt().runPromise(Scope.close(scope, Exit.void))
    return counter.finish()
  },
  produce: (args: { count: number; intervalMs: number }) =>
    produceAtRate(args.count, args.intervalMs, (t) =>
      rt().runPromise(Effect.flatMap(TaskQueue, (queue) => queue.enqueue(Noop, { t })))
    ),
  teardown: async () => {
    if (runtime !== undefined) await runtime.dispose()
    runtime = undefined
  }
}
