/**
 * RunService on every backend: runs are durable, progress only moves forward and only over completed checkpoints,
 * state moves are guarded, and a failed run resumes under a new checkpoint scope.
 *
 * Checkpoint rows are written directly here (the guard reads the row, whoever wrote it), so these tests exercise the
 * guard itself; test/ExtractionWorkflow.test.ts covers it with the real CheckpointCoordinator.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { type RunState, RunService } from "../src/RunService.js"
import * as SqlRunService from "../src/SqlRunService.js"
import * as Backends from "./support/backends.js"

let counter = 0
const checkpoint = (runId: string, batchIndex: number, status: "pending" | "completed" | "failed") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const row = {
      id: `ck-${process.pid}-${counter++}`,
      run_id: runId,
      batch_index: batchIndex,
      status,
      result: status === "completed" ? "{}" : null,
      error: status === "failed" ? '"boom"' : null,
      created_at: 1,
      completed_at: status === "pending" ? null : 2
    }
    return sql`INSERT INTO baton_checkpoints ${sql.insert(row)}`
  })

const completeRow = (runId: string, batchIndex: number) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql`UPDATE baton_checkpoints SET status = 'completed', result = '{}' WHERE run_id = ${runId} AND batch_index = ${batchIndex}`
  )

for (const backend of Backends.all()) {
  const layer = () => SqlRunService.layer.pipe(Layer.provideMerge(backend.storage()))

  describe(`RunService [${backend.name}]`, () => {
    it.effect("createRun, getRun: a running run at 0 of N; the same id returns the same run", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        const run = yield* runs.createRun({ kind: "extract", totalBatches: 3, id: "r1", metadata: { a: [1, 2] } })
        assert.strictEqual(run.id, "r1")
        assert.strictEqual(run.kind, "extract")
        assert.strictEqual(run.state, "running")
        assert.strictEqual(run.completedBatches, 0)
        assert.strictEqual(run.totalBatches, 3)
        assert.strictEqual(run.attempt, 1)
        assert.strictEqual(run.checkpointScope, "r1")
        assert.deepStrictEqual(run.checkpointScopes, ["r1"])
        assert.deepStrictEqual(run.metadata, { a: [1, 2] })
        assert.isUndefined(run.finishedAt)
        assert.deepStrictEqual(yield* runs.getRun("r1"), run)
        const again = yield* runs.createRun({ kind: "other", totalBatches: 9, id: "r1" })
        assert.deepStrictEqual(again, run)
        const random = yield* runs.createRun({ kind: "extract", totalBatches: 0 })
        assert.notStrictEqual(random.id, "r1")
        const missing = yield* Effect.flip(runs.getRun("nope"))
        assert.strictEqual(missing._tag, "RunNotFound")
      }).pipe(Effect.provide(layer()))
    )

    it.effect("listRuns: newest first, filtered by state, limited", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        for (const id of ["a", "b", "c"]) {
          yield* runs.createRun({ kind: "extract", totalBatches: 1, id })
          yield* TestClock.adjust("1 millis") // distinct created_at
        }
        yield* runs.finish("b", "failed", "boom")
        assert.deepStrictEqual(
          (yield* runs.listRuns()).map((run) => run.id),
          ["c", "b", "a"]
        )
        assert.deepStrictEqual(
          (yield* runs.listRuns({ states: ["running"] })).map((run) => run.id),
          ["c", "a"]
        )
        assert.deepStrictEqual(
          (yield* runs.listRuns({ limit: 1 })).map((run) => run.id),
          ["c"]
        )
        assert.deepStrictEqual(yield* runs.listRuns({ states: [] }), [])
      }).pipe(Effect.provide(layer()))
    )

    it.effect("updateProgress moves only over completed checkpoints, names the first unconfirmed batch", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        yield* runs.createRun({ kind: "extract", totalBatches: 4, id: "p" })
        // No checkpoint row at all.
        const none = yield* Effect.flip(runs.updateProgress("p", 1, 4))
        assert.strictEqual(none._tag, "ProgressRefused")
        assert.strictEqual(none._tag === "ProgressRefused" && none.reason, "unconfirmed-checkpoint")
        assert.match(none.message, /batch 0 is not completed/)
        // A pending row.
        yield* checkpoint("p", 0, "pending")
        const pending = yield* Effect.flip(runs.updateProgress("p", 1, 4))
        assert.strictEqual(pending._tag === "ProgressRefused" && pending.reason, "unconfirmed-checkpoint")
        assert.strictEqual((yield* runs.getRun("p")).completedBatches, 0)
        // Completed: allowed.
        yield* completeRow("p", 0)
        const one = yield* runs.updateProgress("p", 1, 4)
        assert.strictEqual(one.completedBatches, 1)
        // Skipping over a failed batch is refused even if a later one is completed.
        yield* checkpoint("p", 1, "failed")
        yield* checkpoint("p", 2, "completed")
        const skip = yield* Effect.flip(runs.updateProgress("p", 3, 4))
        assert.strictEqual(skip._tag === "ProgressRefused" && skip.reason, "unconfirmed-checkpoint")
        assert.match(skip.message, /batch 1 is not completed/)
        assert.strictEqual((yield* runs.getRun("p")).completedBatches, 1)
        // Another run's completed checkpoint does not count.
        yield* checkpoint("other", 1, "completed")
        const foreign = yield* Effect.flip(runs.updateProgress("p", 2, 4))
        assert.strictEqual(foreign._tag === "ProgressRefused" && foreign.reason, "unconfirmed-checkpoint")
      }).pipe(Effect.provide(layer()))
    )

    it.effect("updateProgress: several batches at once, idempotent repeat, never backwards, never past total", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        yield* runs.createRun({ kind: "extract", totalBatches: 3, id: "q" })
        for (const i of [0, 1, 2]) yield* checkpoint("q", i, "completed")
        assert.strictEqual((yield* runs.updateProgress("q", 2, 3)).completedBatches, 2)
        const same = yield* runs.updateProgress("q", 2, 3)
        assert.strictEqual(same.completedBatches, 2)
        const back = yield* Effect.flip(runs.updateProgress("q", 1, 3))
        assert.strictEqual(back._tag === "ProgressRefused" && back.reason, "backwards")
        const past = yield* Effect.flip(runs.updateProgress("q", 4, 3))
        assert.strictEqual(past._tag === "ProgressRefused" && past.reason, "out-of-range")
        const negative = yield* Effect.flip(runs.updateProgress("q", -1, 3))
        assert.strictEqual(negative._tag === "ProgressRefused" && negative.reason, "out-of-range")
        assert.strictEqual((yield* runs.updateProgress("q", 3, 3)).completedBatches, 3)
        const missing = yield* Effect.flip(runs.updateProgress("missing", 1, 1))
        assert.strictEqual(missing._tag, "RunNotFound")
      }).pipe(Effect.provide(layer()))
    )

    it.effect("finish is guarded; progress of a finished run is refused", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        yield* runs.createRun({ kind: "extract", totalBatches: 2, id: "f" })
        yield* checkpoint("f", 0, "completed")
        const failed = yield* runs.finish("f", "failed", "batch 1: boom")
        assert.strictEqual(failed.state, "failed")
        assert.strictEqual(failed.error, "batch 1: boom")
        assert.isDefined(failed.finishedAt)
        assert.strictEqual((yield* runs.finish("f", "failed", "again")).state, "failed")
        const refused = yield* Effect.flip(runs.updateProgress("f", 1, 2))
        assert.strictEqual(refused._tag === "ProgressRefused" && refused.reason, "not-running")
        const conflict = yield* Effect.flip(runs.finish("f", "succeeded"))
        assert.strictEqual(conflict._tag, "RunStateConflict")
        // A failed run can be given up on.
        assert.strictEqual((yield* runs.finish("f", "cancelled")).state, "cancelled")
        const final = yield* Effect.flip(runs.reopen("f"))
        assert.strictEqual(final._tag, "RunStateConflict")
        yield* runs.createRun({ kind: "extract", totalBatches: 0, id: "s" })
        yield* runs.finish("s", "succeeded")
        const reopenSucceeded = yield* Effect.flip(runs.reopen("s"))
        assert.strictEqual(reopenSucceeded._tag, "RunStateConflict")
      }).pipe(Effect.provide(layer()))
    )

    it.effect("reopen: a failed run gets a new checkpoint scope; older scopes' completed checkpoints still count", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        yield* runs.createRun({ kind: "extract", totalBatches: 3, id: "g" })
        yield* checkpoint("g", 0, "completed")
        yield* checkpoint("g", 1, "failed")
        yield* runs.updateProgress("g", 1, 3)
        yield* runs.finish("g", "failed", "batch 1")
        const reopened = yield* runs.reopen("g")
        assert.strictEqual(reopened.state, "running")
        assert.strictEqual(reopened.attempt, 2)
        assert.isUndefined(reopened.error)
        assert.strictEqual(reopened.checkpointScope, "g#1")
        assert.deepStrictEqual(reopened.checkpointScopes, ["g", "g#1"])
        // Batch 1 failed in scope "g"; completed in scope "g#1" it counts.
        const blocked = yield* Effect.flip(runs.updateProgress("g", 2, 3))
        assert.strictEqual(blocked._tag === "ProgressRefused" && blocked.reason, "unconfirmed-checkpoint")
        yield* checkpoint("g#1", 1, "completed")
        assert.strictEqual((yield* runs.updateProgress("g", 2, 3)).completedBatches, 2)
        // Reopening a running run (its driver died) keeps the scope.
        const again = yield* runs.reopen("g")
        assert.strictEqual(again.attempt, 3)
        assert.strictEqual(again.checkpointScope, "g#1")
        // A scope is an exact key: "g#10" or "gg" never count for "g".
        yield* checkpoint("g#10", 2, "completed")
        yield* checkpoint("gg", 2, "completed")
        const exact = yield* Effect.flip(runs.updateProgress("g", 3, 3))
        assert.strictEqual(exact._tag === "ProgressRefused" && exact.reason, "unconfirmed-checkpoint")
      }).pipe(Effect.provide(layer()))
    )

    it.live("concurrent drivers: progress ends at the furthest confirmed batch, never goes back", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        yield* runs.createRun({ kind: "extract", totalBatches: 20, id: "c" })
        for (let i = 0; i < 20; i++) yield* checkpoint("c", i, "completed")
        const outcomes = yield* Effect.forEach(
          Array.from({ length: 40 }, (_, k) => (k % 20) + 1),
          (target) =>
            runs.updateProgress("c", target, 20).pipe(
              Effect.as("ok" as const),
              Effect.catchTag("ProgressRefused", (e) => Effect.succeed(e.reason))
            ),
          { concurrency: 8 }
        )
        for (const outcome of outcomes) assert.include(["ok", "backwards"], outcome)
        assert.strictEqual((yield* runs.getRun("c")).completedBatches, 20)
      }).pipe(Effect.provide(layer()))
    )

    if (backend.name !== "memory") {
      it.live("durable: another connection (a restarted process) sees the run and its progress", () =>
        Effect.gen(function* () {
          const descriptor = backend.describe()
          const open = () => SqlRunService.layer.pipe(Layer.provideMerge(Backends.storageFromDescriptor(descriptor)))
          yield* Effect.gen(function* () {
            const runs = yield* RunService
            yield* runs.createRun({ kind: "extract", totalBatches: 2, id: "d" })
            yield* checkpoint("d", 0, "completed")
            yield* runs.updateProgress("d", 1, 2)
          }).pipe(Effect.provide(open()))
          const run = yield* Effect.flatMap(RunService, (runs) => runs.getRun("d")).pipe(Effect.provide(open()))
          assert.strictEqual(run.completedBatches, 1)
          assert.strictEqual(run.state satisfies RunState, "running")
        })
      )
    }
  })
}
