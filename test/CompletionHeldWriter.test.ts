/**
 * Postgres: the completion stream never waits on someone else's open transaction (issue 16, parts 1 and 3), stays
 * exactly-once within a run and exact across resumes, and what stands on it (durable checkpoint awaits, chord awaits)
 * completes while an unrelated writer sits idle in transaction.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import pg from "pg"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import { ChordRegistry } from "../src/ChordRegistry.js"
import * as ChordRegistryModule from "../src/ChordRegistry.js"
import { CompletionBackend, type CompletionEvent } from "../src/CompletionBackend.js"
import { completionsChannel } from "../src/internal/sql/wakes.js"
import * as SqlCheckpointCoordinator from "../src/SqlCheckpointCoordinator.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Schema from "effect/Schema"
import * as Backends from "./support/backends.js"
import { query, rawClient } from "./support/pgRaw.js"
import { eventuallyEffect, finish, layerFor, prng, tasks } from "./suites/CompletionBackendSuite.js"

let counter = 0
const freshSchema = () => `bt_hw_${process.pid}_${Date.now().toString(36)}_${counter++}`
const storageFor = (schema: string, maxConnections = 4) =>
  Storage.layerPg({ url: Backends.pgUrl(), schema, maxConnections })

/** A log row the way a completing transaction writes it (row + NOTIFY), in the client's current transaction. */
const appendRaw = (client: pg.Client, schema: string, taskId: string) =>
  query<{ seq: number }>(
    client,
    `WITH ins AS (
       INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, at)
       VALUES ('task', $1, 'raw', 'default', 'default', '[]', 'succeeded', $2) RETURNING seq
     ) SELECT seq::int AS seq, pg_notify($3, seq::text) FROM ins`,
    [taskId, Date.now(), completionsChannel(`baton_${schema}`)]
  )

/** An unrelated writer: another schema's table, `BEGIN; INSERT …`, then idle in transaction until released. */
const idleWriter = Effect.gen(function* () {
  const other = `${freshSchema()}_other`
  const client = yield* rawClient()
  yield* query(client, `CREATE SCHEMA ${other}`)
  yield* query(client, `CREATE TABLE ${other}.some_other_table (x int)`)
  yield* query(client, "BEGIN")
  yield* query(client, `INSERT INTO ${other}.some_other_table VALUES (1)`)
  yield* Effect.addFinalizer(() =>
    query(client, "ROLLBACK").pipe(Effect.zipRight(query(client, `DROP SCHEMA ${other} CASCADE`)), Effect.ignore)
  )
  return client
})

const ids = (events: ReadonlyArray<CompletionEvent>) => events.map((event) => event.taskId as string)

