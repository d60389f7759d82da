/**
 * CheckpointCoordinator conformance suite: the same behaviours on the in-memory layer and on the SQL layer over every
 * storage backend. `durableCheckpointSuite` adds what only the SQL layer promises (transactions, restarts, other
 * processes, the completions log).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { CheckpointCoordinator, CheckpointId, CheckpointToken, typed } from "../../src/CheckpointCoordinator.js"
import * as SqlCheckpointCoordinator from "../../src/SqlCheckpointCoordinator.js"
import * as SqlCompletionBackend from "../../src/SqlCompletionBackend.js"
import * as Storage from "../../src/Storage.js"
import { type Backend, pgUrl, sharedStorage, storageFromDescriptor } from "../support/backends.js"
import { spawnFixture } from "../support/process.js"

/** A coordinator under test. */
export interface CheckpointTarget {
  readonly name: string
  /** A fresh, empty coordinator per call. */
  readonly layer: () => Layer.Layer<CheckpointCoordinator, unknown>
  /** Whether waiting really waits (SQL polling): such tests run under `it.live`, with real short timeouts. */
  readonly live: boolean
}

/** The SQL coordinator over a storage backend, with a fast poll so live tests stay quick. */
export const sqlLayer = <E>(storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E>) =>
  SqlCheckpointCoordinator.layerWith({ pollMin: "1 millis", pollMax: "20 millis" }).pipe(Layer.provideMerge(storage))

export const sqlTarget = (backend: Backend): CheckpointTarget => ({
  name: `sql/${backend.name}`,
  layer: () => sqlLayer(backend.storage()),
  live: true
})

let runCounter = 0
const freshRun = () => `run-${process.pid}-${Date.now().toString(36)}-${runCounter++}`

const stranger = (runId: string) =>
  new CheckpointToken({ id: CheckpointId.make(crypto.randomUUID()), runId, batchIndex: 0 })

