/**
 * CompletionBackend conformance suite: the same delivery, filter, resume and retention behaviour on every backend.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as ChordRegistry from "../../src/ChordRegistry.js"
import {
  CompletionBackend,
  type CompletionEvent,
  type CompletionFilter,
  type SubscribeOptions
} from "../../src/CompletionBackend.js"
import * as SqlChordRegistry from "../../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../../src/SqlTaskQueue.js"
import * as Storage from "../../src/Storage.js"
import * as Task from "../../src/Task.js"
import { type RawEnqueue, TaskQueue } from "../../src/TaskQueue.js"
import { type Backend, type BackendDescriptor, sharedStorage } from "../support/backends.js"
import { spawnFixture } from "../support/process.js"

/** Backend + task queue on one fresh storage. */
export const layerFor = (storage: ReturnType<Backend["storage"]>, options: SqlCompletionBackend.Options = {}) =>
  Layer.mergeAll(SqlCompletionBackend.layerWith(options), SqlTaskQueue.layer).pipe(Layer.provideMerge(storage))

export type Outcome = "succeeded" | "failed" | "dead" | "cancelled"

let queueCounter = 0

/**
 * Enqueues the requests and brings them to `outcome` in ONE transaction (cancel: one per task). Returns the ids.
 * Each call uses its own queue, so it claims exactly what it enqueued.
 */
export const finish = (requests: ReadonlyArray<Omit<RawEnqueue, "queue">>, outcome: Outcome = "succeeded") =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    const name = `q${queueCounter++}`
    const ids: ReadonlyArray<string> = yield* queue.enqueueRaw(requests.map((request) => ({ ...request, queue: name })))
    if (outcome === "cancelled") {
      for (const id of ids) yield* queue.cancel(id)
      return ids
    }
    const claimed = yield* queue.claim({ queues: [name], limit: ids.length, leaseMs: 60_000, workerId: "suite" })
    assert.strictEqual(claimed.length, ids.length)
    if (outcome === "succeeded") {
      const done = yield* queue.complete(claimed.map((task) => ({ id: task.id, leaseId: task.leaseId, result: 1 })))
      assert.isTrue(done.every((ok) => ok))
    } else {
      for (const task of claimed) {
        const error = { kind: "failure" as const, message: "boom", attempt: 1 }
        assert.isTrue(yield* queue.fail(task.id, task.leaseId, error, { _tag: outcome === "dead" ? "Dead" : "Failed" }))
      }
    }
    return ids
  })

export const tasks = (n: number, options: Omit<RawEnqueue, "queue" | "payload" | "name"> & { name?: string } = {}) =>
  Array.from({ length: n }, (_, i) => ({ name: "job", payload: { i }, ...options }))

const SentinelBody = Task.make("sentinel-body", {
  payload: Schema.Struct({}),
  success: Schema.Number,
  handler: () => Effect.succeed(1)
})
const SentinelCallback = Task.make("sentinel-callback", {
  payload: ChordRegistry.callbackPayload(Schema.Number),
  success: Schema.Number,
  handler: () => Effect.succeed(1)
})

/**
 * Writes one `chord.completed` event: a chord of one body on its own queue, claimed and completed here (no worker);
 * the completion that counts the body dispatches the callback. Returns the chord's id.
 */
export const completeOneChord = Effect.gen(function* () {
  const registry = yield* ChordRegistry.ChordRegistry
  const queue = yield* TaskQueue
  const name = `q${queueCounter++}`
  const handle = yield* registry.chord({
    body: [Task.call(SentinelBody, {}, { queue: name })],
    callback: ChordRegistry.callback(SentinelCallback, {}, { queue: name })
  })
  const [body] = yield* queue.claim({ queues: [name], limit: 1, leaseMs: 60_000, workerId: "suite" })
  assert.isTrue((yield* queue.complete([{ id: body!.id, leaseId: body!.leaseId, result: 1 }]))[0])
  yield* handle.await
  return handle.chordId
}).pipe(Effect.provide(SqlChordRegistry.layerWith({ reconcileInterval: 0 })))

