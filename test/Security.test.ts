/**
 * Security properties (docs/reliability.md, "Security"):
 * (a) a subscriber filtered to one namespace never receives another namespace's events — a fast-check property over
 *     random namespaces (SQL-looking, Unicode, look-alikes), random tags and concurrent producers, with a real worker,
 *     on memory, SQLite and Postgres;
 * (b) NOTIFY carries ids only: a raw LISTEN on Baton's channels while tasks, chords and checkpoints with secret
 *     payloads and results complete sees sequence numbers and queue names, never payload or result content;
 * (c) names, tags, queues, namespaces, keys, run ids and payloads that look like SQL round-trip unchanged, and the
 *     tables are intact afterwards.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import pg from "pg"
import * as Baton from "../src/Baton.js"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { CompletionBackend, type CompletionEvent } from "../src/CompletionBackend.js"
import { Storage } from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const Noop = Task.make("sec-noop", {
  payload: Schema.Struct({ i: Schema.Number }),
  success: Schema.Number,
  handler: ({ i }) => Effect.succeed(i)
})

const Secret = Task.make("sec-secret", {
  payload: Schema.Struct({ secret: Schema.String }),
  success: Schema.Struct({ echoed: Schema.String }),
  handler: ({ secret }) => Effect.succeed({ echoed: `result-${secret}` })
})

const SecretSum = Task.make("sec-secret-sum", {
  payload: ChordRegistry.callbackPayload(Secret.success, { secret: Schema.String }),
  success: Schema.String,
  handler: ({ results, secret }) => Effect.succeed(`${secret}:${results.length}`)
})

const Echo = Task.make("sec-echo", {
  payload: Schema.Struct({ text: Schema.String }),
  success: Schema.String,
  handler: ({ text }) => Effect.succeed(text)
})

const sqlish = [
  "'; DROP TABLE baton_tasks; --",
  '"; DROP TABLE baton_completions; --',
  "Robert'); DELETE FROM baton_chords WHERE ('1'='1",
  "1 OR 1=1",
  "$1",
  "%",
  "_",
  "?",
  ":name",
  "\\",
  "\\'",
  "' || pg_sleep(5) || '",
  "*/ SELECT 1 /*",
  "default"
]

/** A namespace: SQL-looking strings, look-alikes of each other, and arbitrary Unicode (no NUL, well-formed). */
const namespaceArb = FastCheck.oneof(
  FastCheck.constantFrom(...sqlish, "a", "A", "a ", " a", "ä", "a\u0301", "😀", "tenant-1", "tenant-10"),
  FastCheck.string({ minLength: 1, maxLength: 20, unit: "grapheme" }).filter((s) => !s.includes("\u0000"))
)

const scenarioArb = FastCheck.record({
  namespaces: FastCheck.uniqueArray(namespaceArb, { minLength: 2, maxLength: 6 }),
  tasks: FastCheck.array(
    FastCheck.record({
      namespace: FastCheck.nat(5),
      tag: FastCheck.constantFrom("red", "blue", "'; --"),
      producer: FastCheck.nat(2)
    }),
    { minLength: 1, maxLength: 30 }
  )
})

