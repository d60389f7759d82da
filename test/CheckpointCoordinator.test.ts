/**
 * CheckpointCoordinator: the conformance suite on the in-memory layer and on the SQL layer over memory-SQLite, a
 * SQLite file and Postgres; the durable-only behaviours on each SQL backend; and what is specific to the memory layer.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { CheckpointCoordinator, layerMemory, layerMemoryWith } from "../src/CheckpointCoordinator.js"
import * as Backends from "./support/backends.js"
import { checkpointSuite, durableCheckpointSuite, sqlTarget } from "./suites/CheckpointSuite.js"

checkpointSuite({ name: "memory", layer: () => layerMemory, live: false })
for (const backend of Backends.all()) {
  checkpointSuite(sqlTarget(backend))
  durableCheckpointSuite(backend)
}

describe("CheckpointCoordinator.layerMemory", () => {
  it.effect("a completed checkpoint leaves memory once awaited; a failed one stays", () =>
    Effect.gen(function* () {
      const coordinator = yield* CheckpointCoordinator
      const done = yield* coordinator.createCheckpoint("run", 0)
      const failed = yield* coordinator.createCheckpoint("run", 1)
      const neverAwaited = yield* coordinator.createCheckpoint("run", 2)
      yield* coordinator.completeCheckpoint(done, "ok")
      yield* coordinator.failCheckpoint(failed, "no")
      yield* coordinator.completeCheckpoint(neverAwaited, "kept")
      assert.strictEqual(yield* coordinator.awaitCheckpoint(done), "ok")
      assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint("run", 0)))
      assert.strictEqual((yield* Effect.flip(coordinator.awaitCheckpoint(done)))._tag, "CheckpointNotFound")
      assert.strictEqual((yield* Effect.flip(coordinator.completeCheckpoint(done, "ok")))._tag, "CheckpointNotFound")
      for (let i = 0; i < 2; i++) {
        assert.strictEqual((yield* Effect.flip(coordinator.awaitCheckpoint(failed)))._tag, "CheckpointFailed")
      }
      assert.isTrue(Option.isSome(yield* coordinator.findCheckpoint("run", 1)))
      assert.isTrue(Option.isSome(yield* coordinator.findCheckpoint("run", 2)))
      // A new token for (run, 0) once the old one is gone.
      const again = yield* coordinator.createCheckpoint("run", 0)
      assert.notStrictEqual(again.id, done.id)
    }).pipe(Effect.provide(layerMemoryWith({ retainCompleted: 0 })))
  )

  it.effect("10,000 create → complete → await keep only the most recently awaited ones", () =>
    Effect.gen(function* () {
      const coordinator = yield* CheckpointCoordinator
      const tokens = []
      for (let i = 0; i < 10_000; i++) {
        const token = yield* coordinator.createCheckpoint("churn", i)
        yield* coordinator.completeCheckpoint(token, i)
        assert.strictEqual(yield* coordinator.awaitCheckpoint(token), i)
        tokens.push(token)
      }
      assert.deepStrictEqual(yield* coordinator.getPendingCheckpoints("churn"), [])
      for (const i of [0, 5_000, 9_899]) assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint("churn", i)))
      // The last 100 are retained: awaiting again, or repeating the completion, still works.
      assert.isTrue(Option.isSome(yield* coordinator.findCheckpoint("churn", 9_900)))
      assert.strictEqual(yield* coordinator.awaitCheckpoint(tokens[9_950]!), 9_950)
      yield* coordinator.completeCheckpoint(tokens[9_999]!, 9_999)
      assert.strictEqual(
        (yield* Effect.flip(coordinator.completeCheckpoint(tokens[9_999]!, 0)))._tag,
        "CheckpointConflict"
      )
    }).pipe(Effect.provide(layerMemoryWith({ retainCompleted: 100 })))
  )

  it.effect("the value given is the value awaited (no JSON round trip in memory)", () =>
    Effect.gen(function* () {
      const coordinator = yield* CheckpointCoordinator
      const token = yield* coordinator.createCheckpoint("run", 0)
      const result = { when: new Date(0) }
      yield* coordinator.completeCheckpoint(token, result)
      assert.strictEqual(yield* coordinator.awaitCheckpoint(token), result)
    }).pipe(Effect.provide(layerMemory))
  )
})
