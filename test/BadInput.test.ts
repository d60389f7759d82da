/**
 * The bad-input table (docs/reliability.md, "Bad inputs"): every public entry point fed what users get wrong or an
 * attacker sends, on memory, a SQLite file and Postgres. Each case asserts the typed error (tag, field, message) or
 * the documented behaviour, that nothing was written by a refused call, that what was accepted before is still there
 * (re-read), and — for poisoned tasks — that the worker keeps running.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Deferred from "effect/Deferred"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Baton from "../src/Baton.js"
import * as Continuations from "../src/Continuations.js"
import * as ExtractionWorkflow from "../src/extraction/ExtractionWorkflow.js"
import { RunService } from "../src/RunService.js"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { CompletionBackend } from "../src/CompletionBackend.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { limits, TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"
import { startCli } from "./support/cli.js"

const Double = Task.make("bad-double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) => Effect.succeed(n * 2)
})

const Echo = Task.make("bad-echo", {
  payload: Schema.Struct({ text: Schema.String }),
  success: Schema.String,
  handler: ({ text }) => Effect.succeed(text)
})

const Anything = Task.make("bad-anything", {
  payload: Schema.Unknown,
  success: Schema.Unknown,
  handler: (value) => Effect.succeed(value)
})

const Sum = Task.make("bad-sum", {
  payload: ChordRegistry.callbackPayload(Schema.Number, { label: Schema.String }),
  success: Schema.Number,
  handler: ({ results }) => Effect.succeed(results.reduce((a, b) => a + b, 0))
})

const tasks = [Double, Echo, Anything, Sum] as const

const taskCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks`.pipe(Effect.map((rows) => Number(rows[0]!.n)))
)

const chordCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords`.pipe(Effect.map((rows) => Number(rows[0]!.n)))
)

/** The typed failure of `effect`, checked: its tag, and (for InvalidInput) its field; the message must match. */
const refused = <A, E extends { readonly _tag: string }, R>(
  effect: Effect.Effect<A, E, R>,
  tag: string,
  field: string | undefined,
  message: RegExp
) =>
  Effect.gen(function* () {
    const error = yield* Effect.flip(effect)
    assert.strictEqual(error._tag, tag, `expected ${tag}, got ${error._tag}: ${JSON.stringify(error)}`)
    if (field !== undefined) assert.strictEqual((error as unknown as { field: string }).field, field)
    const text = String((error as unknown as { message: string }).message)
    assert.match(text, message)
    return error
  })

/** Waits until the task is terminal; its info. */
const settled = (id: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* Backends.eventually(
      Effect.map(queue.get(id), (info) => ["succeeded", "failed", "dead", "cancelled"].includes(info.state)),
      `task ${id} to finish`
    )
    return yield* queue.get(id)
  })