const taskCount = (where: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE name = ${where}`.pipe(
      Effect.map((rows) => Number(rows[0]!.n))
    )
  )

for (const backend of Backends.all()) {
  describe(`security [${backend.name}]`, () => {
    it.live(
      "(a) a subscriber filtered to one namespace never receives another's events (fast-check, concurrent producers)",
      () =>
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const queue = yield* TaskQueue
          yield* Worker.run({ tasks: [Noop], concurrency: 8, pollInterval: { min: "1 millis", max: "10 millis" } })
          const runtime = yield* Effect.runtime<CompletionBackend | TaskQueue>()
          let round = 0
          const property = FastCheck.asyncProperty(scenarioArb, (scenario) =>
            Runtime.runPromise(runtime)(
              Effect.scoped(
                Effect.gen(function* () {
                  // Each round has namespaces of its own (a round prefix), so earlier rounds' events never match.
                  const prefix = `r${round++}:`
                  const namespaces = scenario.namespaces.map((namespace) => prefix + namespace)
                  const planned = scenario.tasks.map((task) => ({
                    ...task,
                    namespace: namespaces[task.namespace % namespaces.length]!
                  }))
                  // One subscriber per namespace, one per (namespace, tag) for the first namespace, before producing.
                  const filters: ReadonlyArray<{ readonly namespace: string; readonly tags?: ReadonlyArray<string> }> =
                    [
                      ...namespaces.map((namespace) => ({ namespace })),
                      { namespace: namespaces[0]!, tags: ["red"] },
                      { namespace: namespaces[0]!, tags: ["'; --"] }
                    ]
                  const received = yield* Effect.forEach(filters, (filter) =>
                    Effect.gen(function* () {
                      const stream = yield* completions.subscribe({ filter: { ...filter, kinds: ["task"] } })
                      const seen = yield* Ref.make<ReadonlyArray<CompletionEvent>>([])
                      yield* Effect.forkScoped(
                        Stream.runForEach(stream, (event) => Ref.update(seen, (all) => [...all, event]))
                      )
                      return seen
                    })
                  )
                  // Three producers enqueue concurrently, each its share, in small batches.
                  const produced = yield* Effect.forEach(
                    [0, 1, 2],
                    (producer) =>
                      Effect.forEach(
                        planned.filter((task) => task.producer === producer),
                        (task, i) =>
                          Effect.map(
                            queue.enqueue(Noop, { i }, { namespace: task.namespace, tags: [task.tag] }),
                            (id) => ({ id: id as string, namespace: task.namespace, tag: task.tag })
                          ),
                        { concurrency: 3 }
                      ),
                    { concurrency: "unbounded" }
                  ).pipe(Effect.map((all) => all.flat()))
                  // A sentinel per filter, after everything else: once it arrives, everything before it has.
                  const sentinels = yield* Effect.forEach(filters, (filter) =>
                    Effect.map(
                      queue.enqueue(Noop, { i: -1 }, { namespace: filter.namespace, tags: filter.tags ?? ["red"] }),
                      (id) => ({ id: id as string, namespace: filter.namespace, tag: (filter.tags ?? ["red"])[0]! })
                    )
                  )
                  const everything = [...produced, ...sentinels]
                  for (const [i, filter] of filters.entries()) {
                    const expected = new Set(
                      everything
                        .filter(
                          (task) =>
                            task.namespace === filter.namespace && (filter.tags ?? []).every((tag) => tag === task.tag)
                        )
                        .map((task) => task.id)
                    )
                    yield* Backends.eventually(
                      Effect.map(Ref.get(received[i]!), (events) => events.some((e) => e.taskId === sentinels[i]!.id)),
                      `the sentinel of ${JSON.stringify(filter)}`,
                      60_000
                    )
                    const events = yield* Ref.get(received[i]!)
                    for (const event of events) {
                      assert.strictEqual(event.namespace, filter.namespace, "an event of another namespace leaked")
                      for (const tag of filter.tags ?? []) assert.include(event.tags, tag)
                    }
                    // Nothing missing, nothing foreign, nothing twice (up to the sentinel; later ones may follow).
                    const ids = events.map((event) => event.taskId as string)
                    assert.strictEqual(new Set(ids).size, ids.length, "an event was delivered twice")
                    for (const id of ids) assert.isTrue(expected.has(id), `unexpected event ${id}`)
                    for (const id of expected) {
                      if (sentinels.some((s) => s.id === id) && id !== sentinels[i]!.id) continue
                      assert.isTrue(ids.includes(id), `missing event ${id} for ${JSON.stringify(filter)}`)
                    }
                  }
                })
              )
            )
          )
          yield* Effect.promise(() =>
            FastCheck.assert(property, { numRuns: backend.name === "pg" ? 12 : 20, seed: 0xba70, endOnFailure: true })
          )
        }).pipe(Effect.scoped, Effect.provide(Baton.layerWith(backend.storage()))),
      { timeout: 300_000 }
    )

    it.live(
      "(c) names, tags, queues, namespaces, keys, run ids and payloads that look like SQL round-trip unchanged",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const chords = yield* ChordRegistry.ChordRegistry
          const checkpoints = yield* CheckpointCoordinator
          const sql = yield* SqlClient.SqlClient
          const ids: Array<readonly [string, string]> = []
          for (const text of sqlish) {
            const id = yield* queue.enqueue(
              Echo,
              { text },
              { queue: text, namespace: text, tags: [text, "x"], idempotencyKey: text }
            )
            ids.push([id, text])
          }
          yield* Worker.run({
            tasks: [Echo, Secret, SecretSum],
            queues: [...new Set(sqlish)],
            concurrency: 4,
            pollInterval: { min: "1 millis", max: "10 millis" }
          })
          for (const [id, text] of ids) {
            yield* Backends.eventually(
              Effect.map(queue.get(id), (info) => info.state === "succeeded"),
              `task on queue ${text}`
            )
            const info = yield* queue.get(id)
            assert.strictEqual(info.queue, text)
            assert.strictEqual(info.namespace, text)
            assert.deepStrictEqual(info.tags, [text, "x"])
            assert.strictEqual(info.idempotencyKey, text)
            assert.deepStrictEqual(info.payload, { text })
            assert.strictEqual(Option.getOrThrow(yield* queue.result(Echo, id)), text)
            // The same key in the same namespace is the same task.
            assert.strictEqual(yield* queue.enqueue(Echo, { text }, { namespace: text, idempotencyKey: text }), id)
          }
          // A chord and a checkpoint with SQL-looking namespace, tags, key and run id.
          const evil = sqlish[0]!
          const handle = yield* chords.chord({
            body: [Task.call(Secret, { secret: evil }, { queue: evil })],
            callback: ChordRegistry.callback(SecretSum, { secret: evil }, { queue: evil }),
            namespace: evil,
            tags: [evil],
            idempotencyKey: evil
          })
          const callbackId = yield* handle.await
          const chord = yield* chords.get(handle.chordId)
          assert.strictEqual(chord.namespace, evil)
          assert.deepStrictEqual(chord.tags, [evil])
          assert.strictEqual(chord.idempotencyKey, evil)
          yield* Backends.eventually(
            Effect.map(queue.get(callbackId), (info) => info.state === "succeeded"),
            "chord callback"
          )
          assert.strictEqual(Option.getOrThrow(yield* queue.result(SecretSum, callbackId)), `${evil}:1`)
          const token = yield* checkpoints.createCheckpoint(evil, 3)
          yield* checkpoints.completeCheckpoint(token, { evil })
          assert.deepStrictEqual(yield* checkpoints.awaitCheckpoint(token), { evil })
          assert.strictEqual(Option.getOrThrow(yield* checkpoints.findCheckpoint(evil, 3)).runId, evil)
          // Events filtered by a SQL-looking namespace and tag.
          const completions = yield* CompletionBackend
          const events = yield* completions
            .subscribe({ fromSequence: 0, filter: { namespace: sqlish[1]!, tags: [sqlish[1]!] } })
            .pipe(
              Effect.flatMap((stream) => Stream.runCollect(Stream.take(stream, 1))),
              Effect.map(Chunk.toReadonlyArray)
            )
          assert.strictEqual(events[0]!.namespace, sqlish[1])
          // Every table is still there, with what was written.
          assert.strictEqual(yield* taskCount("sec-echo"), sqlish.length)
          const chordRows = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords`
          assert.strictEqual(Number(chordRows[0]!.n), 1)
        }).pipe(Effect.scoped, Effect.provide(Baton.layerWith(backend.storage())))
    )
  })
}