/** Takes exactly `n` events (failing after `timeoutMs` instead of hanging). */
export const take = (stream: Stream.Stream<CompletionEvent, unknown>, n: number, timeoutMs = 60_000) =>
  stream.pipe(
    Stream.take(n),
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray),
    Effect.timeoutFail({
      duration: timeoutMs,
      onTimeout: () => new Error(`timed out waiting for ${n} completion events`)
    })
  )

/** The whole log in delivery order, through a fresh subscription replaying from sequence 0. */
export const replayAll = (n: number, filter?: CompletionFilter) =>
  Effect.flatMap(CompletionBackend, (backend) =>
    Effect.scoped(Effect.flatMap(backend.subscribe({ fromSequence: 0, filter }), (stream) => take(stream, n)))
  )

/**
 * The error an effect fails with; a plain Error if it succeeds. (Not `Effect.flip`: a success turned into a failure
 * would carry a stream or events into vitest's error printer, which can take minutes on Effect objects.)
 */
export const failureOf = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<E, Error, R> =>
  Effect.either(effect).pipe(
    Effect.flatMap(
      Either.match({
        onLeft: (error) => Effect.succeed(error),
        onRight: () => Effect.fail(new Error("expected a failure, but the effect succeeded"))
      })
    )
  )

/**
 * Postgres delivers (and prunes) only rows below the oldest open writing transaction of the database; other test
 * files may hold one open for a while. Waits until no such transaction older than the log's newest row is left
 * (no-op on SQLite).
 */
export const settled = Effect.gen(function* () {
  const storage = yield* Storage.Storage
  if (storage.dialect !== "pg") return
  const sql = yield* SqlClient.SqlClient
  yield* eventuallyEffect(
    Effect.map(
      sql<{ ok: boolean }>`SELECT NOT EXISTS (
          SELECT 1 FROM pg_stat_activity a
          WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
            AND a.backend_xid::text::bigint
              <= (SELECT max(xid)::text::bigint % 4294967296 FROM baton_completions)
        ) AS ok`,
      (rows) => rows[0]?.ok === true
    ),
    60_000
  )
})

/** Seeded PRNG (mulberry32): the "property" tests are reproducible. */
export const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const ids = (events: ReadonlyArray<CompletionEvent>): ReadonlyArray<string> =>
  events.map((event) => event.taskId as string)

const assertNoDuplicates = (events: ReadonlyArray<CompletionEvent>) =>
  assert.strictEqual(new Set(events.map((event) => event.cursor)).size, events.length, "duplicate events")

const withBackend = <A, E, R>(backend: Backend, body: Effect.Effect<A, E, R>, options?: SqlCompletionBackend.Options) =>
  Effect.provide(body, layerFor(backend.storage(), options))

