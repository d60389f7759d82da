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
import * as Deferred from "effect/Deferred"
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
import * as Stream from "effect/Stream"
import pg from "pg"
import { CompletionBackend } from "../../src/CompletionBackend.js"
import * as SqlCompletionBackend from "../../src/SqlCompletionBackend.js"
import * as SqlRetention from "../../src/SqlRetention.js"
import * as Duration from "effect/Duration"
import { JobCounter, produceAtRate, sleep } from "../lib/agent.js"
import { nowMs } from "../lib/stats.js"

const counter = new JobCounter()

const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: (payload) => Effect.sync(() => counter.onJob(payload))
})

let runtime: ManagedRuntime.ManagedRuntime<TaskQueue | SqlClient.SqlClient | Storage.Storage, unknown> | undefined
let workerScope: Scope.CloseableScope | undefined
let storageArgs: { url: string; schema: string } | undefined
let subscriber: ManagedRuntime.ManagedRuntime<CompletionBackend, unknown> | undefined
let completionEvents = 0
let subscriberError: string | undefined

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
    storageArgs = { url: args.url, schema: args.schema }
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
  /**
   * Soak: enqueues `rate` jobs/s for `durationMs`, as one `enqueueMany` per `tickMs` tick carrying the enqueue time
   * `t` (so the worker records enqueue → handler start); returns how many it sent.
   */
  produceBatched: async (args: { rate: number; durationMs: number; tickMs?: number }) => {
    const tick = args.tickMs ?? 50
    const start = nowMs()
    let sent = 0
    for (;;) {
      const elapsed = nowMs() - start
      if (elapsed >= args.durationMs) break
      const due = Math.floor((elapsed * args.rate) / 1000) - sent
      if (due > 0) {
        const t = nowMs()
        const calls = Array.from({ length: due }, () => Task.call(Noop, { t }))
        await rt().runPromise(Effect.flatMap(TaskQueue, (queue) => queue.enqueueMany(calls)))
        sent += due
      }
      await sleep(Math.max(0, tick - ((nowMs() - start) % tick)))
    }
    return { sent, ms: nowMs() - start }
  },
  /** Soak: the enqueue → handler-start latencies recorded since the last call (the worker keeps running). */
  takeLatencies: () => {
    const latencies = counter.latencies
    counter.latencies = []
    return latencies
  },
  /**
   * Soak: subscribes to the completion stream (`CompletionBackend.subscribe`, its own small runtime on the same
   * storage) and counts the events; resolves once the subscription is active.
   */
  subscribe: async () => {
    if (storageArgs === undefined) throw new Error("setup first")
    subscriber = ManagedRuntime.make(
      SqlCompletionBackend.layer.pipe(
        Layer.provide(Storage.layerPg({ ...storageArgs, maxConnections: 2, applicationName: "bench-soak-subscriber" }))
      )
    )
    const active = await subscriber.runPromise(Deferred.make<void, unknown>())
    subscriber.runFork(
      Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        yield* Deferred.succeed(active, undefined)
        yield* Stream.runForEach(stream, () => Effect.sync(() => completionEvents++))
      }).pipe(
        Effect.scoped,
        Effect.catchAllCause((cause) =>
          Effect.sync(() => {
            subscriberError = String(cause)
          }).pipe(Effect.zipRight(Deferred.failCause(active, cause)))
        )
      )
    )
    await subscriber.runPromise(Deferred.await(active))
  },
  /**
   * Soak: one `Retention.prune` (`SqlRetention.make`) keeping succeeded tasks and settled chords `maxAgeMs`, the other
   * policies at their defaults; returns what it deleted.
   */
  prune: (args: { maxAgeMs: number }) =>
    rt().runPromise(
      Effect.gen(function* () {
        const retention = yield* SqlRetention.make({
          tasks: { succeeded: { maxAge: Duration.millis(args.maxAgeMs) } },
          chords: { maxAge: Duration.millis(args.maxAgeMs) }
        })
        return yield* retention.prune
      }).pipe(Effect.scoped)
    ),
  /** Soak: completion events the subscriber received so far, and its failure if it failed. */
  completionEvents: () => ({ events: completionEvents, error: subscriberError ?? null }),
  teardown: async () => {
    if (subscriber !== undefined) await subscriber.dispose()
    subscriber = undefined
    if (runtime !== undefined) await runtime.dispose()
    runtime = undefined
  }
}