describe.runIf(Backends.pgAvailable())("security [pg]: NOTIFY carries ids only", () => {
  it.live("(b) a raw LISTEN on Baton's channels sees sequence numbers and queue names, never payloads or results", () =>
    Effect.gen(function* () {
      const storage = yield* Storage
      const queue = yield* TaskQueue
      const chords = yield* ChordRegistry.ChordRegistry
      const checkpoints = yield* CheckpointCoordinator
      const channels = [`${storage.channelPrefix}_completions`, `${storage.channelPrefix}_tasks`]
      const notifications: Array<{ channel: string; payload: string }> = []
      const listener = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new pg.Client({ connectionString: Backends.pgUrl(), application_name: "baton-test-sniffer" })
          await client.connect()
          client.on("notification", (message) =>
            notifications.push({ channel: message.channel, payload: message.payload ?? "" })
          )
          // Every channel of this schema, plus a wildcard check below on what arrives.
          for (const channel of channels) await client.query(`LISTEN "${channel}"`)
          return client
        }),
        (client) => Effect.promise(() => client.end().catch(() => undefined))
      )
      void listener
      const secret = `SECRET-${crypto.randomUUID()}`
      const queueName = "sec-queue"
      yield* Worker.run({
        tasks: [Secret, SecretSum],
        queues: [queueName],
        concurrency: 4,
        pollInterval: { min: "1 millis", max: "10 millis" }
      })
      const ids = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => i),
        (i) => queue.enqueue(Secret, { secret: `${secret}-${i}` }, { queue: queueName, tags: ["t"] })
      )
      const handle = yield* chords.chord({
        body: [0, 1, 2].map((i) => Task.call(Secret, { secret: `${secret}-chord-${i}` }, { queue: queueName })),
        callback: ChordRegistry.callback(SecretSum, { secret }, { queue: queueName })
      })
      const callbackId = yield* handle.await
      const token = yield* checkpoints.createCheckpoint("sec-run", 0)
      yield* checkpoints.completeCheckpoint(token, { secret })
      for (const id of [...ids, callbackId]) {
        yield* Backends.eventually(
          Effect.map(queue.get(id), (info) => info.state === "succeeded"),
          `task ${id}`
        )
      }
      // The results really hold the secret (so its absence from the notifications means something).
      const info = yield* queue.get(ids[0]!)
      assert.include(JSON.stringify(Option.getOrThrow(info.result)), secret)
      yield* Backends.eventually(
        Effect.sync(() => notifications.filter((n) => n.channel === channels[0]).length >= 5),
        "completion notifications"
      )
      assert.isAbove(notifications.length, 0)
      for (const notification of notifications) {
        assert.notInclude(notification.payload, "SECRET")
        assert.notInclude(notification.payload, "result-")
        if (notification.channel === channels[0]) assert.match(notification.payload, /^\d+$/)
        else assert.strictEqual(notification.payload, queueName)
      }
      assert.isTrue(
        notifications.some((n) => n.channel === channels[1]),
        "a tasks-channel wake-up was seen"
      )
    }).pipe(Effect.scoped, Effect.provide(Baton.layerWith(Backends.postgres.storage())))
  )
})