export const checkpointSuite = (target: CheckpointTarget) => {
  const test = target.live ? it.live : it.effect

  /** Asserts the checkpoint is still pending: a short bounded await times out (TestClock-driven in memory). */
  const assertStillPending = (token: CheckpointToken) =>
    Effect.gen(function* () {
      const coordinator = yield* CheckpointCoordinator
      const probe = yield* Effect.fork(Effect.either(coordinator.awaitCheckpoint(token, { timeout: "30 millis" })))
      if (!target.live) yield* TestClock.adjust("30 millis")
      const result = yield* Fiber.join(probe)
      assert.isTrue(Either.isLeft(result), "expected the checkpoint to be still pending")
      if (Either.isLeft(result)) {
        assert.strictEqual(result.left._tag, "CheckpointTimeout")
      }
    })

  /** One batch of a sequential run: checkpoint, outcome, await, and only then progress. */
  const runBatch = (runId: string, batchIndex: number, succeed: boolean, progress: Ref.Ref<number>) =>
    Effect.gen(function* () {
      const coordinator = yield* CheckpointCoordinator
      const token = yield* coordinator.createCheckpoint(runId, batchIndex)
      if (succeed) yield* coordinator.completeCheckpoint(token, { batch: batchIndex, saved: true })
      else yield* coordinator.failCheckpoint(token, { batch: batchIndex, reason: "save failed" })
      const result = yield* coordinator.awaitCheckpoint(token)
      assert.deepStrictEqual(result, { batch: batchIndex, saved: true })
      yield* Ref.set(progress, batchIndex + 1)
    })

  describe(`CheckpointCoordinator [${target.name}]`, () => {
    test("create and complete: the same token for the same (run, batch), then the result", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        const token = yield* coordinator.createCheckpoint(runId, 0)
        assert.strictEqual(token.runId, runId)
        assert.strictEqual(token.batchIndex, 0)
        const again = yield* coordinator.createCheckpoint(runId, 0)
        assert.strictEqual(again.id, token.id)
        assert.isTrue(Equal.equals(again, token))
        const other = yield* coordinator.createCheckpoint(runId, 1)
        assert.notStrictEqual(other.id, token.id)
        assert.strictEqual((yield* coordinator.pollCheckpoint(token))._tag, "Pending")
        yield* coordinator.completeCheckpoint(token, { rows: 10, names: ["a", "b"] })
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(token), { rows: 10, names: ["a", "b"] })
        // The token is a small value that survives encoding (how it travels to another process).
        const encoded = yield* Schema.encode(CheckpointToken)(token)
        assert.deepStrictEqual(encoded, { id: token.id, runId, batchIndex: 0 })
        assert.isTrue(Equal.equals(yield* Schema.decodeUnknown(CheckpointToken)(encoded), token))
      }).pipe(Effect.provide(target.layer())))

    test("create and fail: every await fails with CheckpointFailed carrying the error", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 3)
        yield* coordinator.failCheckpoint(token, { reason: "disk full" })
        for (let i = 0; i < 2; i++) {
          const error = yield* Effect.flip(coordinator.awaitCheckpoint(token))
          assert.strictEqual(error._tag, "CheckpointFailed")
          if (error._tag === "CheckpointFailed") {
            assert.deepStrictEqual(error.error, { reason: "disk full" })
            assert.isTrue(Equal.equals(error.token, token))
            assert.match(error.message, /checkpoint 3 of run .* failed/)
          }
        }
        const status = yield* coordinator.pollCheckpoint(token)
        assert.strictEqual(status._tag, "Failed")
        if (status._tag === "Failed") assert.deepStrictEqual(status.error, { reason: "disk full" })
      }).pipe(Effect.provide(target.layer())))

    test("await blocks until the checkpoint is completed", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const order = yield* Ref.make<ReadonlyArray<string>>([])
        const started = yield* Deferred.make<void>()
        const waiter = yield* Effect.fork(
          Effect.zipRight(
            Deferred.succeed(started, undefined),
            Effect.tap(coordinator.awaitCheckpoint(token), () => Ref.update(order, (o) => [...o, "awaited"]))
          )
        )
        yield* Deferred.await(started)
        yield* assertStillPending(token)
        assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)), "the waiter returned before the completion")
        yield* Ref.update(order, (o) => [...o, "completing"])
        yield* coordinator.completeCheckpoint(token, "ok")
        assert.strictEqual(yield* Fiber.join(waiter), "ok")
        assert.deepStrictEqual(yield* Ref.get(order), ["completing", "awaited"])
      }).pipe(Effect.provide(target.layer())))

    test("await blocks until the checkpoint is failed, then fails", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const waiters = yield* Effect.forEach([1, 2], () =>
          Effect.fork(Effect.exit(coordinator.awaitCheckpoint(token)))
        )
        yield* assertStillPending(token)
        yield* coordinator.failCheckpoint(token, "bad batch")
        for (const waiter of waiters) {
          const exit = yield* Fiber.join(waiter)
          assert.isTrue(Exit.isFailure(exit))
          const error = yield* Effect.flip(exit)
          assert.strictEqual(error._tag, "CheckpointFailed")
        }
      }).pipe(Effect.provide(target.layer())))

    test("several concurrent awaiters all get the result", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const waiters = yield* Effect.forEach([1, 2, 3], () => Effect.fork(coordinator.awaitCheckpoint(token)))
        yield* coordinator.completeCheckpoint(token, [1, 2, 3])
        for (const waiter of waiters) assert.deepStrictEqual(yield* Fiber.join(waiter), [1, 2, 3])
      }).pipe(Effect.provide(target.layer())))

    test("await with a timeout fails with CheckpointTimeout and leaves the checkpoint usable", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const fiber = yield* Effect.fork(Effect.flip(coordinator.awaitCheckpoint(token, { timeout: "40 millis" })))
        if (!target.live) yield* TestClock.adjust("40 millis")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error._tag, "CheckpointTimeout")
        if (error._tag === "CheckpointTimeout") {
          assert.strictEqual(error.timeoutMillis, 40)
          assert.isTrue(Equal.equals(error.token, token))
        }
        yield* coordinator.completeCheckpoint(token, 7)
        assert.strictEqual(yield* coordinator.awaitCheckpoint(token, { timeout: Duration.seconds(10) }), 7)
      }).pipe(Effect.provide(target.layer())))

    test("findCheckpoint finds the token of (run, batch), and nothing else", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint(runId, 0)))
        const token = yield* coordinator.createCheckpoint(runId, 0)
        const found = yield* coordinator.findCheckpoint(runId, 0)
        assert.isTrue(Option.isSome(found) && Equal.equals(found.value, token))
        assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint(runId, 1)))
        assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint(freshRun(), 0)))
        // Still found while completed and not yet awaited.
        yield* coordinator.completeCheckpoint(token, null)
        assert.isTrue(Option.isSome(yield* coordinator.findCheckpoint(runId, 0)))
      }).pipe(Effect.provide(target.layer())))

    test("pending list: in batch order, per run, and a checkpoint leaves it once completed or failed", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        const otherRun = freshRun()
        const tokens = new Map<number, CheckpointToken>()
        for (const i of [2, 0, 3, 1]) tokens.set(i, yield* coordinator.createCheckpoint(runId, i))
        yield* coordinator.createCheckpoint(otherRun, 0)
        const batches = (list: ReadonlyArray<CheckpointToken>) => list.map((token) => token.batchIndex)
        assert.deepStrictEqual(batches(yield* coordinator.getPendingCheckpoints(runId)), [0, 1, 2, 3])
        assert.deepStrictEqual(batches(yield* coordinator.getPendingCheckpoints(otherRun)), [0])
        assert.deepStrictEqual(yield* coordinator.getPendingCheckpoints(freshRun()), [])
        yield* coordinator.completeCheckpoint(tokens.get(1)!, "one")
        assert.deepStrictEqual(batches(yield* coordinator.getPendingCheckpoints(runId)), [0, 2, 3])
        yield* coordinator.failCheckpoint(tokens.get(3)!, "three")
        assert.deepStrictEqual(batches(yield* coordinator.getPendingCheckpoints(runId)), [0, 2])
        yield* coordinator.awaitCheckpoint(tokens.get(1)!)
        assert.deepStrictEqual(batches(yield* coordinator.getPendingCheckpoints(runId)), [0, 2])
        const pending = yield* coordinator.getPendingCheckpoints(runId)
        assert.isTrue(Equal.equals(pending[0], tokens.get(0)))
      }).pipe(Effect.provide(target.layer())))

    test("idempotency: the same outcome twice is a no-op; a different one is a CheckpointConflict", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        const done = yield* coordinator.createCheckpoint(runId, 0)
        yield* coordinator.completeCheckpoint(done, { a: 1, b: [1, 2] })
        // The same result, keys in another order: still the same outcome.
        yield* coordinator.completeCheckpoint(done, { b: [1, 2], a: 1 })
        const different = yield* Effect.flip(coordinator.completeCheckpoint(done, { a: 2, b: [1, 2] }))
        assert.strictEqual(different._tag, "CheckpointConflict")
        if (different._tag === "CheckpointConflict") {
          assert.strictEqual(different.existing, "completed")
          assert.strictEqual(different.attempted, "completed")
        }
        const failAfter = yield* Effect.flip(coordinator.failCheckpoint(done, "late"))
        assert.strictEqual(failAfter._tag, "CheckpointConflict")
        if (failAfter._tag === "CheckpointConflict") {
          assert.strictEqual(failAfter.existing, "completed")
          assert.strictEqual(failAfter.attempted, "failed")
        }
        // The first outcome stands.
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(done), { a: 1, b: [1, 2] })

        const failed = yield* coordinator.createCheckpoint(runId, 1)
        yield* coordinator.failCheckpoint(failed, { reason: "x" })
        yield* coordinator.failCheckpoint(failed, { reason: "x" })
        const completeAfter = yield* Effect.flip(coordinator.completeCheckpoint(failed, "fine"))
        assert.strictEqual(completeAfter._tag, "CheckpointConflict")
        if (completeAfter._tag === "CheckpointConflict") {
          assert.strictEqual(completeAfter.existing, "failed")
          assert.strictEqual(completeAfter.attempted, "completed")
        }
        const otherError = yield* Effect.flip(coordinator.failCheckpoint(failed, { reason: "y" }))
        assert.strictEqual(otherError._tag, "CheckpointConflict")
        const error = yield* Effect.flip(coordinator.awaitCheckpoint(failed))
        assert.strictEqual(error._tag, "CheckpointFailed")
        if (error._tag === "CheckpointFailed") assert.deepStrictEqual(error.error, { reason: "x" })
      }).pipe(Effect.provide(target.layer())))

    test("concurrent completions: one outcome wins; repeats of it succeed, the others conflict", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const attempts = Array.from({ length: 12 }, (_, i) => ({ value: i % 3 }))
        const exits = yield* Effect.forEach(
          attempts,
          (result) => Effect.exit(coordinator.completeCheckpoint(token, result)),
          { concurrency: "unbounded" }
        )
        const winner = (yield* coordinator.awaitCheckpoint(token)) as { value: number }
        exits.forEach((exit, i) => {
          if (attempts[i]!.value === winner.value) assert.isTrue(Exit.isSuccess(exit), `attempt ${i} should succeed`)
          else assert.isTrue(Exit.isFailure(exit), `attempt ${i} should conflict`)
        })
        assert.strictEqual(exits.filter(Exit.isSuccess).length, 4)
      }).pipe(Effect.provide(target.layer())))

    test("concurrent creates of one (run, batch) yield one token", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        const tokens = yield* Effect.forEach(
          Array.from({ length: 10 }, () => 5),
          (i) => coordinator.createCheckpoint(runId, i),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(new Set(tokens.map((token) => token.id)).size, 1)
        assert.strictEqual((yield* coordinator.getPendingCheckpoints(runId)).length, 1)
      }).pipe(Effect.provide(target.layer())))

    test("unknown tokens: CheckpointNotFound; bad batch indexes are defects", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = stranger(freshRun())
        assert.strictEqual((yield* Effect.flip(coordinator.awaitCheckpoint(token)))._tag, "CheckpointNotFound")
        assert.strictEqual((yield* Effect.flip(coordinator.completeCheckpoint(token, 1)))._tag, "CheckpointNotFound")
        assert.strictEqual((yield* Effect.flip(coordinator.failCheckpoint(token, 1)))._tag, "CheckpointNotFound")
        assert.strictEqual((yield* Effect.flip(coordinator.pollCheckpoint(token)))._tag, "CheckpointNotFound")
        const exit = yield* Effect.exit(coordinator.createCheckpoint("r", -1))
        assert.isTrue(Exit.isFailure(exit) && Exit.causeOption(exit).pipe(Option.isSome))
        assert.match(String(Exit.isFailure(exit) ? exit.cause : ""), /non-negative integer/)
      }).pipe(Effect.provide(target.layer())))

    test("checkpoint → await → progress: progress moves only after each await", () =>
      Effect.gen(function* () {
        const runId = freshRun()
        const progress = yield* Ref.make(0)
        for (let i = 0; i < 5; i++) {
          yield* runBatch(runId, i, true, progress)
          assert.strictEqual(yield* Ref.get(progress), i + 1)
        }
        const coordinator = yield* CheckpointCoordinator
        assert.deepStrictEqual(yield* coordinator.getPendingCheckpoints(runId), [])
      }).pipe(Effect.provide(target.layer())))

    test("a failed checkpoint blocks progress: the run stops at that batch", () =>
      Effect.gen(function* () {
        const runId = freshRun()
        const progress = yield* Ref.make(0)
        const ran = yield* Ref.make<ReadonlyArray<number>>([])
        const run = Effect.forEach([0, 1, 2, 3, 4], (i) =>
          Effect.zipRight(
            Ref.update(ran, (r) => [...r, i]),
            runBatch(runId, i, i !== 2, progress)
          )
        )
        const error = yield* Effect.flip(run)
        assert.strictEqual(error._tag, "CheckpointFailed")
        if (error._tag === "CheckpointFailed") {
          assert.strictEqual(error.token.batchIndex, 2)
          assert.deepStrictEqual(error.error, { batch: 2, reason: "save failed" })
        }
        assert.strictEqual(yield* Ref.get(progress), 2)
        assert.deepStrictEqual(yield* Ref.get(ran), [0, 1, 2])
      }).pipe(Effect.provide(target.layer())))

    test("a progress updater waiting on a checkpoint never records progress when it fails", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const progress = yield* Ref.make(0)
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const updater = yield* Effect.fork(
          Effect.zipRight(coordinator.awaitCheckpoint(token), Ref.set(progress, 1)).pipe(Effect.exit)
        )
        yield* assertStillPending(token)
        assert.strictEqual(yield* Ref.get(progress), 0)
        yield* coordinator.failCheckpoint(token, "nope")
        const exit = yield* Fiber.join(updater)
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual(yield* Ref.get(progress), 0)
      }).pipe(Effect.provide(target.layer())))

    test("typed: results encoded and decoded with a Schema", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const Saved = Schema.Struct({ count: Schema.NumberFromString, at: Schema.DateFromString })
        const checkpoints = typed(Saved)
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const at = new Date("2024-05-01T10:00:00.000Z")
        yield* checkpoints.complete(token, { count: 3, at })
        const decoded = yield* checkpoints.await(token)
        assert.strictEqual(decoded.count, 3)
        assert.strictEqual(decoded.at.getTime(), at.getTime())
      }).pipe(Effect.provide(target.layer())))
  })
}

