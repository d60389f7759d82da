import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import pg from "pg"
import { CompletionBackend, type CompletionEvent } from "../src/CompletionBackend.js"
import { completionsChannel, tasksChannel } from "../src/internal/sql/wakes.js"
import * as PgListener from "../src/internal/sql/pgListener.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Backends from "./support/backends.js"
import { query, rawClient } from "./support/pgRaw.js"
import {
  completionBackendSuite,
  eventuallyEffect,
  finish,
  layerFor,
  take,
  tasks
} from "./suites/CompletionBackendSuite.js"

for (const backend of Backends.all()) completionBackendSuite(backend)

let counter = 0
/** A fresh schema and an application name of its own, so this test's LISTEN connection can be counted. */
const isolatedPg = () => {
  const id = `${process.pid}_${Date.now().toString(36)}_${counter++}`
  const schema = `bt_cb_${id}`
  const applicationName = `btcb-${id}`
  return {
    schema,
    applicationName,
    listenerName: `${applicationName}-listener`,
    storage: Storage.layerPg({ url: Backends.pgUrl(), schema, applicationName, maxConnections: 5 })
  }
}

const listenerPids = (observer: pg.Client, name: string) =>
  query<{ pid: number }>(observer, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", [name]).pipe(
    Effect.map((rows) => rows.map((row) => row.pid))
  )

/** Inserts a log row the way a completing transaction does (row + NOTIFY), on a raw connection's open transaction. */
const appendRaw = (client: pg.Client, schema: string, taskId: string) =>
  query<{ seq: number; xid: string }>(
    client,
    `WITH ins AS (
       INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, at)
       VALUES ('task', $1, 'late', 'default', 'default', '[]', 'succeeded', $2) RETURNING seq, xid
     ) SELECT seq::int AS seq, xid::text AS xid, pg_notify($3, seq::text) FROM ins`,
    [taskId, Date.now(), completionsChannel(`baton_${schema}`)]
  ).pipe(Effect.map((rows) => rows[0]!))

const ids = (events: ReadonlyArray<CompletionEvent>) => events.map((event) => event.taskId as string)