describe.runIf(Backends.pgAvailable())("completion stream with open transactions (pg)", () => {
  it.scopedLive("an unrelated writer idle in transaction does not hold events back; a Baton writer's on commit", () =>
    Effect.gen(function* () {
      const schema = freshSchema()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe()
        const seen = yield* Ref.make<ReadonlyArray<CompletionEvent>>([])
        yield* stream.pipe(
          Stream.runForEach((event) => Ref.update(seen, (events) => [...events, event])),
          Effect.forkScoped
        )
        const unrelated = yield* idleWriter
        const first = yield* finish(tasks(3))
        // Delivered while the unrelated writer is still open (it commits only at the end of this test).
        yield* eventuallyEffect(
          Effect.map(Ref.get(seen), (events) => events.length === 3),
          10_000
        )
        assert.deepStrictEqual(new Set(ids(yield* Ref.get(seen))), new Set(first))
        // A writer that also writes Baton's log: its event waits for its commit, nobody else's does.
        const writer = yield* rawClient(schema)
        yield* query(writer, "BEGIN")
        yield* appendRaw(writer, schema, "held-writer")
        const second = yield* finish(tasks(2))
        yield* eventuallyEffect(
          Effect.map(Ref.get(seen), (events) => events.length === 5),
          10_000
        )
        assert.deepStrictEqual(new Set(ids((yield* Ref.get(seen)).slice(3))), new Set(second))
        yield* query(writer, "COMMIT")
        yield* eventuallyEffect(
          Effect.map(Ref.get(seen), (events) => events.length === 6),
          10_000
        )
        const all = yield* Ref.get(seen)
        assert.strictEqual(all[5]!.taskId, "held-writer")
        assert.strictEqual(new Set(all.map((event) => event.cursor)).size, 6)
        // Every cursor taken while the unrelated writer was open resumes exactly.
        for (let i = 0; i < all.length; i++) {
          const rest = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ after: all[i]!.cursor }), (s) =>
              // (xid, seq) order on a resume: the held writer's row (older transaction) may come before others.
              s.pipe(Stream.take(all.length - i - 1), Stream.runCollect)
            )
          ).pipe(Effect.timeout("20 seconds"))
          const restIds = Array.from(rest, (event) => event.taskId as string)
          assert.strictEqual(new Set(restIds).size, restIds.length)
          assert.deepStrictEqual(new Set(restIds), new Set(ids(all.slice(i + 1))), `resume after event ${i}`)
        }
        yield* query(unrelated, "COMMIT")
      }).pipe(Effect.provide(layerFor(storageFor(schema))))
    })
  )

  it.scopedLive("randomized: concurrent writers committing out of order, subscribers resumed from random cursors", () =>
    Effect.gen(function* () {
      const seed = process.env.BATON_SEED !== undefined ? Number(process.env.BATON_SEED) : Date.now() % 1_000_000
      console.log(`CompletionHeldWriter randomized test: BATON_SEED=${seed}`)
      const random = prng(seed)
      const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)]!
      const schema = freshSchema()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        yield* idleWriter // held for the whole test
        // Writers: each has at most one open transaction holding the ids it appended.
        const writers = yield* Effect.forEach(Array.from({ length: 4 }), () => rawClient(schema))
        const open = new Map<number, Array<string>>()
        // commitStep[id]: the step at which the row committed.
        const commitStep = new Map<string, number>()
        interface Sub {
          readonly name: string
          readonly received: Array<CompletionEvent>
          /** Whether a row committed at `step` belongs to what this subscriber must receive. */
          readonly expects: (id: string) => boolean
        }
        const subs: Array<Sub> = []
        let nextId = 0
        const startSub = (
          name: string,
          options: Parameters<(typeof completions)["subscribe"]>[0],
          expects: Sub["expects"]
        ) =>
          Effect.gen(function* () {
            const sub: Sub = { name, received: [], expects }
            const stream = yield* completions.subscribe({ ...options, batchSize: pick([2, 3, 1000]) })
            yield* stream.pipe(
              Stream.runForEach((event) => Effect.sync(() => sub.received.push(event))),
              Effect.forkScoped
            )
            subs.push(sub)
          })

        for (let step = 0; step < 80; step++) {
          const roll = random()
          if (roll < 0.5) {
            const w = Math.floor(random() * writers.length)
            const client = writers[w]!
            if (!open.has(w)) {
              yield* query(client, "BEGIN")
              open.set(w, [])
            }
            const n = 1 + Math.floor(random() * 3)
            for (let k = 0; k < n; k++) {
              const id = `r${nextId++}`
              yield* appendRaw(client, schema, id)
              open.get(w)!.push(id)
            }
          } else if (roll < 0.8 && open.size > 0) {
            const w = pick([...open.keys()])
            const rows = open.get(w)!
            open.delete(w)
            if (random() < 0.2) yield* query(writers[w]!, "ROLLBACK")
            else {
              yield* query(writers[w]!, "COMMIT")
              for (const id of rows) commitStep.set(id, step)
            }
          } else {
            const at = step
            const withEvents = subs.filter((sub) => sub.received.length > 0)
            const kind = random()
            if (kind < 0.4 || subs.length === 0) {
              // Live: what commits after it started.
              yield* startSub(`live@${at}`, {}, (id) => (commitStep.get(id) ?? -1) > at)
            } else if (kind < 0.55) {
              yield* startSub(`replay@${at}`, { fromSequence: 0 }, (id) => commitStep.has(id))
            } else if (withEvents.length > 0) {
              // Resume from a random event another subscriber received: exactly the rest of that subscriber's events.
              const from = pick(withEvents)
              const j = Math.floor(random() * from.received.length)
              const before = new Set(ids(from.received.slice(0, j + 1)))
              yield* startSub(
                `${from.name}>${j}`,
                { after: from.received[j]!.cursor },
                (id) => from.expects(id) && !before.has(id)
              )
            }
          }
          if (random() < 0.3) yield* Effect.sleep("2 millis") // let subscribers read in between, sometimes
        }
        for (const [w, rows] of open) {
          yield* query(writers[w]!, "COMMIT")
          for (const id of rows) commitStep.set(id, 1000)
        }
        // A sentinel committed last: once every subscriber has it, anything extra would already have shown.
        yield* query(writers[0]!, "BEGIN")
        yield* appendRaw(writers[0]!, schema, "sentinel")
        yield* query(writers[0]!, "COMMIT")
        commitStep.set("sentinel", 1001)
        yield* eventuallyEffect(
          Effect.sync(() => subs.every((sub) => sub.received.some((event) => event.taskId === "sentinel"))),
          20_000
        )
        const committed = [...commitStep.keys()]
        for (const sub of subs) {
          const got = ids(sub.received)
          assert.strictEqual(new Set(got).size, got.length, `${sub.name}: duplicate events (seed ${seed})`)
          const expected = committed.filter(sub.expects).sort()
          assert.deepStrictEqual([...got].sort(), expected, `${sub.name}: received vs committed (seed ${seed})`)
        }
        assert.isAbove(subs.length, 3)
      }).pipe(Effect.provide(layerFor(storageFor(schema, 10))))
    })
  )

  const Body = Task.make("hw-body", {
    payload: Schema.Struct({}),
    success: Schema.Number,
    handler: () => Effect.succeed(1)
  })
  const Callback = Task.make("hw-callback", {
    payload: ChordRegistryModule.callbackPayload(Schema.Number),
    success: Schema.Number,
    handler: () => Effect.succeed(1)
  })

  it.scopedLive("a durable awaitCheckpoint and a chord await in another stack complete while a writer sits idle", () =>
    Effect.gen(function* () {
      const schema = freshSchema()
      // Two independent stacks (pools, coordinators, subscriptions) on one schema, as two processes would have. The
      // awaiting side re-reads rows only every minute: only the completion stream can wake it in time.
      const completer = Layer.mergeAll(
        SqlCheckpointCoordinator.layer,
        SqlChordRegistry.layerWith({ reconcileInterval: 0 })
      ).pipe(Layer.provideMerge(layerFor(storageFor(schema))))
      const awaiter = Layer.mergeAll(
        SqlCheckpointCoordinator.layerWith({ pollMax: "60 seconds" }),
        SqlChordRegistry.layerWith({ reconcileInterval: 0, pollInterval: { max: "60 seconds" } })
      ).pipe(Layer.provideMerge(layerFor(storageFor(schema))))
      const a = yield* Layer.build(completer)
      const b = yield* Layer.build(awaiter)
      const inA = <X, E>(effect: Effect.Effect<X, E, CheckpointCoordinator | ChordRegistry | TaskQueue>) =>
        Effect.provide(effect, a)
      const inB = <X, E>(effect: Effect.Effect<X, E, CheckpointCoordinator | ChordRegistry | TaskQueue>) =>
        Effect.provide(effect, b)
      const unrelated = yield* idleWriter

      const token = yield* inA(Effect.flatMap(CheckpointCoordinator, (c) => c.createCheckpoint("hw-run", 0)))
      const name = `hwq${counter++}`
      const chordId = yield* inA(
        Effect.flatMap(ChordRegistry, (registry) =>
          registry.chord({
            body: [Task.call(Body, {}, { queue: name })],
            callback: ChordRegistryModule.callback(Callback, {}, { queue: name })
          })
        ).pipe(Effect.map((handle) => handle.chordId))
      )
      const checkpointAwait = yield* inB(
        Effect.flatMap(CheckpointCoordinator, (c) => c.awaitCheckpoint(token, { timeout: "30 seconds" }))
      ).pipe(Effect.fork)
      const chordAwait = yield* inB(Effect.flatMap(ChordRegistry, (registry) => registry.await(chordId))).pipe(
        Effect.fork
      )
      yield* Effect.sleep("200 millis") // both awaits are subscribed and waiting (they would also pass without this)
      yield* inA(Effect.flatMap(CheckpointCoordinator, (c) => c.completeCheckpoint(token, { ok: 1 })))
      yield* inA(
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const [body] = yield* queue.claim({ queues: [name], limit: 1, leaseMs: 60_000, workerId: "hw" })
          assert.isTrue((yield* queue.complete([{ id: body!.id, leaseId: body!.leaseId, result: 1 }]))[0])
        })
      )
      // Both complete well within the minute of their safety re-read, with the unrelated writer still open.
      assert.deepStrictEqual(yield* Fiber.join(checkpointAwait).pipe(Effect.timeout("20 seconds")), { ok: 1 })
      assert.isString(yield* Fiber.join(chordAwait).pipe(Effect.timeout("20 seconds")))
      yield* query(unrelated, "COMMIT")
    })
  )
})