const countRows = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ n: number }>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(query(sql), (rows) => Number(rows[0]?.n ?? 0)))

/** What only the SQL layer promises, on one storage backend. */
export const durableCheckpointSuite = (backend: Backend) => {
  const layer = () => sqlLayer(backend.storage())

  describe(`SqlCheckpointCoordinator [${backend.name}]`, () => {
    it.live("completing inside the caller's transaction commits with it, event included", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE test_batches (run_id text, batch_index integer)`
        const runId = freshRun()
        const token = yield* coordinator.createCheckpoint(runId, 0)
        yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* sql`INSERT INTO test_batches (run_id, batch_index) VALUES (${runId}, 0)`
            yield* coordinator.completeCheckpoint(token, { saved: 1 })
          })
        )
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(token), { saved: 1 })
        assert.strictEqual(yield* countRows((sql) => sql`SELECT count(*) AS n FROM test_batches`), 1)
        const events = yield* sql<{ kind: string; run_id: string; namespace: string; tags: string; outcome: string }>`
          SELECT kind, run_id, namespace, tags, outcome FROM baton_completions`
        assert.deepStrictEqual(events, [
          { kind: "checkpoint.completed", run_id: runId, namespace: "default", tags: "[]", outcome: "succeeded" }
        ])
        // A repeat is a no-op: no second event.
        yield* coordinator.completeCheckpoint(token, { saved: 1 })
        const failed = yield* coordinator.createCheckpoint(runId, 1)
        yield* coordinator.failCheckpoint(failed, "x")
        const kinds = yield* sql<{ kind: string; outcome: string }>`SELECT kind, outcome FROM baton_completions
          ORDER BY seq`
        assert.deepStrictEqual(kinds, [
          { kind: "checkpoint.completed", outcome: "succeeded" },
          { kind: "checkpoint.failed", outcome: "failed" }
        ])
      }).pipe(Effect.provide(layer()))
    )

    it.live("a rolled-back transaction leaves the checkpoint pending, and no event", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE test_batches (run_id text, batch_index integer)`
        const runId = freshRun()
        const token = yield* coordinator.createCheckpoint(runId, 0)
        const error = yield* sql
          .withTransaction(
            Effect.gen(function* () {
              yield* sql`INSERT INTO test_batches (run_id, batch_index) VALUES (${runId}, 0)`
              yield* coordinator.completeCheckpoint(token, { saved: 1 })
              // Inside the transaction, the completion is visible to the transaction itself.
              assert.strictEqual((yield* coordinator.pollCheckpoint(token))._tag, "Completed")
              return yield* Effect.fail("save failed" as const)
            })
          )
          .pipe(Effect.flip)
        assert.strictEqual(error, "save failed")
        assert.strictEqual((yield* coordinator.pollCheckpoint(token))._tag, "Pending")
        assert.deepStrictEqual(
          (yield* coordinator.getPendingCheckpoints(runId)).map((t) => t.id),
          [token.id]
        )
        assert.strictEqual(yield* countRows((sql) => sql`SELECT count(*) AS n FROM test_batches`), 0)
        assert.strictEqual(yield* countRows((sql) => sql`SELECT count(*) AS n FROM baton_completions`), 0)
        const timedOut = yield* Effect.flip(coordinator.awaitCheckpoint(token, { timeout: "50 millis" }))
        assert.strictEqual(timedOut._tag, "CheckpointTimeout")
        // The checkpoint can still be completed afterwards, with another result.
        yield* coordinator.completeCheckpoint(token, { saved: 2 })
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(token), { saved: 2 })
      }).pipe(Effect.provide(layer()))
    )

    it.live("a waiter sees a completion made in a transaction only once it commits, never if it rolls back", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const sql = yield* SqlClient.SqlClient
        const runId = freshRun()
        for (const commit of [false, true]) {
          const token = yield* coordinator.createCheckpoint(runId, commit ? 1 : 0)
          const waiter = yield* Effect.fork(Effect.either(coordinator.awaitCheckpoint(token)))
          const completedInside = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const transaction = yield* Effect.fork(
            sql
              .withTransaction(
                Effect.gen(function* () {
                  yield* coordinator.completeCheckpoint(token, "inside")
                  yield* Deferred.succeed(completedInside, undefined)
                  yield* Deferred.await(release)
                  if (!commit) return yield* Effect.fail("rollback" as const)
                })
              )
              .pipe(Effect.either)
          )
          yield* Deferred.await(completedInside)
          // The transaction is open: the waiter must not have been told.
          assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)))
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(transaction)
          if (commit) {
            const result = yield* Fiber.join(waiter)
            assert.deepStrictEqual(result, Either.right("inside"))
          } else {
            // Rolled back: still pending, the waiter still waits.
            const timedOut = yield* Effect.flip(coordinator.awaitCheckpoint(token, { timeout: "60 millis" }))
            assert.strictEqual(timedOut._tag, "CheckpointTimeout")
            assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)))
            yield* Fiber.interrupt(waiter)
          }
        }
      }).pipe(Effect.provide(layer()))
    )

    it.live("a large result (not kept in the local cache) is read back from the row", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const token = yield* coordinator.createCheckpoint(freshRun(), 0)
        const result = { rows: Array.from({ length: 2_000 }, (_, i) => ({ i, name: `document-${i}` })) }
        yield* coordinator.completeCheckpoint(token, result)
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(token), result)
        assert.deepStrictEqual(yield* coordinator.awaitCheckpoint(token), result)
      }).pipe(Effect.provide(layer()))
    )

    it.live("concurrent completions append exactly one event", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const runId = freshRun()
        const token = yield* coordinator.createCheckpoint(runId, 0)
        yield* Effect.forEach(
          Array.from({ length: 8 }, () => "same"),
          (result) => coordinator.completeCheckpoint(token, result),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(
          yield* countRows((sql) => sql`SELECT count(*) AS n FROM baton_completions WHERE run_id = ${runId}`),
          1
        )
      }).pipe(Effect.provide(layer()))
    )

    it.live("creating inside a rolled-back transaction leaves nothing", () =>
      Effect.gen(function* () {
        const coordinator = yield* CheckpointCoordinator
        const sql = yield* SqlClient.SqlClient
        const runId = freshRun()
        const token = yield* sql
          .withTransaction(
            Effect.flatMap(coordinator.createCheckpoint(runId, 0), (t) => Effect.fail({ _tag: "Abort", token: t }))
          )
          .pipe(
            Effect.flip,
            Effect.flatMap((error) => (error._tag === "Abort" ? Effect.succeed(error.token) : Effect.fail(error)))
          )
        assert.isTrue(Option.isNone(yield* coordinator.findCheckpoint(runId, 0)))
        assert.strictEqual((yield* Effect.flip(coordinator.awaitCheckpoint(token)))._tag, "CheckpointNotFound")
      }).pipe(Effect.provide(layer()))
    )

    if (backend.name === "pg") {
      it.live(
        "asyncCreate: the setting stays local to the creating statement, never the connection or the caller's transaction",
        () =>
          Effect.gen(function* () {
            const coordinator = yield* CheckpointCoordinator
            const sql = yield* SqlClient.SqlClient
            const runId = freshRun()
            const token = yield* coordinator.createCheckpoint(runId, 0)
            // One pooled connection: the next statement runs on the very connection that created the checkpoint.
            const setting = yield* sql<{ s: string }>`SELECT current_setting('synchronous_commit') AS s`
            assert.strictEqual(setting[0]!.s, "on")
            assert.strictEqual((yield* coordinator.createCheckpoint(runId, 0)).id, token.id)
            // Inside a caller's transaction the plain insert is used: the caller's commit stays synchronous.
            const inside = yield* sql.withTransaction(
              Effect.zipLeft(
                coordinator.createCheckpoint(runId, 1),
                Effect.flatMap(sql<{ s: string }>`SELECT current_setting('synchronous_commit') AS s`, (rows) =>
                  Effect.sync(() => assert.strictEqual(rows[0]!.s, "on"))
                )
              )
            )
            yield* coordinator.completeCheckpoint(token, "a")
            yield* coordinator.completeCheckpoint(inside, "b")
            assert.strictEqual(yield* coordinator.awaitCheckpoint(token), "a")
            assert.strictEqual(yield* coordinator.awaitCheckpoint(inside), "b")
          }).pipe(
            Effect.provide(
              SqlCheckpointCoordinator.layerWith({ asyncCreate: true }).pipe(
                Layer.provideMerge(
                  Storage.layerPg({
                    url: pgUrl(),
                    schema: `bt_cp_async_${process.pid}_${Date.now().toString(36)}`,
                    maxConnections: 1
                  })
                )
              )
            )
          )
      )
    }

    if (backend.name === "memory") return

    it.live("a restart shows where a run stopped (same database, new layer)", () =>
      Effect.gen(function* () {
        const shared = sharedStorage(backend.name === "pg" ? "pg" : "sqlite")
        const runId = freshRun()
        const before = yield* Effect.gen(function* () {
          const coordinator = yield* CheckpointCoordinator
          const tokens = yield* Effect.forEach([0, 1, 2, 3], (i) => coordinator.createCheckpoint(runId, i))
          yield* coordinator.completeCheckpoint(tokens[0]!, "zero")
          yield* coordinator.completeCheckpoint(tokens[1]!, "one")
          yield* coordinator.failCheckpoint(tokens[3]!, "three")
          return tokens
        }).pipe(Effect.provide(sqlLayer(shared.layer)))
        // The first layer (and its pool / file handle) is closed; open the same storage again.
        yield* Effect.gen(function* () {
          const coordinator = yield* CheckpointCoordinator
          const pending = yield* coordinator.getPendingCheckpoints(runId)
          assert.deepStrictEqual(
            pending.map((t) => t.batchIndex),
            [2]
          )
          assert.isTrue(Equal.equals(pending[0], before[2]))
          const found = yield* coordinator.findCheckpoint(runId, 1)
          assert.isTrue(Option.isSome(found) && Equal.equals(found.value, before[1]))
          assert.strictEqual(yield* coordinator.awaitCheckpoint(before[1]!), "one")
          const failed = yield* Effect.flip(coordinator.awaitCheckpoint(before[3]!))
          assert.strictEqual(failed._tag, "CheckpointFailed")
          // Creating again after the restart returns the same token.
          const again = yield* coordinator.createCheckpoint(runId, 2)
          assert.strictEqual(again.id, before[2]!.id)
        }).pipe(Effect.provide(sqlLayer(storageFromDescriptor(shared.descriptor))))
      })
    )

    it.live("another process awaits; this one completes", () =>
      Effect.gen(function* () {
        const shared = sharedStorage(backend.name === "pg" ? "pg" : "sqlite")
        yield* Effect.gen(function* () {
          const coordinator = yield* CheckpointCoordinator
          const runId = freshRun()
          const token = yield* coordinator.createCheckpoint(runId, 4)
          const second = yield* coordinator.createCheckpoint(runId, 5)
          // Both awaiting processes start at once (start-up is most of their time); each waits on its own checkpoint.
          const child = spawnFixture("checkpoint-await.ts", shared.descriptor, {}, [
            JSON.stringify(yield* Schema.encode(CheckpointToken)(token))
          ])
          yield* Effect.addFinalizer(() => Effect.sync(() => child.kill()))
          const child2 = spawnFixture("checkpoint-await.ts", shared.descriptor, {}, [
            JSON.stringify(yield* Schema.encode(CheckpointToken)(second))
          ])
          yield* Effect.addFinalizer(() => Effect.sync(() => child2.kill()))
          // The child confirmed the checkpoint is pending and is now waiting on it.
          yield* Effect.promise(() => child.waitForLine("waiting"))
          yield* coordinator.completeCheckpoint(token, { from: "parent", n: 42 })
          const line = yield* Effect.promise(() => child.waitForLine(/^result /))
          assert.deepStrictEqual(JSON.parse(line.slice("result ".length)), { from: "parent", n: 42 })
          assert.strictEqual(yield* Effect.promise(() => child.exited), 0)
          // And a failure, through the same path.
          yield* Effect.promise(() => child2.waitForLine("waiting"))
          yield* coordinator.failCheckpoint(second, { reason: "parent says no" })
          const failedLine = yield* Effect.promise(() => child2.waitForLine(/^failed /))
          assert.deepStrictEqual(JSON.parse(failedLine.slice("failed ".length)), { reason: "parent says no" })
        }).pipe(Effect.scoped, Effect.provide(sqlLayer(shared.layer)))
      })
    )

    it.live("with the completion stream, a waiter wakes on another process's completion event, not the poll", () =>
      Effect.gen(function* () {
        const shared = sharedStorage(backend.name === "pg" ? "pg" : "sqlite")
        // The row is re-read only every 10 minutes, so only the event can wake the waiter within the test. The await
        // timeout is generous: a transaction open anywhere in the cluster holds Postgres delivery back (the (xid, seq)
        // horizon), and other suites share the server.
        const layer = SqlCheckpointCoordinator.layerWithCompletions({
          pollMin: "10 minutes",
          pollMax: "10 minutes"
        }).pipe(Layer.provide(SqlCompletionBackend.layer), Layer.provideMerge(shared.layer))
        yield* Effect.gen(function* () {
          const coordinator = yield* CheckpointCoordinator
          const token = yield* coordinator.createCheckpoint(freshRun(), 0)
          const waiter = yield* Effect.fork(coordinator.awaitCheckpoint(token, { timeout: "45 seconds" }))
          const child = spawnFixture("checkpoint-complete.ts", shared.descriptor, {}, [
            JSON.stringify(yield* Schema.encode(CheckpointToken)(token)),
            "fail",
            JSON.stringify("from the child")
          ])
          yield* Effect.addFinalizer(() => Effect.sync(() => child.kill()))
          const error = yield* Effect.flip(Fiber.join(waiter))
          assert.strictEqual(error._tag, "CheckpointFailed")
          if (error._tag === "CheckpointFailed") assert.strictEqual(error.error, "from the child")
        }).pipe(Effect.scoped, Effect.provide(layer))
      })
    )

    it.live("this process awaits; another one completes (in its own transaction)", () =>
      Effect.gen(function* () {
        const shared = sharedStorage(backend.name === "pg" ? "pg" : "sqlite")
        yield* Effect.gen(function* () {
          const coordinator = yield* CheckpointCoordinator
          const runId = freshRun()
          const token = yield* coordinator.createCheckpoint(runId, 0)
          const waiter = yield* Effect.fork(coordinator.awaitCheckpoint(token))
          yield* Effect.yieldNow()
          assert.isTrue(Option.isNone(yield* Fiber.poll(waiter)))
          const encoded = JSON.stringify(yield* Schema.encode(CheckpointToken)(token))
          const child = spawnFixture("checkpoint-complete.ts", shared.descriptor, {}, [
            encoded,
            "complete",
            JSON.stringify({ from: "child" })
          ])
          yield* Effect.addFinalizer(() => Effect.sync(() => child.kill()))
          assert.deepStrictEqual(yield* Fiber.join(waiter), { from: "child" })
          yield* Effect.promise(() => child.waitForLine("done"))
          assert.strictEqual(yield* Effect.promise(() => child.exited), 0)
        }).pipe(Effect.scoped, Effect.provide(sqlLayer(shared.layer)))
      })
    )
  })
}