describe.runIf(Backends.pgAvailable())("CompletionBackend (pg only)", () => {
  it.scopedLive(
    "a committer that took an earlier seq and commits late is delivered when it commits, exactly once; later ones do not wait",
    () =>
      Effect.gen(function* () {
        const env = isolatedPg()
        yield* Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const stream = yield* completions.subscribe()
          const late = yield* rawClient(env.schema)
          yield* query(late, "BEGIN")
          const lateRow = yield* appendRaw(late, env.schema, "late-1")
          // Later sequences commit first...
          const early = yield* finish(tasks(5))
          const sql = yield* SqlClient.SqlClient
          const visible = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM baton_completions
          WHERE seq > ${lateRow.seq}`
          // ...so a reader that resumed "after the highest seq it saw" would already be past the late one: the trap.
          assert.strictEqual(visible[0]!.n, 5)
          const seen = yield* Ref.make<ReadonlyArray<CompletionEvent>>([])
          const consumer = yield* stream.pipe(
            Stream.take(6),
            Stream.runForEach((event) => Ref.update(seen, (events) => [...events, event])),
            Effect.fork
          )
          // Not held back by the open transaction: the five arrive while it is still open...
          yield* eventuallyEffect(Effect.map(Ref.get(seen), (events) => events.length === 5))
          const before = yield* Ref.get(seen)
          assert.deepStrictEqual(new Set(ids(before)), new Set(early))
          for (let i = 1; i < before.length; i++) assert.isAbove(before[i]!.sequence, before[i - 1]!.sequence)
          // ...and a cursor taken meanwhile resumes exactly: only the late one is still to come.
          const resumed = yield* Effect.fork(
            Effect.scoped(Effect.flatMap(completions.subscribe({ after: before[4]!.cursor }), (s) => take(s, 1)))
          )
          yield* query(late, "COMMIT")
          yield* Fiber.join(consumer).pipe(Effect.timeout("20 seconds"))
          const events = yield* Ref.get(seen)
          // The late committer's lower seq is delivered when it commits, once.
          assert.deepStrictEqual(ids(events), [...ids(before), "late-1"])
          assert.strictEqual(events[5]!.sequence, lateRow.seq)
          assert.deepStrictEqual(ids(yield* Fiber.join(resumed).pipe(Effect.timeout("20 seconds"))), ["late-1"])
          // A replay from the start gets all six, once ((xid, seq) order: the older transaction first).
          const replay = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ fromSequence: 0 }), (s) => take(s, 6))
          )
          assert.deepStrictEqual(ids(replay), ["late-1", ...ids(before)])
        }).pipe(Effect.provide(layerFor(env.storage)))
      })
  )

  it.scopedLive("a lower seq committed by a younger transaction after a higher one is not skipped by cursors", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        const seen = yield* Ref.make<ReadonlyArray<CompletionEvent>>([])
        const consumer = yield* stream.pipe(
          Stream.take(2),
          Stream.runForEach((event) => Ref.update(seen, (events) => [...events, event])),
          Effect.fork
        )
        const older = yield* rawClient(env.schema)
        const younger = yield* rawClient(env.schema)
        yield* query(older, "BEGIN")
        yield* query(older, "SELECT pg_current_xact_id()") // older gets the lower xid
        yield* query(younger, "BEGIN")
        const low = yield* appendRaw(younger, env.schema, "younger-low-seq")
        const high = yield* appendRaw(older, env.schema, "older-high-seq")
        assert.isBelow(low.seq, high.seq)
        assert.isTrue(BigInt(high.xid) < BigInt(low.xid))
        yield* query(older, "COMMIT")
        // Delivered while the younger transaction is still open: its xid is below the horizon.
        yield* eventuallyEffect(Effect.map(Ref.get(seen), (events) => events.length === 1))
        const first = yield* Ref.get(seen)
        assert.deepStrictEqual(ids(first), ["older-high-seq"])
        yield* query(younger, "COMMIT")
        // The cursor of the first event still leads to the lower seq that committed after it.
        const resumed = yield* Effect.scoped(
          Effect.flatMap(completions.subscribe({ after: first[0]!.cursor }), (s) => take(s, 1))
        )
        assert.deepStrictEqual(ids(resumed), ["younger-low-seq"])
        assert.strictEqual(resumed[0]!.sequence, low.seq)
        // And the live stream delivers it next, exactly once.
        yield* Fiber.join(consumer).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(ids(yield* Ref.get(seen)), ["older-high-seq", "younger-low-seq"])
        const all = yield* Effect.scoped(Effect.flatMap(completions.subscribe({ fromSequence: 0 }), (s) => take(s, 2)))
        assert.deepStrictEqual(ids(all), ["older-high-seq", "younger-low-seq"])
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )

  it.scopedLive("an open writer in another database or in this one does not hold delivery back", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        const seen = yield* Ref.make<ReadonlyArray<CompletionEvent>>([])
        yield* stream.pipe(
          Stream.runForEach((event) => Ref.update(seen, (events) => [...events, event])),
          Effect.forkScoped
        )
        // A writing transaction in the "postgres" database, open for the whole test.
        const elsewhere = yield* rawClient(undefined, "postgres")
        yield* query(elsewhere, "BEGIN")
        yield* query(elsewhere, "SELECT pg_current_xact_id()")
        const first = yield* finish(tasks(3))
        yield* eventuallyEffect(Effect.map(Ref.get(seen), (events) => events.length === 3))
        assert.deepStrictEqual(new Set(ids(yield* Ref.get(seen))), new Set(first))
        // A writing transaction in THIS database (another schema) does not hold later rows back either.
        const here = yield* rawClient()
        yield* query(here, "BEGIN")
        yield* query(here, "SELECT pg_current_xact_id()")
        const second = yield* finish(tasks(2))
        yield* eventuallyEffect(Effect.map(Ref.get(seen), (events) => events.length === 5))
        assert.deepStrictEqual(new Set(ids((yield* Ref.get(seen)).slice(3))), new Set(second))
        yield* query(here, "COMMIT")
        yield* query(elsewhere, "COMMIT")
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )

  it.scopedLive("the LISTEN connection killed while 1,000 tasks complete: all 1,000 arrive, once, in order", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      const observer = yield* rawClient()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        const [firstPid] = yield* listenerPids(observer, env.listenerName)
        assert.isDefined(firstPid)
        const seen = yield* Ref.make<Array<CompletionEvent>>([])
        const consumer = yield* stream.pipe(
          Stream.take(1000),
          Stream.runForEach((event) => Ref.update(seen, (events) => [...events, event])),
          Effect.fork
        )
        // Paced by the consumer (batch i waits until it has seen batch i - 5), so the kills below land while tasks
        // still complete however fast a completion commits.
        const producer = yield* Effect.fork(
          Effect.forEach(
            Array.from({ length: 100 }, (_, i) => i),
            (i) =>
              Effect.zipRight(
                eventuallyEffect(
                  Effect.map(Ref.get(seen), (events) => events.length >= (i - 5) * 10),
                  30_000
                ),
                finish(tasks(10))
              ),
            { concurrency: 1 }
          )
        )
        const killed: Array<number> = []
        for (const threshold of [200, 600]) {
          yield* eventuallyEffect(
            Effect.map(Ref.get(seen), (events) => events.length >= threshold),
            30_000
          )
          const pids = yield* listenerPids(observer, env.listenerName)
          assert.strictEqual(pids.length, 1)
          assert.isTrue((yield* Fiber.poll(producer))._tag === "None", "the kill lands while tasks still complete")
          const rows = yield* query<{ ok: boolean }>(observer, "SELECT pg_terminate_backend($1) AS ok", [pids[0]])
          assert.isTrue(rows[0]!.ok)
          killed.push(pids[0]!)
          // It comes back as a new backend.
          yield* eventuallyEffect(
            Effect.map(
              listenerPids(observer, env.listenerName),
              (now) => now.length === 1 && !killed.includes(now[0]!)
            ),
            15_000
          )
        }
        const produced = (yield* Fiber.join(producer)).flat()
        yield* Fiber.join(consumer).pipe(Effect.timeout("30 seconds"))
        const events = yield* Ref.get(seen)
        assert.strictEqual(events.length, 1000)
        assert.strictEqual(new Set(ids(events)).size, 1000)
        assert.deepStrictEqual(new Set(ids(events)), new Set(produced))
        for (let i = 1; i < events.length; i++) assert.isAbove(events[i]!.sequence, events[i - 1]!.sequence)
        assert.strictEqual(killed[0], firstPid)
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )

  it.scopedLive("while LISTEN keeps dying, subscribers fall back to polling and lose nothing", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      const observer = yield* rawClient()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        const kills = yield* Ref.make(0)
        // Kill every listener backend as soon as it appears.
        yield* query<{ n: number }>(
          observer,
          "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
          [env.listenerName]
        ).pipe(
          Effect.tap((rows) => Ref.update(kills, (n) => n + rows[0]!.n)),
          Effect.zipRight(Effect.sleep("2 millis")),
          Effect.forever,
          Effect.forkScoped
        )
        const produced: Array<string> = []
        const consumer = yield* Effect.fork(take(stream, 200, 60_000))
        for (let i = 0; i < 40; i++) produced.push(...(yield* finish(tasks(5))))
        const events = yield* Fiber.join(consumer)
        assert.deepStrictEqual(new Set(ids(events)), new Set(produced))
        assert.strictEqual(new Set(ids(events)).size, 200)
        for (let i = 1; i < events.length; i++) assert.isAbove(events[i]!.sequence, events[i - 1]!.sequence)
        assert.isAtLeast(yield* Ref.get(kills), 1)
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )

  it.scopedLive("many subscribers (and schemas) share one LISTEN connection; closing the last releases it", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      const other = Storage.layerPg({
        url: Backends.pgUrl(),
        schema: `${env.schema}_b`,
        applicationName: env.applicationName,
        maxConnections: 2
      })
      const observer = yield* rawClient()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        yield* Effect.scoped(
          Effect.gen(function* () {
            const streams = yield* Effect.forEach(Array.from({ length: 12 }), () => completions.subscribe(), {
              concurrency: "unbounded"
            })
            const otherStreams = yield* Effect.provide(
              Effect.flatMap(CompletionBackend, (b) => Effect.forEach([1, 2], () => b.subscribe())),
              layerFor(other)
            )
            assert.strictEqual(otherStreams.length, 2)
            assert.strictEqual((yield* listenerPids(observer, env.listenerName)).length, 1)
            const done = yield* finish(tasks(3))
            for (const stream of streams) assert.deepStrictEqual(new Set(ids(yield* take(stream, 3))), new Set(done))
            assert.strictEqual((yield* listenerPids(observer, env.listenerName)).length, 1)
          })
        )
        // The scope closed: after the idle time, the connection is gone.
        yield* eventuallyEffect(Effect.map(listenerPids(observer, env.listenerName), (pids) => pids.length === 0))
        // A self-contained stream opens it while it runs and releases it when it ends.
        const fiber = yield* Effect.fork(take(completions.stream(), 1))
        yield* eventuallyEffect(Effect.map(listenerPids(observer, env.listenerName), (pids) => pids.length === 1))
        yield* finish(tasks(1))
        assert.strictEqual((yield* Fiber.join(fiber)).length, 1)
        yield* eventuallyEffect(Effect.map(listenerPids(observer, env.listenerName), (pids) => pids.length === 0))
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )

  it.scopedLive("PgListener.payloads carries the task channel's wake-ups (for TaskQueue.wakeups)", () =>
    Effect.gen(function* () {
      const env = isolatedPg()
      yield* Effect.gen(function* () {
        const storage = yield* Storage.Storage
        const queue = yield* TaskQueue
        const events = yield* PgListener.listen(storage.pg!, [tasksChannel(storage.channelPrefix)])
        // `listen` returned: LISTEN is active and the hub subscription exists, so running the stream later misses nothing.
        yield* queue.enqueueRaw([{ name: "x", payload: null, queue: "images" }])
        const [status, event] = yield* events.pipe(Stream.take(2), Stream.runCollect, Effect.timeout("10 seconds"))
        assert.deepStrictEqual(status, { _tag: "Up" })
        assert.deepStrictEqual(event, {
          _tag: "Notification",
          channel: tasksChannel(storage.channelPrefix),
          payload: "images"
        })
        const payloads = yield* Effect.fork(
          PgListener.payloads(storage.pg!, tasksChannel(storage.channelPrefix)).pipe(Stream.take(1), Stream.runCollect)
        )
        // The fork subscribes asynchronously: enqueue until it has seen one.
        yield* eventuallyEffect(
          Effect.zipRight(
            queue.enqueueRaw([{ name: "x", payload: null, queue: "pdf" }]),
            Effect.map(Fiber.poll(payloads), (exit) => exit._tag === "Some")
          )
        )
        const seen = yield* Fiber.join(payloads)
        assert.deepStrictEqual([...seen], ["pdf"])
      }).pipe(Effect.provide(layerFor(env.storage)))
    })
  )
})
