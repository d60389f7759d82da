/**
 * ReadModel on every backend, for what the dashboard and CLI tests do not reach: chords by key and by literal key
 * prefix (what `baton cancel` uses), chord counts with every state present, and checkpoints read across scopes
 * (timings, the stored error, paging, the empty scope list). The dashboard's views over it (rate, batches, histogram,
 * throughput) are asserted in test/Dashboard.test.ts, `baton status` in test/cli.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { ReadModel } from "../src/ReadModel.js"
import * as SqlCheckpointCoordinator from "../src/SqlCheckpointCoordinator.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlReadModel from "../src/SqlReadModel.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { Square, Sum } from "./fixtures/chord-tasks.js"
import * as Backends from "./support/backends.js"

for (const backend of Backends.all()) {
  const layer = () => {
    const queue = SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))
    const completions = SqlCompletionBackend.layer.pipe(Layer.provideMerge(queue))
    return Layer.mergeAll(
      SqlChordRegistry.layerWith({ reconcileInterval: 0 }),
      SqlCheckpointCoordinator.layer,
      SqlReadModel.layer
    ).pipe(Layer.provideMerge(completions))
  }

  describe(`ReadModel [${backend.name}]`, () => {
    it.effect("chords by key and by literal key prefix and state; counts name every state", () =>
      Effect.gen(function* () {
        const chords = yield* ChordRegistry.ChordRegistry
        const readModel = yield* ReadModel
        assert.deepStrictEqual(yield* readModel.chordCounts, { running: 0, completed: 0, failed: 0, cancelled: 0 })
        const make = (idempotencyKey: string) =>
          Effect.map(
            chords.chord({
              body: [Task.call(Square, { n: 2 })],
              callback: ChordRegistry.callback(Sum, { label: idempotencyKey }),
              idempotencyKey
            }),
            (handle) => handle.chordId as string
          )
        const a0 = yield* make("extract:a:0")
        const a1 = yield* make("extract:a#1:1")
        yield* make("extract:b:0")
        const pct = yield* make("x%y:0")
        yield* make("xzy:0")

        const prefixed = yield* readModel.chordsByKeyPrefix("extract:a", "running")
        assert.deepStrictEqual(prefixed.map((c) => c.chordId as string).sort(), [a0, a1].sort())
        assert.isTrue(prefixed.every((c) => c.state === "running" && c.idempotencyKey.startsWith("extract:a")))
        // `%` and `_` are data, not wildcards.
        assert.deepStrictEqual(
          (yield* readModel.chordsByKeyPrefix("x%", "running")).map((c) => c.chordId as string),
          [pct]
        )
        assert.deepStrictEqual(yield* readModel.chordsByKeyPrefix("x_", "running"), [])

        assert.isTrue(yield* chords.cancel(a1))
        assert.deepStrictEqual(
          (yield* readModel.chordsByKeyPrefix("extract:a", "running")).map((c) => c.chordId as string),
          [a0]
        )
        assert.deepStrictEqual(
          (yield* readModel.chordsByKeyPrefix("extract:a", "cancelled")).map((c) => c.chordId as string),
          [a1]
        )

        const byKey = yield* readModel.chordsByKey(["extract:a:0", "extract:a#1:1", "no-such-key"])
        assert.deepStrictEqual(
          new Map(byKey.map((c) => [c.idempotencyKey, [c.chordId as string, c.state]])),
          new Map([
            ["extract:a:0", [a0, "running"]],
            ["extract:a#1:1", [a1, "cancelled"]]
          ])
        )
        assert.deepStrictEqual(yield* readModel.chordsByKey([]), [])
        assert.deepStrictEqual(yield* readModel.chordCounts, { running: 4, completed: 0, failed: 0, cancelled: 1 })
        assert.deepStrictEqual(yield* readModel.chordLatencies(10), [])
      }).pipe(Effect.provide(layer()))
    )

    it.effect("checkpoints across scopes: stats of the completed ones, batch order, stored error, paging", () =>
      Effect.gen(function* () {
        const checkpoints = yield* CheckpointCoordinator
        const readModel = yield* ReadModel
        yield* TestClock.adjust("1000 millis")
        const first = yield* checkpoints.createCheckpoint("r", 0)
        yield* TestClock.adjust("10 millis")
        const failed = yield* checkpoints.createCheckpoint("r", 1)
        yield* checkpoints.failCheckpoint(failed, { message: "disk full" })
        yield* TestClock.adjust("10 millis")
        yield* checkpoints.createCheckpoint("r#1", 1)
        yield* checkpoints.createCheckpoint("other", 0)
        yield* TestClock.adjust("30 millis")
        yield* checkpoints.completeCheckpoint(first, { ok: true })

        const stats = yield* readModel.checkpointStats(["r", "r#1"])
        assert.strictEqual(stats.completed, 1)
        assert.strictEqual(stats.firstCreatedAt?.getTime(), 1000)
        assert.strictEqual(stats.lastCompletedAt?.getTime(), 1050)
        assert.deepStrictEqual(yield* readModel.checkpointStats([]), {
          completed: 0,
          firstCreatedAt: undefined,
          lastCompletedAt: undefined
        })

        const page = yield* readModel.checkpoints(["r", "r#1"], { limit: 2, offset: 0 })
        assert.strictEqual(page.total, 3)
        assert.deepStrictEqual(
          page.items.map((c) => [c.scope, c.batchIndex, c.state, c.error, c.completedAt?.getTime()]),
          [
            ["r", 0, "completed", null, 1050],
            ["r", 1, "failed", { message: "disk full" }, 1010]
          ]
        )
        const rest = yield* readModel.checkpoints(["r", "r#1"], { limit: 2, offset: 2 })
        assert.deepStrictEqual(
          rest.items.map((c) => [c.scope, c.batchIndex, c.state, c.createdAt.getTime(), c.completedAt]),
          [["r#1", 1, "pending", 1020, undefined]]
        )
        assert.deepStrictEqual(yield* readModel.checkpoints([], { limit: 10, offset: 0 }), { total: 0, items: [] })
      }).pipe(Effect.provide(layer()))
    )
  })
}
