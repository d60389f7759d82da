/**
 * ChordRegistry: the conformance suite on every backend, then claims about processes (real child processes on a
 * shared SQLite file and on Postgres): a producer killed right after `chord`, workers of several processes racing
 * the last completions, a worker killed mid-body, a chord left undispatched healed by another process's reconciler,
 * and LISTEN connections killed while a chord completes.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { allTasks, Square, Sum } from "./fixtures/chord-tasks.js"
import * as Backends from "./support/backends.js"
import { spawnScoped as spawn, waitLine as line } from "./support/process.js"
import { chordSuite } from "./suites/ChordSuite.js"

for (const backend of Backends.all()) chordSuite(backend)

const shared = (
  kind: "sqlite" | "pg",
  options: SqlChordRegistry.Options = { reconcileInterval: 0 },
  applicationName?: string
) => {
  const { descriptor, layer: storage } = Backends.sharedStorage(kind)
  const layer =
    applicationName === undefined || descriptor.kind !== "pg"
      ? storage
      : Storage.layerPg({ url: descriptor.url, schema: descriptor.schema, maxConnections: 5, applicationName })
  return {
    descriptor,
    layer: SqlChordRegistry.layerWith({ pollInterval: { min: "1 millis", max: "20 millis" }, ...options }).pipe(
      Layer.provideMerge(SqlCompletionBackend.layerWith({ pollInterval: { min: "2 millis", max: "50 millis" } })),
      Layer.provideMerge(SqlTaskQueue.layer),
      Layer.provideMerge(layer)
    )
  }
}

const worker = (
  descriptor: Backends.BackendDescriptor,
  id: string,
  options: { concurrency?: number; reconcileMs?: number; leaseMs?: number; reclaimMs?: number } = {},
  env: Record<string, string> = {}
) =>
  Effect.gen(function* () {
    const child = yield* spawn("chord-worker.ts", descriptor, env, [
      id,
      String(options.concurrency ?? 2),
      String(options.reconcileMs ?? 0),
      String(options.leaseMs ?? 30_000),
      String(options.reclaimMs ?? 5_000)
    ])
    yield* line(child, `ready ${id}`, 90_000)
    return child
  })

const count = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ n: number }>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(Effect.orDie(query(sql)), (rows) => Number(rows[0]?.n ?? 0)))

const callbacks = (chordId: string) =>
  Effect.all({
    tasks: count((sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE name = 'chord-sum'`),
    events: count(
      (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_completions
        WHERE chord_id = ${chordId} AND kind = 'chord.callback.enqueued'`
    )
  })

const waitSucceeded = (id: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* Backends.eventually(
      Effect.map(queue.get(id), (info) => info.state === "succeeded"),
      `task ${id} to succeed`,
      30_000
    )
    return yield* queue.get(id)
  })

const gateFile = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), "baton-gate-")), "open")

const kinds: ReadonlyArray<"sqlite" | "pg"> = Backends.pgAvailable() ? ["sqlite", "pg"] : ["sqlite"]

for (const kind of kinds) {
  // Independent tests (a storage of their own each) that mostly wait on their child processes: run concurrently.
  describe.concurrent(`ChordRegistry across processes [${kind}]`, () => {
    it.live(
      "the producer is SIGKILLed right after chord returns: workers in other processes still run the callback",
      () => {
        const { descriptor, layer } = shared(kind)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          const producer = yield* spawn("chord-producer.ts", descriptor, {}, ["12", "orphan"])
          const chordId = (yield* line(producer, /^chord /, 90_000)).split(" ")[1]!
          producer.kill("SIGKILL")
          assert.strictEqual(yield* Effect.promise(() => producer.exited), "SIGKILL")
          // Another process awaits it too (registered before any body task ran).
          const awaiter = yield* spawn("chord-awaiter.ts", descriptor, {}, [chordId])
          yield* line(awaiter, "waiting", 90_000)
          yield* Effect.all([worker(descriptor, "w1"), worker(descriptor, "w2")], { concurrency: "unbounded" })
          const callbackId = yield* registry.await(chordId)
          assert.strictEqual(yield* line(awaiter, /^callback /), `callback ${callbackId}`)
          const done = yield* waitSucceeded(callbackId)
          const sum = Array.from({ length: 12 }, (_, i) => i * i).reduce((a, b) => a + b, 0)
          assert.deepStrictEqual(Option.getOrThrow(done.result), { label: "orphan", sum, count: 12 })
          assert.deepStrictEqual(yield* callbacks(chordId), { tasks: 1, events: 1 })
          assert.isFalse((yield* registry.get(chordId)).healed)
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      180_000
    )

    it.live(
      "exactly once: 8 in-process workers and 3 worker processes complete the last body tasks at the same moment",
      () => {
        const { descriptor, layer } = shared(kind)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          const queue = yield* TaskQueue
          const gate = gateFile()
          const size = 8 * 2 + 3 * 2
          const handle = yield* registry.chord({
            body: Array.from({ length: size }, (_, n) => Task.call(Square, { n, gate })),
            callback: ChordRegistry.callback(Sum, { label: "race" })
          })
          // Child reconcilers run every 5 ms: they race the completions for the dispatch too.
          // Started at once: each waits only for its own "ready".
          const children = yield* Effect.forEach(
            [0, 1, 2],
            (i) => worker(descriptor, `proc-${i}`, { concurrency: 2, reconcileMs: 5 }),
            { concurrency: "unbounded" }
          )
          for (let i = 0; i < 8; i++) {
            yield* Worker.run({
              tasks: allTasks,
              concurrency: 2,
              prefetch: 0,
              workerId: `fiber-${i}`,
              pollInterval: { min: "1 millis", max: "10 millis" }
            })
          }
          // Runs first on the way out, even after a failure: release the gated handlers and stop the children, so
          // the in-process workers' shutdown does not wait for handlers that would never finish.
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              fs.writeFileSync(gate, "")
              for (const child of children) child.kill("SIGKILL")
            })
          )
          // Every slot holds one body task, all waiting at the gate (no prefetch: a worker claims only what it runs).
          yield* Backends.eventually(
            Effect.map(queue.counts, (c) => c.running === size),
            `all ${size} body tasks running`,
            30_000
          )
          const sql = yield* SqlClient.SqlClient
          const holders = yield* sql<{ worker_id: string }>`SELECT DISTINCT worker_id FROM baton_tasks
            WHERE chord_id = ${handle.chordId}`
          assert.strictEqual(holders.length, 11)
          fs.writeFileSync(gate, "")
          const callbackId = yield* handle.await
          const info = yield* registry.get(handle.chordId)
          assert.strictEqual(info.succeeded, size)
          assert.strictEqual(info.callbackTaskId, callbackId)
          const payload = (yield* queue.get(callbackId)).payload as { results: ReadonlyArray<number> }
          assert.deepStrictEqual(
            payload.results,
            Array.from({ length: size }, (_, n) => n * n)
          )
          yield* waitSucceeded(callbackId)
          // Still one callback after the child reconcilers passed over the finished chord. The proof that a pass ran
          // after this point (instead of a fixed wait): a sentinel chord left complete but undispatched, which only a
          // reconciler pass dispatches (its bodies sit on a queue no worker serves; then they are marked done, as in
          // the healing test below). This process does not reconcile, so a child's pass dispatched it.
          const sentinel = yield* registry.chord({
            body: [
              Task.call(Square, { n: 2 }, { queue: "unserved" }),
              Task.call(Square, { n: 3 }, { queue: "unserved" })
            ],
            callback: ChordRegistry.callback(Sum, { label: "sentinel" })
          })
          yield* sql`UPDATE baton_tasks SET state = 'succeeded', finished_at = 1,
            result = CASE WHEN chord_index = 0 THEN '4' ELSE '9' END WHERE chord_id = ${sentinel.chordId}`
          yield* sql`UPDATE baton_chords SET succeeded = expected, last_body_at = 1 WHERE id = ${sentinel.chordId}`
          yield* sentinel.await
          assert.isTrue((yield* registry.get(sentinel.chordId)).healed)
          // Two "chord-sum" tasks in all: this chord's one callback and the sentinel's.
          assert.deepStrictEqual(yield* callbacks(handle.chordId), { tasks: 2, events: 1 })
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      180_000
    )

    it.live(
      "a chord left complete but undispatched (its dispatcher died) is dispatched by another process's reconciler",
      () => {
        const { descriptor, layer } = shared(kind)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          const sql = yield* SqlClient.SqlClient
          const handle = yield* registry.chord({
            body: [Task.call(Square, { n: 2 }), Task.call(Square, { n: 3 })],
            callback: ChordRegistry.callback(Sum, { label: "healed" })
          })
          // Fault injection: the state a "count, commit, then dispatch" design leaves when the process dies between
          // the two — body complete, counter at expected, dispatched_at NULL.
          yield* sql`UPDATE baton_tasks SET state = 'succeeded', finished_at = 1,
            result = CASE WHEN chord_index = 0 THEN '4' ELSE '9' END WHERE chord_id = ${handle.chordId}`
          yield* sql`UPDATE baton_chords SET succeeded = expected, last_body_at = 1 WHERE id = ${handle.chordId}`
          // This process never reconciles; the worker process does, every 20 ms.
          yield* worker(descriptor, "healer", { reconcileMs: 20 })
          const callbackId = yield* handle.await
          const info = yield* registry.get(handle.chordId)
          assert.isTrue(info.healed)
          assert.strictEqual(info.state, "completed")
          const done = yield* waitSucceeded(callbackId)
          assert.deepStrictEqual(Option.getOrThrow(done.result), { label: "healed", sum: 13, count: 2 })
          assert.deepStrictEqual(yield* callbacks(handle.chordId), { tasks: 1, events: 1 })
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      180_000
    )

    it.live(
      "a worker SIGKILLed while it holds the last body task: the task is reclaimed, rerun elsewhere, counted once",
      () => {
        const { descriptor, layer } = shared(kind)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          const queue = yield* TaskQueue
          const gate = gateFile()
          const handle = yield* registry.chord({
            body: [Task.call(Square, { n: 1 }), Task.call(Square, { n: 2 }), Task.call(Square, { n: 3, gate })],
            callback: ChordRegistry.callback(Sum, { label: "killed" })
          })
          const doomed = yield* worker(descriptor, "doomed", { concurrency: 3, leaseMs: 300 })
          yield* Backends.eventually(
            Effect.map(registry.get(handle.chordId), (info) => info.succeeded === 2),
            "two body tasks done",
            30_000
          )
          doomed.kill("SIGKILL")
          yield* Effect.promise(() => doomed.exited)
          fs.writeFileSync(gate, "")
          yield* worker(descriptor, "survivor", { concurrency: 3, leaseMs: 300, reclaimMs: 50 })
          const callbackId = yield* handle.await
          const info = yield* registry.get(handle.chordId)
          assert.strictEqual(info.succeeded, 3)
          assert.isFalse(info.healed)
          const sql = yield* SqlClient.SqlClient
          const last = yield* sql<{ attempts: number; worker_id: string }>`SELECT attempts, worker_id FROM baton_tasks
            WHERE chord_id = ${handle.chordId} AND chord_index = 2`
          assert.strictEqual(Number(last[0]!.attempts), 2)
          assert.strictEqual(last[0]!.worker_id, "survivor")
          assert.deepStrictEqual((yield* queue.get(callbackId)).payload, { results: [1, 4, 9], label: "killed" })
          assert.deepStrictEqual(yield* callbacks(handle.chordId), { tasks: 1, events: 1 })
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      180_000
    )
  })
}

if (Backends.pgAvailable()) {
  describe("ChordRegistry [pg] LISTEN connections killed", () => {
    it.live(
      "chords still complete and awaits (here and in another process) still resolve",
      () => {
        // Every process of this test (and only this test) uses this application name, so its LISTEN connections
        // are "<app>-listener" (other test files share the database).
        const app = `chordlisten${process.pid}`
        const env = { BATON_TEST_APP_NAME: app }
        const { descriptor, layer } = shared("pg", { reconcileInterval: 0 }, app)
        return Effect.gen(function* () {
          const registry = yield* ChordRegistry.ChordRegistry
          const sql = yield* SqlClient.SqlClient
          const gate = gateFile()
          const handle = yield* registry.chord({
            body: Array.from({ length: 20 }, (_, n) => Task.call(Square, { n, gate })),
            callback: ChordRegistry.callback(Sum, { label: "listen" })
          })
          const awaiter = yield* spawn("chord-awaiter.ts", descriptor, env, [handle.chordId])
          yield* line(awaiter, "waiting", 90_000)
          yield* worker(descriptor, "w", { concurrency: 20 }, env)
          const listeners = sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity
            WHERE application_name = ${`${app}-listener`}`
          const kill = sql<{ n: number }>`SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
            WHERE application_name = ${`${app}-listener`}`
          // This process, the awaiter and the worker each hold a LISTEN connection (the completion backend's).
          yield* Backends.eventually(
            Effect.map(listeners, (rows) => Number(rows[0]!.n) >= 3),
            "three LISTEN connections",
            30_000
          )
          const killed = Number((yield* kill)[0]!.n)
          assert.isAtLeast(killed, 3)
          fs.writeFileSync(gate, "")
          // Kill them again while the completions commit.
          yield* kill
          const callbackId = yield* handle.await
          assert.strictEqual(yield* line(awaiter, /^callback /), `callback ${callbackId}`)
          assert.deepStrictEqual(yield* callbacks(handle.chordId), { tasks: 1, events: 1 })
          yield* waitSucceeded(callbackId)
        }).pipe(Effect.scoped, Effect.provide(layer))
      },
      180_000
    )
  })
}

describe("ChordRegistry: the dispatched callback wakes this process's workers", () => {
  // A worker that never polls (1 hour) can only find the callback if its enqueue (inside the completing transaction)
  // wakes it; on Postgres that is the NOTIFY, on SQLite an in-process signal.
  for (const backend of Backends.all()) {
    it.live(`[${backend.name}] a worker with a 1-hour poll interval runs the callback`, () =>
      Effect.gen(function* () {
        const registry = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        yield* Worker.run({ tasks: allTasks, concurrency: 4, pollInterval: { min: "1 hour", max: "1 hour" } })
        const handle = yield* registry.chord({
          body: [1, 2, 3].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Sum, { label: "woken" })
        })
        const callbackId = yield* handle.await
        yield* Backends.eventually(
          Effect.map(queue.get(callbackId), (info) => info.state === "succeeded"),
          "the callback ran",
          20_000
        )
      }).pipe(
        Effect.scoped,
        Effect.provide(
          SqlChordRegistry.layerWith({ reconcileInterval: 0 }).pipe(
            Layer.provideMerge(SqlTaskQueue.layer),
            Layer.provideMerge(backend.storage())
          )
        )
      )
    )
  }
})