const deep = (depth: number): unknown => {
  let value: unknown = "leaf"
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

const fastWorker = { tasks, concurrency: 4, pollInterval: { min: "2 millis", max: "20 millis" } } as const

for (const backend of Backends.all()) {
  describe(`bad inputs [${backend.name}]`, () => {
    const layer = () => Baton.layerWith(backend.storage())

    it.live("enqueue: a payload of the wrong type fails with InvalidPayload and writes nothing", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const kept = yield* queue.enqueue(Double, { n: 1 })
        yield* refused(queue.enqueue(Double, { n: "one" } as never), "InvalidPayload", undefined, /Expected number/)
        yield* refused(queue.enqueue(Double, null as never), "InvalidPayload", undefined, /Expected/)
        yield* refused(queue.enqueue(Double, [1, 2] as never), "InvalidPayload", undefined, /Expected/)
        assert.strictEqual(yield* taskCount, 1)
        assert.deepStrictEqual((yield* queue.get(kept)).payload, { n: 1 })
      }).pipe(Effect.provide(layer()))
    )

    it.live("enqueue: a payload over 1 MiB of JSON fails with InvalidPayload; one just under is stored intact", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const big = "x".repeat(limits.maxPayloadBytes)
        yield* refused(
          queue.enqueue(Echo, { text: big }),
          "InvalidPayload",
          undefined,
          /bytes of JSON; at most 1048576/
        )
        // Multi-byte characters count in UTF-8 bytes: 400,000 × "é" (2 bytes) is 800,000 bytes, fine.
        // 400,000 × "€" (3 bytes) is 1,200,000 bytes: refused although it is only 400,000 characters.
        yield* refused(queue.enqueue(Echo, { text: "€".repeat(400_000) }), "InvalidPayload", undefined, /at most/)
        const fits = "é".repeat(400_000)
        const id = yield* queue.enqueue(Echo, { text: fits })
        assert.strictEqual(((yield* queue.get(id)).payload as { text: string }).text, fits)
        assert.strictEqual(yield* taskCount, 1)
      }).pipe(Effect.provide(layer()))
    )

    it.live("enqueue: NUL and lone surrogates inside payload strings round-trip exactly (JSON-escaped)", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const texts = ["a\u0000b", "\u0000", "lone \ud800 high", "lone \udc00 low", "pair 😀 ok", "\u0000\ud83d"]
        const ids = yield* Effect.forEach(texts, (text) => queue.enqueue(Echo, { text }))
        yield* Worker.run(fastWorker)
        for (const [i, id] of ids.entries()) {
          const info = yield* settled(id)
          assert.strictEqual(info.state, "succeeded", JSON.stringify(info.error))
          assert.strictEqual((info.payload as { text: string }).text, texts[i])
          // The handler received the exact string and its result was stored exactly.
          assert.strictEqual(Option.getOrThrow(yield* queue.result(Echo, id)), texts[i])
        }
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("enqueue: NUL or a lone surrogate in a name, queue, namespace, tag or key fails with InvalidInput", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* refused(queue.enqueue(Double, { n: 1 }, { queue: "q\u0000" }), "InvalidInput", "queue", /NUL/)
        yield* refused(queue.enqueue(Double, { n: 1 }, { namespace: "a\u0000" }), "InvalidInput", "namespace", /NUL/)
        yield* refused(
          queue.enqueue(Double, { n: 1 }, { tags: ["ok", "b\u0000"] }),
          "InvalidInput",
          "tags",
          /tags\[1\]/
        )
        yield* refused(
          queue.enqueue(Double, { n: 1 }, { idempotencyKey: "k\ud800" }),
          "InvalidInput",
          "idempotencyKey",
          /lone surrogate/
        )
        yield* refused(queue.enqueue(Double, { n: 1 }, { queue: "\udc00" }), "InvalidInput", "queue", /lone surrogate/)
        yield* refused(
          queue.enqueueRaw([{ name: "x\u0000", payload: {} }]),
          "InvalidInput",
          "name",
          /name must not contain NUL/
        )
        yield* refused(queue.enqueue(Double, { n: 1 }, { queue: "" }), "InvalidInput", "queue", /must not be empty/)
        yield* refused(
          queue.enqueue(Double, { n: 1 }, { namespace: "n".repeat(256) }),
          "InvalidInput",
          "namespace",
          /256 characters long; at most 255/
        )
        yield* refused(
          queue.enqueue(Double, { n: 1 }, { tags: Array.from({ length: 65 }, (_, i) => `t${i}`) }),
          "InvalidInput",
          "tags",
          /65 entries; at most 64/
        )
        assert.strictEqual(yield* taskCount, 0)
      }).pipe(Effect.provide(layer()))
    )

    it.live("enqueue: deeply nested JSON fails with InvalidPayload (no stack overflow), 64 levels are fine", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* refused(queue.enqueue(Anything, deep(65)), "InvalidPayload", undefined, /nested more than 64 levels/)
        yield* refused(queue.enqueue(Anything, deep(100_000)), "InvalidPayload", undefined, /nested more than 64/)
        const cyclic: Array<unknown> = []
        cyclic.push(cyclic)
        yield* refused(queue.enqueue(Anything, cyclic), "InvalidPayload", undefined, /nested|circular/)
        yield* refused(queue.enqueue(Anything, { n: 10n }), "InvalidPayload", undefined, /not JSON.*BigInt/)
        const id = yield* queue.enqueue(Anything, deep(63))
        assert.deepStrictEqual((yield* queue.get(id)).payload, deep(63))
        assert.strictEqual(yield* taskCount, 1)
      }).pipe(Effect.provide(layer()))
    )

    it.live(
      "enqueue: negative / NaN / Infinity / huge numbers and durations fail with InvalidInput naming the field",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const bad: ReadonlyArray<readonly [Task.EnqueueOptions, string, RegExp]> = [
            [{ priority: Number.NaN }, "priority", /integer from -2147483647 to 2147483647, got NaN/],
            [{ priority: 1.5 }, "priority", /got 1.5/],
            [{ priority: 2 ** 40 }, "priority", /got 1099511627776/],
            [{ priority: Infinity }, "priority", /got Infinity/],
            [{ maxAttempts: 0 }, "maxAttempts", /from 1 to 10000, got 0/],
            [{ maxAttempts: -1 }, "maxAttempts", /got -1/],
            [{ maxAttempts: Number.NaN }, "maxAttempts", /got NaN/],
            [{ delay: -1 }, "delay", /duration from 0 ms to 2147483647 ms, got -1/],
            [{ delay: Number.NaN }, "delay", /got NaN/],
            [{ delay: Infinity }, "delay", /got Infinity/],
            [{ delay: "-5 seconds" }, "delay", /got "-5 seconds"/],
            [{ delay: "soon" as never }, "delay", /not a duration/],
            [{ delay: "100 days" }, "delay", /got 8640000000 ms/],
            [{ timeout: 0 }, "timeout", /from 1 ms/],
            [{ timeout: -1 }, "timeout", /got -1/],
            [{ timeout: Duration.infinity }, "timeout", /got Infinity/],
            [{ runAt: Number.NaN }, "runAt", /epoch milliseconds/],
            [{ runAt: new Date("not a date") }, "runAt", /Invalid Date/],
            [{ runAt: -1 }, "runAt", /got -1/],
            [{ runAt: 1e20 }, "runAt", /got 100000000000000000000/],
            [{ backoff: { factor: 0 } }, "backoff.factor", /from 1 to 1000, got 0/],
            [{ backoff: { factor: Number.NaN } }, "backoff.factor", /got NaN/],
            [{ backoff: { base: -10 } }, "backoff.base", /got -10/]
          ]
          for (const [options, field, message] of bad) {
            yield* refused(queue.enqueue(Double, { n: 1 }, options), "InvalidInput", field, message)
          }
          // The raw entry point checks the same fields.
          yield* refused(
            queue.enqueueRaw([{ name: "bad-double", payload: { n: 1 }, timeoutMs: Number.NaN }]),
            "InvalidInput",
            "timeout",
            /got NaN/
          )
          assert.strictEqual(yield* taskCount, 0)
          yield* refused(
            queue.enqueueRaw([{ name: "bad-double", payload: { n: 1 }, runAt: 1.5 }]),
            "InvalidInput",
            "runAt",
            /integer from 0 to 8640000000000000, got 1.5/
          )
          // Fractional durations are rounded up to whole milliseconds.
          const fractional = yield* queue.enqueue(Double, { n: 1 }, { delay: "1.5 millis", timeout: "1.5 millis" })
          assert.isAtLeast((yield* queue.get(fractional)).runAt.getTime(), 2)
          yield* queue.cancel(fractional)
          // The edges of the ranges are accepted.
          const ok = yield* queue.enqueue(Double, { n: 1 }, { priority: -limits.maxPriority, maxAttempts: 10_000 })
          assert.strictEqual((yield* queue.get(ok)).priority, -limits.maxPriority)
          yield* queue.enqueue(Double, { n: 1 }, { delay: 0, priority: limits.maxPriority })
          assert.strictEqual(yield* taskCount, 3)
        }).pipe(Effect.provide(layer()))
    )

    it.live("enqueueMany: one bad call fails the batch with its error and nothing is written", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* refused(
          queue.enqueueMany([
            Task.call(Double, { n: 1 }),
            Task.call(Double, { n: 2 }, { priority: Number.NaN }),
            Task.call(Double, { n: 3 })
          ]),
          "InvalidInput",
          "priority",
          /NaN/
        )
        yield* refused(
          queue.enqueueRaw([
            { name: "bad-double", payload: { n: 1 } },
            { name: "bad-double", payload: deep(1000) }
          ]),
          "InvalidPayload",
          undefined,
          /nested/
        )
        assert.strictEqual(yield* taskCount, 0)
      }).pipe(Effect.provide(layer()))
    )

    it.live("enqueue: a duplicate idempotency key with a different payload returns the first task, unchanged", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const first = yield* queue.enqueue(Double, { n: 1 }, { idempotencyKey: "same" })
        const second = yield* queue.enqueue(Double, { n: 999 }, { idempotencyKey: "same", priority: 7 })
        assert.strictEqual(second, first)
        const info = yield* queue.get(first)
        assert.deepStrictEqual(info.payload, { n: 1 })
        assert.strictEqual(info.priority, 0)
        // Another namespace is another key space.
        const other = yield* queue.enqueue(Double, { n: 2 }, { idempotencyKey: "same", namespace: "other" })
        assert.notStrictEqual(other, first)
        assert.strictEqual(yield* taskCount, 2)
      }).pipe(Effect.provide(layer()))
    )

    it.live(
      "worker: unknown task names and undecodable payloads fail those tasks permanently; the worker goes on",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const before = yield* queue.enqueue(Double, { n: 20 })
          const [unknown, poisoned, wrongShape] = yield* queue.enqueueRaw([
            { name: "no-such-task", payload: { n: 1 } },
            { name: "bad-double", payload: { n: "not a number" } },
            { name: "bad-double", payload: "just a string" }
          ])
          const worker = yield* Worker.run(fastWorker)
          const unknownInfo = yield* settled(unknown!)
          assert.strictEqual(unknownInfo.state, "failed")
          assert.strictEqual(Option.getOrThrow(unknownInfo.error).kind, "unknown_task")
          assert.strictEqual(unknownInfo.attempts, 1)
          for (const id of [poisoned!, wrongShape!]) {
            const info = yield* settled(id)
            assert.strictEqual(info.state, "failed")
            assert.strictEqual(Option.getOrThrow(info.error).kind, "decode")
            assert.match(Option.getOrThrow(info.error).message, /payload does not decode/)
            assert.strictEqual(info.attempts, 1, "a decode failure is permanent, not retried")
          }
          // The worker is still alive: work enqueued afterwards (and before) is done.
          const after = yield* queue.enqueue(Double, { n: 21 })
          assert.strictEqual((yield* settled(after)).state, "succeeded")
          assert.strictEqual(Option.getOrThrow(yield* queue.result(Double, after)), 42)
          assert.strictEqual(Option.getOrThrow(yield* queue.result(Double, before)), 40)
          assert.isTrue((yield* worker.processed) >= 5)
        }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("Worker.run: bad settings fail with InvalidInput naming the setting", () =>
      Effect.gen(function* () {
        const bad: ReadonlyArray<readonly [Partial<Worker.WorkerOptions<typeof tasks>>, string, RegExp]> = [
          [{ concurrency: 0 }, "concurrency", /from 1 to 10000, got 0/],
          [{ concurrency: -1 }, "concurrency", /got -1/],
          [{ concurrency: Number.NaN }, "concurrency", /got NaN/],
          [{ concurrency: 1e9 }, "concurrency", /got 1000000000/],
          [{ concurrency: 2.5 }, "concurrency", /got 2.5/],
          [{ prefetch: -1 }, "prefetch", /from 0 to 100000/],
          [{ leaseDuration: -1 }, "leaseDuration", /got -1/],
          [{ leaseDuration: Number.NaN }, "leaseDuration", /got NaN/],
          [{ leaseDuration: "1 second", heartbeatInterval: "2 seconds" }, "heartbeatInterval", /shorter than/],
          [{ pollInterval: { min: "1 second", max: "10 millis" } }, "pollInterval.max", /below pollInterval.min/],
          [{ shutdownGracePeriod: Infinity }, "shutdownGracePeriod", /got Infinity/],
          [{ queues: [] }, "queues", /must not be empty/],
          [{ queues: ["a'; DROP TABLE baton_tasks; --", "b\u0000"] }, "queues", /queues\[1\] must not contain NUL/]
        ]
        for (const [options, field, message] of bad) {
          yield* refused(Effect.scoped(Worker.run({ ...fastWorker, ...options })), "InvalidInput", field, message)
        }
      }).pipe(Effect.provide(layer()))
    )

    it.live("chord: an empty chord dispatches its callback at once with results []", () =>
      Effect.gen(function* () {
        const chords = yield* ChordRegistry.ChordRegistry
        const queue = yield* TaskQueue
        const handle = yield* chords.chord({ body: [], callback: ChordRegistry.callback(Sum, { label: "empty" }) })
        const callbackId = yield* handle.await
        assert.deepStrictEqual((yield* queue.get(callbackId)).payload, { label: "empty", results: [] })
        assert.strictEqual((yield* chords.get(handle.chordId)).expected, 0)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("chord: bad chord options and a body over the size limit fail with InvalidInput; nothing is written", () =>
      Effect.gen(function* () {
        const chords = yield* ChordRegistry.ChordRegistry
        const callback = ChordRegistry.callback(Sum, { label: "x" })
        const body = [Task.call(Double, { n: 1 })]
        // A sparse array: its length is over the limit without a million objects.
        const huge = new Array(limits.maxChordSize + 1) as Array<Task.TaskCall>
        yield* refused(chords.chord({ body: huge, callback }), "InvalidInput", "body", /at most 1000000 body tasks/)
        yield* refused(chords.chord({ body, callback, namespace: "n\u0000" }), "InvalidInput", "namespace", /NUL/)
        yield* refused(chords.chord({ body, callback, tags: ["\ud800"] }), "InvalidInput", "tags", /lone surrogate/)
        yield* refused(
          chords.chord({ body, callback, failurePolicy: "ignore" as never }),
          "InvalidInput",
          "failurePolicy",
          /"fail" or "continue"/
        )
        yield* refused(
          chords.chord({ body: [Task.call(Double, { n: 1 }, { delay: -1 })], callback }),
          "InvalidInput",
          "delay",
          /got -1/
        )
        yield* refused(
          chords.chord({ body: [Task.call(Double, { n: 1 }), Task.call(Double, { n: "2" } as never)], callback }),
          "InvalidPayload",
          undefined,
          /Expected number/
        )
        assert.strictEqual(yield* chordCount, 0)
        assert.strictEqual(yield* taskCount, 0)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("chord: a duplicate idempotency key with a different body returns the existing chord, unchanged", () =>
      Effect.gen(function* () {
        const chords = yield* ChordRegistry.ChordRegistry
        const callback = ChordRegistry.callback(Sum, { label: "x" })
        const first = yield* chords.chord({ body: [Task.call(Double, { n: 1 })], callback, idempotencyKey: "k" })
        const second = yield* chords.chord({
          body: [Task.call(Double, { n: 5 }), Task.call(Double, { n: 6 })],
          callback,
          idempotencyKey: "k"
        })
        assert.isTrue(first.created)
        assert.isFalse(second.created)
        assert.strictEqual(second.chordId, first.chordId)
        assert.strictEqual((yield* chords.get(first.chordId)).expected, 1)
        assert.strictEqual(yield* taskCount, 1)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live(
      "chord: a 100,000-task chord is created in one transaction and counted; its callback fires once",
      () =>
        Effect.gen(function* () {
          const chords = yield* ChordRegistry.ChordRegistry
          const queue = yield* TaskQueue
          const size = 100_000
          const body = Array.from({ length: size }, (_, i) => Task.call(Double, { n: i }))
          const handle = yield* chords.chord({ body, callback: ChordRegistry.callback(Sum, { label: "big" }) })
          const info = yield* chords.get(handle.chordId)
          assert.strictEqual(info.expected, size)
          assert.strictEqual(yield* taskCount, size)
          yield* Worker.run({ tasks, concurrency: 50, pollInterval: { min: "1 millis", max: "10 millis" } })
          const callbackId = yield* handle.await
          assert.strictEqual((yield* settled(callbackId)).state, "succeeded")
          // sum of 2i for i < size
          assert.strictEqual(Option.getOrThrow(yield* queue.result(Sum, callbackId)), size * (size - 1))
          const after = yield* chords.get(handle.chordId)
          assert.strictEqual(after.succeeded, size)
          assert.strictEqual(after.state, "completed")
          assert.strictEqual((yield* queue.counts).succeeded, size + 1)
        }).pipe(Effect.scoped, Effect.provide(layer())),
      { timeout: 600_000 }
    )

    it.live("checkpoints: a bad batch index or run id is a defect (RangeError) naming it; nothing is written", () =>
      Effect.gen(function* () {
        const checkpoints = yield* CheckpointCoordinator
        const cases: ReadonlyArray<readonly [string, number, RegExp]> = [
          ["run", -1, /batchIndex must be a non-negative integer \(at most 2147483647\), got -1/],
          ["run", Number.NaN, /got NaN/],
          ["run", 1.5, /got 1.5/],
          ["run", 2 ** 31, /got 2147483648/],
          ["run\u0000", 0, /runId must not contain NUL/],
          ["\ud800", 0, /lone surrogate/],
          ["", 0, /runId must not be empty/]
        ]
        for (const [runId, batchIndex, message] of cases) {
          const exit = yield* Effect.exit(checkpoints.createCheckpoint(runId, batchIndex))
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) {
            const defect = Cause.squash(exit.cause)
            assert.instanceOf(defect, RangeError)
            assert.match((defect as RangeError).message, message)
          }
        }
        const token = yield* checkpoints.createCheckpoint("run", 0)
        assert.strictEqual(token.batchIndex, 0)
        assert.deepStrictEqual(
          (yield* checkpoints.getPendingCheckpoints("run")).map((t) => t.batchIndex),
          [0]
        )
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live(
      "ExtractionWorkflow.run: bad run ids, batch sizes and documents fail with InvalidInput; nothing is written",
      () =>
        Effect.gen(function* () {
          const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
          const runs = yield* RunService
          const doc = { path: "a.md", content: "# A" }
          const cases: ReadonlyArray<readonly [ExtractionWorkflow.RunInput, string, RegExp]> = [
            [{ documents: [doc], batchSize: 0 }, "batchSize", /from 1 to 100000, got 0/],
            [{ documents: [doc], batchSize: Number.NaN }, "batchSize", /got NaN/],
            [{ documents: [doc], batchSize: -3 }, "batchSize", /got -3/],
            [{ documents: [doc], batchSize: 1e12 }, "batchSize", /got 1000000000000/],
            [{ documents: [doc], runId: "r\u0000" }, "runId", /NUL/],
            [{ documents: [doc], runId: "" }, "runId", /must not be empty/],
            [{ documents: [doc, { path: "b\u0000.md", content: "x" }] }, "documents[1].path", /NUL/],
            [{ documents: [{ path: "c.md", content: "bad \ud800 text" }] }, "documents[0].content", /lone surrogate/],
            [{ documents: [{ path: "d.md", content: "nul \u0000 inside" }] }, "documents[0].content", /NUL/]
          ]
          for (const [input, field, message] of cases) {
            yield* refused(workflow.run(input), "InvalidInput", field, message)
          }
          assert.deepStrictEqual(yield* runs.listRuns({}), [])
          assert.strictEqual(yield* taskCount, 0)
        }).pipe(Effect.provide(ExtractionWorkflow.layer.pipe(Layer.provideMerge(Baton.layerWith(backend.storage())))))
    )

    it.live(
      "subscribe: filters with NUL, lone surrogates, patterns or unknown fields, and bad batch sizes are refused",
      () =>
        Effect.gen(function* () {
          const completions = yield* CompletionBackend
          const cases: ReadonlyArray<readonly [object, string, string, RegExp]> = [
            [{ filter: { namespace: "a\u0000" } }, "FilterUnsupported", "namespace", /NUL/],
            [{ filter: { taskName: "\udfff" } }, "FilterUnsupported", "taskName", /lone surrogate/],
            [{ filter: { tags: ["ok", "x\u0000"] } }, "FilterUnsupported", "tags", /tags\[1\]/],
            [{ filter: { namespace: /acme/ } }, "FilterUnsupported", "namespace", /patterns are not supported/],
            [{ filter: { queue: "q" } }, "FilterUnsupported", "queue", /cannot filter on "queue"/],
            [{ filter: { kinds: ["task'; DROP TABLE baton_tasks; --"] } }, "FilterUnsupported", "kinds", /unknown/],
            [{ batchSize: 0 }, "InvalidInput", "batchSize", /from 1 to 100000, got 0/],
            [{ batchSize: Number.NaN }, "InvalidInput", "batchSize", /got NaN/],
            [{ batchSize: 1e9 }, "InvalidInput", "batchSize", /got 1000000000/],
            [{ fromSequence: -1 }, "InvalidCursor", "", /non-negative integer/],
            [{ fromSequence: Number.NaN }, "InvalidCursor", "", /non-negative integer/],
            [{ after: "x'; DROP TABLE baton_completions; --" }, "InvalidCursor", "", /./]
          ]
          for (const [options, tag, field, message] of cases) {
            yield* refused(
              Effect.scoped(completions.subscribe(options)),
              tag,
              field === "" ? undefined : field,
              message
            )
          }
          // Still fine afterwards.
          yield* Effect.scoped(completions.subscribe({ filter: { namespace: "ok" } }))
        }).pipe(Effect.provide(layer()))
    )
  })
}

describe("bad inputs: storage", () => {
  it.effect("a malformed or unreachable DATABASE_URL fails the layer with StorageError, within connectTimeout", () =>
    Effect.gen(function* () {
      const cases: ReadonlyArray<readonly [Storage.PgOptions, RegExp]> = [
        [{ url: "mysql://root@localhost/db" }, /protocol "mysql:" is not postgres/],
        [{ url: "not a url" }, /malformed Postgres URL/],
        [{ url: "postgres://nobody@127.0.0.1:1/x", connectTimeout: "2 seconds" }, /127.0.0.1:1\/x: connection refused/],
        [{ url: "postgres://u@127.0.0.1:5432/x", schema: "x; DROP SCHEMA public" }, /invalid schema name/],
        [{ url: "postgres://u@127.0.0.1:5432/x", schema: "Robert'); DROP TABLE" }, /invalid schema name/],
        // 46 characters would make the NOTIFY channel name longer than Postgres accepts.
        [{ url: "postgres://u@127.0.0.1:5432/x", schema: "a".repeat(46) }, /1 to 45 lowercase letters/]
      ]
      for (const [options, message] of cases) {
        const error = yield* Effect.flip(Layer.build(Storage.layerPg(options)).pipe(Effect.scoped))
        assert.strictEqual(error._tag, "StorageError")
        assert.match(error.message, message)
      }
      // DATABASE_URL through Effect Config: missing, or malformed.
      const fromConfig = (map: Map<string, string>) =>
        Effect.flip(
          Layer.build(Storage.layerPgConfig).pipe(Effect.scoped, Effect.withConfigProvider(ConfigProvider.fromMap(map)))
        )
      assert.match((yield* fromConfig(new Map())).message, /Postgres configuration: .*DATABASE_URL/)
      assert.match(
        (yield* fromConfig(new Map([["DATABASE_URL", "http://example.com"]]))).message,
        /protocol "http:" is not postgres/
      )
      // A SQLite file that cannot be opened.
      const sqlite = yield* Effect.flip(
        Layer.build(Storage.layerSqlite({ filename: "/nonexistent-dir/baton.db" })).pipe(Effect.scoped)
      )
      assert.strictEqual(sqlite._tag, "StorageError")
      assert.match(sqlite.message, /cannot open SQLite database "\/nonexistent-dir\/baton.db"/)
    })
  )
})

describe("bad inputs: task definitions", () => {
  it("Task.make refuses an empty name, NUL, a lone surrogate or more than 255 characters (TypeError)", () => {
    const define = (name: string) => () =>
      Task.make(name, { payload: Schema.Void, success: Schema.Void, handler: () => Effect.void })
    assert.throws(define(""), TypeError, /must not be empty/)
    assert.throws(define("a\u0000b"), TypeError, /must not contain NUL/)
    assert.throws(define("\ud800"), TypeError, /lone surrogate/)
    assert.throws(define("n".repeat(256)), TypeError, /at most 255/)
    assert.strictEqual(define("'; DROP TABLE baton_tasks; --")().name, "'; DROP TABLE baton_tasks; --")
  })
})

describe("bad inputs: continuations", () => {
  it.live("callbacks that throw, die, fail or hang do not stop the others; late ones still run", () =>
    Effect.gen(function* () {
      const continuations = yield* Continuations.make<number, string>()
      const fired = yield* Deferred.make<number>()
      const late = yield* Deferred.make<number>()
      yield* continuations.addOrRunNow("throws", () => {
        throw new Error("thrown synchronously by a callback")
      })
      yield* continuations.addOrRunNow("dies", () => Effect.die("a defect"))
      yield* continuations.addOrRunNow("fails", () => Effect.fail("a typed failure"))
      yield* continuations.addOrRunNow("hangs", () => Effect.never, { timeout: "50 millis" })
      yield* continuations.addOrRunNow("ok", (exit) =>
        Exit.isSuccess(exit) ? Deferred.succeed(fired, exit.value) : Effect.void
      )
      yield* continuations.addOrRunNow("", () => Effect.void) // an empty name is just a name
      assert.isTrue(yield* continuations.complete(Exit.succeed(7)))
      assert.strictEqual(yield* Deferred.await(fired), 7)
      const result = yield* continuations.addOrRunNow("late", (exit) =>
        Exit.isSuccess(exit) ? Deferred.succeed(late, exit.value) : Effect.void
      )
      assert.strictEqual(result._tag, "Fired")
      assert.strictEqual(yield* Deferred.await(late), 7)
      // A second completion changes nothing.
      assert.isFalse(yield* continuations.complete(Exit.fail("other")))
      assert.deepStrictEqual(yield* continuations.await, Exit.succeed(7))
    }).pipe(Effect.scoped)
  )
})

const baton = (args: ReadonlyArray<string>) => Effect.promise(() => startCli(args).done)

describe("bad inputs: the baton CLI", () => {
  it.live(
    "out-of-range, malformed and unknown flags exit 2 with one line; a bad DATABASE_URL exits 1 with one line",
    () =>
      Effect.gen(function* () {
        const db = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "baton-bad-cli-")), "baton.db")
        // An existing (empty) database: `export` only reads and refuses a database that does not exist.
        fs.writeFileSync(db, "")
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, number, RegExp]> = [
          [["worker", "--db", db, "--concurrency", "0"], 2, /--concurrency must be from 1 to 1000/],
          [["worker", "--db", db, "--concurrency", "-5"], 2, /--concurrency must be from 1 to 1000/],
          [["worker", "--db", db, "--concurrency", "100000"], 2, /--concurrency must be from 1 to 1000/],
          [["worker", "--db", db, "--concurrency", "NaN"], 2, /./],
          [["worker", "--db", db, "--lease", "0"], 2, /--lease must be from 1 to 86400/],
          [["demo", "--db", db, "--workers", "1000"], 2, /--workers must be from 0 to 64/],
          [["demo", "--db", db, "--batch-size", "1e12"], 2, /./],
          [["demo", "--db", db, "--batch-size", "-1"], 2, /--batch-size must be from 1 to 100000/],
          [["status", "--database-url", "mysql://root@localhost/x"], 1, /protocol "mysql:" is not postgres/],
          [["status", "--database-url", "postgres://nobody@127.0.0.1:1/x"], 1, /127.0.0.1:1\/x: connection refused/],
          [["export", "'; DROP TABLE baton_runs; --", "--db", db], 1, /no run with id "'; DROP TABLE baton_runs; --"/]
        ]
        // Independent processes (only `export` opens the database, to read it): run at once.
        const results = yield* Effect.forEach(cases, ([args]) => baton(args), { concurrency: "unbounded" })
        for (const [i, [args, code, message]] of cases.entries()) {
          const result = results[i]!
          assert.strictEqual(result.code, code, `${args.join(" ")}: ${result.stderr}`)
          const lines = result.stderr.trim().split("\n")
          assert.strictEqual(lines.length, 1, `${args.join(" ")}: one line on stderr, got ${result.stderr}`)
          assert.match(lines[0]!, message)
          assert.notMatch(result.stderr, /at .*\.ts:\d+/, "no stack trace")
        }
      }),
    { timeout: 180_000 }
  )
})

const Slow = Task.make("bad-slow", {
  payload: Schema.Struct({ i: Schema.Number }),
  success: Schema.Number,
  handler: ({ i }) => Effect.as(Effect.sleep("2 millis"), i)
})

/** Exactly one `task` completion row per task, and every task succeeded with its own result. */
const assertNothingLostOrDoubled = (ids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const queue = yield* TaskQueue
    for (const [i, id] of ids.entries()) {
      const info = yield* queue.get(id)
      assert.strictEqual(info.state, "succeeded", `task ${i}: ${JSON.stringify(info.error)}`)
      assert.strictEqual(Option.getOrThrow(yield* queue.result(Slow, id)), i)
    }
    const rows = yield* sql<{ task_id: string; n: number }>`SELECT task_id, count(*) AS n FROM baton_completions
      WHERE kind = 'task' GROUP BY task_id`
    assert.strictEqual(rows.length, ids.length)
    for (const row of rows) assert.strictEqual(Number(row.n), 1, `task ${row.task_id} completed once`)
  })

/** All `n` accepted tasks succeed (the queue may fail while the database is away), a new one still runs, and nothing
 * was lost or doubled. */
const drainedAndStillWorking = (ids: ReadonlyArray<string>, label: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    yield* Backends.eventually(
      Effect.map(Effect.either(queue.counts), (c) => c._tag === "Right" && c.right.succeeded === ids.length),
      label,
      120_000
    )
    // The queue still takes work.
    const after = yield* queue.enqueue(Slow, { i: ids.length })
    yield* Backends.eventually(
      Effect.map(queue.get(after), (info) => info.state === "succeeded"),
      "a new task"
    )
    yield* assertNothingLostOrDoubled([...ids, after])
  })

describe.runIf(Backends.pgAvailable())("bad inputs: the database going away mid-run [pg]", () => {
  it.live(
    "its connections terminated three times mid-run: the worker goes on; nothing accepted is lost or doubled",
    () =>
      Effect.gen(function* () {
        const applicationName = `baton-bad-kill-${process.pid}-${Date.now().toString(36)}`
        const admin = new (yield* Effect.promise(() => import("pg"))).default.Client({
          connectionString: Backends.pgUrl()
        })
        yield* Effect.acquireRelease(
          Effect.promise(() => admin.connect()),
          () => Effect.promise(() => admin.end().catch(() => undefined))
        )
        // Only our own backends: this layer's pool and its LISTEN connection carry our application name.
        const killOurs = Effect.promise(() =>
          admin.query<{ n: number }>(
            "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE $1",
            [`${applicationName}%`]
          )
        ).pipe(Effect.map((result) => result.rows[0]!.n))
        const program = Effect.gen(function* () {
          const queue = yield* TaskQueue
          const ids = yield* queue.enqueueMany(Array.from({ length: 300 }, (_, i) => Task.call(Slow, { i })))
          yield* Worker.run({
            tasks: [Slow],
            concurrency: 8,
            leaseDuration: "2 seconds",
            reclaimInterval: "200 millis",
            pollInterval: { min: "2 millis", max: "50 millis" }
          })
          let killed = 0
          for (const target of [50, 120, 200]) {
            yield* Backends.eventually(
              // A query of ours on a terminated connection fails too (SqlError): poll through it.
              Effect.map(Effect.either(queue.counts), (c) => c._tag === "Right" && c.right.succeeded >= target),
              `${target} tasks done`,
              60_000
            )
            killed += yield* killOurs
          }
          assert.isAbove(killed, 2, "backends were terminated")
          yield* drainedAndStillWorking(ids, "all 300 tasks done")
        })
        yield* program.pipe(
          Effect.scoped,
          Effect.provide(
            Baton.layerWith(
              Storage.layerPg({
                url: Backends.pgUrl(),
                schema: `bt_${process.pid}_${Date.now().toString(36)}_kill`,
                applicationName
              })
            )
          )
        )
      }).pipe(Effect.scoped),
    { timeout: 240_000 }
  )

  it.live(
    "the server stops accepting (a proxy goes down) mid-run: enqueue fails with SqlError, work resumes after",
    () =>
      Effect.gen(function* () {
        const target = new URL(Backends.pgUrl())
        const sockets = new Set<net.Socket>()
        let server: net.Server | undefined
        const up = (port: number) =>
          Effect.async<number>((resume) => {
            server = net.createServer((client) => {
              const upstream = net.connect(Number(target.port || 5432), target.hostname)
              sockets.add(client).add(upstream)
              const drop = () => {
                client.destroy()
                upstream.destroy()
                sockets.delete(client)
                sockets.delete(upstream)
              }
              client.on("error", drop).on("close", drop)
              upstream.on("error", drop).on("close", drop)
              client.pipe(upstream).pipe(client)
            })
            server.listen(port, "127.0.0.1", () => resume(Effect.succeed((server!.address() as net.AddressInfo).port)))
          })
        const down = Effect.async<void>((resume) => {
          for (const socket of sockets) socket.destroy()
          sockets.clear()
          server!.close(() => resume(Effect.void))
        })
        const port = yield* up(0)
        yield* Effect.addFinalizer(() => (server?.listening ? down : Effect.void))
        const url = new URL(Backends.pgUrl())
        url.host = `127.0.0.1:${port}`
        const program = Effect.gen(function* () {
          const queue = yield* TaskQueue
          const ids = yield* queue.enqueueMany(Array.from({ length: 200 }, (_, i) => Task.call(Slow, { i })))
          yield* Worker.run({
            tasks: [Slow],
            concurrency: 8,
            leaseDuration: "2 seconds",
            reclaimInterval: "200 millis",
            pollInterval: { min: "2 millis", max: "50 millis" }
          })
          yield* Backends.eventually(
            Effect.map(queue.counts, (counts) => counts.succeeded >= 50),
            "50 done",
            60_000
          )
          yield* down
          // While the server is unreachable, a new enqueue is refused with a typed SqlError: it was not accepted.
          const refusedWhileDown = yield* Effect.flip(queue.enqueue(Slow, { i: -1 }).pipe(Effect.timeout("30 seconds")))
          assert.include(["SqlError", "TimeoutException"], refusedWhileDown._tag)
          yield* up(port)
          yield* drainedAndStillWorking(ids, "all 200 done after the server came back")
          // The refused enqueue left nothing behind.
          const sql = yield* SqlClient.SqlClient
          const stray = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE payload = '{"i":-1}'`
          assert.strictEqual(Number(stray[0]!.n), 0)
        })
        yield* program.pipe(
          Effect.scoped,
          Effect.provide(
            Baton.layerWith(
              Storage.layerPg({
                url: url.toString(),
                schema: `bt_${process.pid}_${Date.now().toString(36)}_proxy`,
                connectTimeout: "2 seconds"
              })
            )
          )
        )
      }).pipe(Effect.scoped),
    { timeout: 240_000 }
  )
})