describe.runIf(Backends.pgAvailable())("completion cursors (pg)", () => {
  it.scopedLive("old-format cursors resume; malformed snapshots in a cursor fail with InvalidCursor", () =>
    Effect.gen(function* () {
      const schema = freshSchema()
      yield* Effect.gen(function* () {
        const completions = yield* CompletionBackend
        const stream = yield* completions.subscribe({ fromSequence: 0 })
        const first = yield* finish(tasks(2))
        const events = yield* stream.pipe(Stream.take(2), Stream.runCollect, Effect.timeout("20 seconds"))
        const [a, b] = Array.from(events)
        assert.deepStrictEqual(new Set([a!.taskId as string, b!.taskId as string]), new Set(first))
        // `p.<xid>.<seq>` (the only form before snapshots were added) of the first event: resumes at the second.
        const sql = yield* SqlClient.SqlClient
        const [row] = yield* sql<{ xid: string; seq: number }>`SELECT xid::text AS xid, seq::int AS seq
          FROM baton_completions WHERE seq = ${a!.sequence}`
        const resumed = yield* Effect.scoped(
          Effect.flatMap(completions.subscribe({ after: `p.${row!.xid}.${row!.seq}` }), (s) =>
            s.pipe(Stream.take(1), Stream.runCollect)
          )
        ).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(
          Array.from(resumed, (event) => event.taskId),
          [b!.taskId]
        )
        for (const bad of [
          "p.10.1.9:5:",
          "p.10.1.5:9:9",
          "p.10.1.5:9:7,6",
          "p.10.1..5:9:.4.1",
          "p.10.1.5:9",
          "p.10.1.x"
        ]) {
          const result = yield* Effect.either(Effect.scoped(completions.subscribe({ after: bad })))
          assert.isTrue(result._tag === "Left" && result.left._tag === "InvalidCursor", bad)
        }
      }).pipe(Effect.provide(layerFor(storageFor(schema))))
    })
  )
})