/** Runs the conformance suite against one backend. */
export const completionBackendSuite = (backend: Backend) =>
  describe(`CompletionBackend (${backend.name})`, () => {
    it.scopedLive("delivers every terminal state once, in log order, with the event's fields", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const stream = yield* completions.subscribe()
          const succeeded = yield* finish(
            tasks(3, { name: "resize", namespace: "acme", tags: ["img", "hot"], chordId: "ch1", runId: "run1" })
          )
          const failed = yield* finish(tasks(1, { name: "parse" }), "failed")
          const dead = yield* finish(tasks(1, { name: "parse" }), "dead")
          const cancelled = yield* finish(tasks(1, { name: "parse" }), "cancelled")
          const events = yield* take(stream, 6)
          assert.deepStrictEqual(new Set(ids(events.slice(0, 3))), new Set(succeeded))
          assert.deepStrictEqual(ids(events.slice(3)), [...failed, ...dead, ...cancelled])
          assert.deepStrictEqual(
            events.map((event) => event.outcome),
            ["succeeded", "succeeded", "succeeded", "failed", "dead", "cancelled"]
          )
          // Sequential transactions: log order is commit order, and sequences increase.
          for (let i = 1; i < events.length; i++) assert.isAbove(events[i]!.sequence, events[i - 1]!.sequence)
          assertNoDuplicates(events)
          const first = events[0]!
          assert.strictEqual(first.kind, "task")
          assert.strictEqual(first.taskName, "resize")
          assert.strictEqual(first.namespace, "acme")
          assert.deepStrictEqual(first.tags, ["img", "hot"])
          assert.strictEqual(first.chordId, "ch1")
          assert.strictEqual(first.runId, "run1")
          assert.match(first.queue ?? "", /^q\d+$/)
          assert.instanceOf(first.at, Date)
          assert.isBelow(Math.abs(first.at.getTime() - Date.now()), 60_000)
          assert.strictEqual(events[3]!.namespace, "default")
          assert.strictEqual(events[3]!.chordId, undefined)
          assert.deepStrictEqual(events[3]!.tags, [])
        })
      )
    )

    it.scopedLive("a live subscription sees what commits after subscribe returned, and nothing from before", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const before = yield* finish(tasks(5))
          const stream = yield* completions.subscribe()
          const after = yield* finish(tasks(2))
          const events = yield* take(stream, 2)
          assert.deepStrictEqual(new Set(ids(events)), new Set(after))
          assert.isFalse(ids(events).some((id) => before.includes(id)))
        })
      )
    )

    it.scopedLive("namespace filters never leak another namespace's events (seeded property test)", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const random = prng(0xba70)
          const namespaces = Array.from({ length: 24 }, (_, i) => `tenant-${i}`)
          const tagPool = ["a", "b", "c", "d"]
          const watched = namespaces.slice(0, 8)
          const filters: Array<CompletionFilter> = [
            ...watched.map((namespace) => ({ namespace })),
            { namespace: "tenant-1", tags: ["a"] },
            { namespace: "tenant-2", tags: ["a", "b"] },
            { tags: ["c", "d"] },
            { namespace: "tenant-3", taskName: "t1" }
          ]
          const streams = yield* Effect.forEach(filters, (filter) => completions.subscribe({ filter }))
          const produced: Array<{ id: string; namespace: string; tags: ReadonlyArray<string>; name: string }> = []
          for (let round = 0; round < 40; round++) {
            const batch = Array.from({ length: 1 + Math.floor(random() * 12) }, () => ({
              name: random() < 0.5 ? "t1" : "t2",
              payload: null,
              namespace: namespaces[Math.floor(random() * namespaces.length)]!,
              tags: tagPool.filter(() => random() < 0.4)
            }))
            const batchIds = yield* finish(batch)
            batch.forEach((request, i) =>
              produced.push({ id: batchIds[i]!, namespace: request.namespace, tags: request.tags, name: request.name })
            )
          }
          const matches = (filter: CompletionFilter, row: (typeof produced)[number]) =>
            (filter.namespace === undefined || row.namespace === filter.namespace) &&
            (filter.taskName === undefined || row.name === filter.taskName) &&
            (filter.tags ?? []).every((tag) => row.tags.includes(tag))
          for (const [i, filter] of filters.entries()) {
            const expected = produced.filter((row) => matches(filter, row)).map((row) => row.id)
            assert.isAbove(expected.length, 0, `filter ${JSON.stringify(filter)} matches something`)
            // Live: exactly the expected events, then (after a sentinel that matches) nothing else slipped in.
            const request = {
              name: filter.taskName ?? "t1",
              payload: null,
              namespace: filter.namespace ?? "tenant-0",
              tags: filter.tags ?? []
            }
            const sentinel = yield* finish([request])
            // Later filters may match this sentinel too.
            produced.push({ id: sentinel[0]!, namespace: request.namespace, tags: request.tags, name: request.name })
            const live = yield* take(streams[i]!, expected.length + 1)
            assert.deepStrictEqual(new Set(ids(live.slice(0, -1))), new Set(expected), JSON.stringify(filter))
            assert.deepStrictEqual(ids(live.slice(-1)), sentinel)
            for (const event of live) {
              if (filter.namespace !== undefined) assert.strictEqual(event.namespace, filter.namespace)
              for (const tag of filter.tags ?? []) assert.include(event.tags, tag)
            }
            // Replay applies the same filter.
            const replayed = yield* replayAll(expected.length + 1, filter)
            assert.deepStrictEqual(ids(replayed), ids(live))
          }
        })
      )
    )

    it.scopedLive("tags (all must match), task name and kinds filters", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const both = yield* completions.subscribe({ filter: { tags: ["x", "y"] } })
          const byName = yield* completions.subscribe({ filter: { taskName: "special" } })
          const chordKinds = yield* completions.subscribe({ filter: { kinds: ["chord.completed"] } })
          const taskKinds = yield* completions.subscribe({ filter: { kinds: ["task"], tags: [] } })
          yield* finish(tasks(1, { tags: ["x"] }))
          const xy = yield* finish(tasks(1, { tags: ["y", "z", "x"] }))
          yield* finish(tasks(1, { tags: ["y"] }))
          const special = yield* finish(tasks(1, { name: "special", tags: ["x", "y", "w"] }))
          const all = yield* take(taskKinds, 4)
          assert.strictEqual(all.length, 4)
          assert.deepStrictEqual(ids(yield* take(both, 2)), [...xy, ...special])
          assert.deepStrictEqual(ids(yield* take(byName, 1)), special)
          // The kinds filter delivers none of the task events: the first event it delivers is a chord's completion,
          // written after all of them (a positive signal that the subscription got past them, not a fixed wait).
          const chordId = yield* completeOneChord
          const [first] = yield* take(chordKinds, 1)
          assert.strictEqual(first!.kind, "chord.completed")
          assert.strictEqual(first!.chordId, chordId)
        })
      )
    )

    it.scopedLive("a filter the backend cannot apply fails with FilterUnsupported, never unfiltered", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const refuse = (filter: unknown) =>
            failureOf(Effect.scoped(completions.subscribe({ filter: filter as CompletionFilter })))
          const unknownField = yield* refuse({ namespace: "acme", payload: { customer: 1 } })
          assert.strictEqual(unknownField._tag, "FilterUnsupported")
          assert.strictEqual(unknownField._tag === "FilterUnsupported" && unknownField.field, "payload")
          const pattern = yield* refuse({ namespace: /^tenant-/ })
          assert.strictEqual(pattern._tag === "FilterUnsupported" && pattern.field, "namespace")
          const emptyKinds = yield* refuse({ kinds: [] })
          assert.strictEqual(emptyKinds._tag === "FilterUnsupported" && emptyKinds.field, "kinds")
          const unknownKind = yield* refuse({ kinds: ["task.started"] })
          assert.strictEqual(unknownKind._tag === "FilterUnsupported" && unknownKind.field, "kinds")
          const badTags = yield* refuse({ tags: "x" })
          assert.strictEqual(badTags._tag === "FilterUnsupported" && badTags.field, "tags")
          const fromStream = yield* failureOf(
            Stream.runCollect(completions.stream({ filter: { queue: "q" } as CompletionFilter }))
          )
          assert.strictEqual(fromStream._tag, "FilterUnsupported")
        })
      )
    )

    it.scopedLive("resuming by cursor has no gap and no duplicate at the seam, under concurrent completions", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const random = prng(7)
          const total = 300
          const producer = yield* Effect.fork(
            Effect.forEach(Array.from({ length: total / 5 }), () => finish(tasks(5)), { discard: true })
          )
          const received: Array<CompletionEvent> = []
          let options: SubscribeOptions = { fromSequence: 0 }
          while (received.length < total) {
            const k = Math.min(total - received.length, 1 + Math.floor(random() * 40))
            const part = yield* Effect.scoped(Effect.flatMap(completions.subscribe(options), (s) => take(s, k)))
            received.push(...part)
            options = { after: part[part.length - 1]!.cursor }
          }
          yield* Fiber.join(producer)
          assertNoDuplicates(received)
          const reference = yield* replayAll(total)
          assert.deepStrictEqual(ids(received), ids(reference))
          assert.strictEqual(new Set(ids(received)).size, total)
        })
      )
    )

    it.scopedLive("fromSequence replays from that sequence, then continues live without a seam", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          for (let i = 0; i < 10; i++) yield* finish(tasks(1))
          // Cursors taken while another test's transaction is open keep a position below it, and are judged
          // conservatively once it has ended (docs/completion-backend.md, The cost): take them after it.
          yield* settled
          const log = yield* replayAll(10)
          const from = log[3]!.sequence
          const stream = yield* completions.subscribe({ fromSequence: from })
          const more = yield* Effect.fork(Effect.forEach([1, 2, 3], () => finish(tasks(1))))
          const events = yield* take(stream, 10)
          const added = (yield* Fiber.join(more)).flat()
          assert.deepStrictEqual(ids(events), [...ids(log.slice(3)), ...added])
          assertNoDuplicates(events)
        })
      )
    )

    it.scopedLive("malformed or contradictory resume points fail with InvalidCursor", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          yield* finish(tasks(1))
          const [event] = yield* replayAll(1)
          const refuse = (options: SubscribeOptions) => failureOf(Effect.scoped(completions.subscribe(options)))
          assert.strictEqual((yield* refuse({ after: "garbage" }))._tag, "InvalidCursor")
          const foreign = backend.name === "pg" ? "s.1" : "p.1.1"
          assert.strictEqual((yield* refuse({ after: foreign }))._tag, "InvalidCursor")
          assert.strictEqual((yield* refuse({ after: event!.cursor, fromSequence: 1 }))._tag, "InvalidCursor")
          assert.strictEqual((yield* refuse({ fromSequence: -1 }))._tag, "InvalidCursor")
        })
      )
    )

    it.scopedLive("retention by row count: resume points before the watermark fail with CursorExpired", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          for (let i = 0; i < 10; i++) yield* finish(tasks(1))
          // Cursors taken while another test's transaction is open keep a position below it, and are judged
          // conservatively once it has ended (docs/completion-backend.md, The cost): take them after it.
          yield* settled
          const log = yield* replayAll(10)
          yield* settled
          const pruned = yield* completions.prune
          assert.strictEqual(pruned, 6)
          assert.strictEqual(yield* completions.prune, 0)
          const refuse = (options: SubscribeOptions) => failureOf(Effect.scoped(completions.subscribe(options)))
          const expired = yield* refuse({ after: log[4]!.cursor })
          assert.strictEqual(expired._tag, "CursorExpired")
          assert.strictEqual((yield* refuse({ fromSequence: 0 }))._tag, "CursorExpired")
          assert.strictEqual((yield* refuse({ fromSequence: log[5]!.sequence }))._tag, "CursorExpired")
          // Right at the watermark (the newest pruned event): nothing after it is lost.
          const resumed = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ after: log[5]!.cursor }), (s) => take(s, 4))
          )
          assert.deepStrictEqual(ids(resumed), ids(log.slice(6)))
          const fromSeq = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ fromSequence: log[6]!.sequence }), (s) => take(s, 4))
          )
          assert.deepStrictEqual(ids(fromSeq), ids(log.slice(6)))
          const oldest = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ fromSequence: "oldest" }), (s) => take(s, 4))
          )
          assert.deepStrictEqual(ids(oldest), ids(log.slice(6)))
        }),
        { retention: { maxRows: 4, batchSize: 4 } }
      )
    )

    it.scopedLive("retention by age prunes only events older than maxAge", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const sql = yield* SqlClient.SqlClient
          yield* finish(tasks(3))
          yield* settled // (as above)
          const old = yield* replayAll(3)
          // Age the first three by two days (the log's own timestamps, as if written then).
          yield* sql`UPDATE baton_completions SET at = at - ${2 * 86_400_000}`
          yield* finish(tasks(2))
          yield* settled
          assert.strictEqual(yield* completions.prune, 3)
          const whole = yield* failureOf(replayAll(2))
          assert.strictEqual((whole as { _tag: string })._tag, "CursorExpired")
          const kept = yield* Effect.scoped(
            Effect.flatMap(completions.subscribe({ after: old[2]!.cursor }), (s) => take(s, 2))
          )
          assert.strictEqual(kept.length, 2)
        }),
        { retention: { maxAge: "1 day" } }
      )
    )

    it.scopedLive("a subscriber overtaken by pruning fails with CursorExpired instead of skipping", () =>
      withBackend(
        backend,
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const stream = yield* completions.subscribe()
          for (let i = 0; i < 6; i++) yield* finish(tasks(1))
          yield* settled
          assert.strictEqual(yield* completions.prune, 4)
          const error = yield* failureOf(take(stream, 6))
          assert.strictEqual((error as { _tag: string })._tag, "CursorExpired")
        }),
        { retention: { maxRows: 2 } }
      )
    )

    it.scopedLive(
      "an idle filtered subscriber keeps up with the log, so pruning others' events does not expire it",
      () =>
        withBackend(
          backend,
          Effect.gen(function* () {
            const completions = yield* CompletionBackend
            const stream = yield* completions.subscribe({ filter: { namespace: "quiet" } })
            const pull = yield* Stream.toPull(stream)
            const b = yield* finish(tasks(1, { namespace: "quiet" }))
            for (let i = 0; i < 5; i++) yield* finish(tasks(2, { namespace: "noisy" }))
            // No open transaction anywhere holds these rows back: one read sees them all.
            yield* settled
            // One read returns B and passes every noisy row after it.
            assert.deepStrictEqual(ids(Chunk.toReadonlyArray(yield* pull)), b)
            assert.isAbove(yield* completions.prune, 0)
            const c = yield* finish(tasks(1, { namespace: "quiet" }))
            assert.deepStrictEqual(ids(Chunk.toReadonlyArray(yield* pull)), c)
          }),
          { retention: { maxRows: 1 } }
        )
    )

    if (backend.name !== "memory") {
      it.scopedLive("a subscriber in another OS process sees the events, filtered", () =>
        Effect.gen(function* () {
          const shared = sharedStorage(backend.name as "sqlite" | "pg")
          yield* Effect.gen(function* () {
            const child = yield* spawnSubscriber(shared.descriptor, { namespace: "far", count: 5 })
            yield* finish(tasks(3, { namespace: "near" }))
            const far: Array<string> = []
            for (let i = 0; i < 5; i++) far.push(...(yield* finish(tasks(1, { namespace: "far" }))))
            yield* Effect.promise(() => child.waitForLine("DONE", 30_000))
            const seen = child.lines
              .filter((line) => line.startsWith("EVENT "))
              .map((line) => JSON.parse(line.slice(6)))
            assert.deepStrictEqual(
              seen.map((event: { taskId: string }) => event.taskId),
              far
            )
            assert.isTrue(seen.every((event: { namespace: string }) => event.namespace === "far"))
            assert.strictEqual(yield* Effect.promise(() => child.exited), 0)
          }).pipe(Effect.provide(layerFor(shared.layer)))
        })
      )
    }
  })

/** Polls with a deadline (no sleeps as synchronisation). */
export const eventuallyEffect = <E, R>(check: Effect.Effect<boolean, E, R>, timeoutMs = 15_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error("timed out waiting for a condition"))
      yield* Effect.sleep("5 millis")
    }
  })

/** Starts test/fixtures/completion-subscriber.ts and waits until its subscription is active. */
export const spawnSubscriber = (
  descriptor: BackendDescriptor,
  options: { readonly namespace?: string; readonly count: number }
) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const child = spawnFixture("completion-subscriber.ts", descriptor, {
        BATON_COUNT: String(options.count),
        ...(options.namespace !== undefined ? { BATON_NAMESPACE: options.namespace } : {})
      })
      await child.waitForLine("READY", 30_000)
      return child
    }),
    (child) => Effect.sync(() => child.kill())
  )
