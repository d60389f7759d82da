/**
 * ExtractionWorkflow on every backend, with in-process workers:
 * - the results of a run are exactly the pure extraction of its documents (per document and per batch);
 * - per batch, the calls happen in the order create → complete (with the save) → confirmed → progress, and the
 *   checkpoint row is completed when progress moves;
 * - pending checkpoints are visible while a batch is in flight;
 * - a failing batch blocks progress and fails the run; resume redoes it under a new scope and ends with the results
 *   of an uninterrupted run;
 * - a driver interrupted mid-batch resumes without a second chord for that batch, and two drivers on one run store
 *   every batch once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Pg from "pg"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import { extractDocument, mergeBatch } from "../src/extraction/Extract.js"
import * as ExtractionWorkflow from "../src/extraction/ExtractionWorkflow.js"
import { coreLayer, servicesLayer } from "../src/cli/layers.js"
import { RunService } from "../src/RunService.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import * as Worker from "../src/Worker.js"
import { corpusDocuments } from "./fixtures/workflow-corpus.js"
import * as Backends from "./support/backends.js"

const batchSize = 4
const documents = corpusDocuments(22) // 6 batches, the last one short
const totalBatches = Math.ceil(documents.length / batchSize)

const expectedDocuments = documents.map((doc, i) => ({
  ...extractDocument(doc.path, doc.content),
  docIndex: i,
  batchIndex: Math.floor(i / batchSize)
}))
const expectedBatches = Array.from({ length: totalBatches }, (_, b) =>
  mergeBatch(documents.slice(b * batchSize, (b + 1) * batchSize).map((doc) => extractDocument(doc.path, doc.content)))
)

const worker = (tasks: ReadonlyArray<Task.AnyTask> = ExtractionWorkflow.tasks) =>
  Worker.run({
    tasks,
    concurrency: 4,
    pollInterval: { min: "5 millis", max: "50 millis" },
    shutdownGracePeriod: "1 second"
  })

/** An extract task (same name) whose handler first passes `gate` for the given paths. */
const gatedExtract = (paths: ReadonlySet<string>, gate: Effect.Effect<void>) =>
  Task.make(ExtractionWorkflow.ExtractDocument.name, {
    payload: ExtractionWorkflow.ExtractDocument.payload,
    success: ExtractionWorkflow.ExtractDocument.success,
    handler: ({ content, path }) =>
      Effect.zipRight(
        paths.has(path) ? gate : Effect.void,
        Effect.sync(() => extractDocument(path, content))
      )
  })

/** An extract task (same name) that always fails for one path. */
const failingExtract = (badPath: string) =>
  Task.make(ExtractionWorkflow.ExtractDocument.name, {
    payload: ExtractionWorkflow.ExtractDocument.payload,
    success: ExtractionWorkflow.ExtractDocument.success,
    failure: Schema.String,
    handler: ({ content, path }) =>
      path === badPath ? Effect.fail(`cannot read ${path}`) : Effect.sync(() => extractDocument(path, content))
  })

const assertResults = (runId: string) =>
  Effect.gen(function* () {
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    const saved = yield* workflow.documents(runId)
    assert.deepStrictEqual(
      saved.map(({ runId: _, ...rest }) => rest),
      expectedDocuments
    )
    const batches = yield* workflow.batches(runId)
    assert.deepStrictEqual(
      batches.map((batch) => batch.batchIndex),
      expectedBatches.map((_, i) => i)
    )
    assert.deepStrictEqual(
      batches.map((batch) => batch.summary),
      expectedBatches
    )
    assert.deepStrictEqual(
      yield* workflow.summary(runId),
      mergeBatch(expectedDocuments.map(({ batchIndex: _b, docIndex: _d, ...e }) => e))
    )
  })

const countRows = (query: "chords" | "batches" | "documents", runId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const statement =
      query === "chords"
        ? sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords WHERE idempotency_key LIKE ${`extract:${runId}%`}`
        : query === "batches"
          ? sql<{ n: number }>`SELECT count(*) AS n FROM baton_extract_batches WHERE run_id = ${runId}`
          : sql<{ n: number }>`SELECT count(*) AS n FROM baton_extract_documents WHERE run_id = ${runId}`
    return Effect.map(statement, (rows) => Number(rows[0]?.n ?? 0))
  })

for (const backend of Backends.all()) {
  const layer = () => servicesLayer(backend.storage())

  describe(`ExtractionWorkflow [${backend.name}]`, () => {
    it.live("a run stores exactly the pure extraction of its documents, then succeeds", () =>
      Effect.gen(function* () {
        yield* worker()
        const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
        const result = yield* workflow.run({ documents, batchSize, runId: "full", source: "fixture" })
        assert.strictEqual(result.runId, "full")
        assert.strictEqual(result.batches, totalBatches)
        assert.strictEqual(result.documents, documents.length)
        const run = yield* Effect.flatMap(RunService, (runs) => runs.getRun("full"))
        assert.strictEqual(run.state, "succeeded")
        assert.strictEqual(run.completedBatches, totalBatches)
        assert.deepStrictEqual(run.metadata, { batchSize, totalDocuments: documents.length, source: "fixture" })
        yield* assertResults("full")
        const progress = yield* workflow.progress("full")
        assert.strictEqual(progress.documentsDone, documents.length)
        // Running a succeeded run again returns its result and changes nothing, whatever the documents say now.
        const again = yield* workflow.run({
          documents: [...documents, { path: "late.md", content: "# Late" }],
          batchSize: 2,
          runId: "full"
        })
        assert.deepStrictEqual(again, result)
        const inputs = yield* Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_extract_inputs WHERE run_id = 'full'`
        )
        assert.strictEqual(Number(inputs[0]?.n), documents.length)
        assert.strictEqual(yield* countRows("chords", "full"), totalBatches)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("per batch: create → complete → confirmed → progress, with the checkpoint row completed", () =>
      Effect.gen(function* () {
        const log: Array<string> = []
        const instrumented = Layer.mergeAll(
          Layer.effect(
            CheckpointCoordinator,
            Effect.map(CheckpointCoordinator, (real) => ({
              ...real,
              createCheckpoint: (runId: string, i: number) =>
                Effect.tap(real.createCheckpoint(runId, i), () => log.push(`create ${i}`)),
              completeCheckpoint: (token: Parameters<typeof real.completeCheckpoint>[0], result: unknown) =>
                Effect.tap(real.completeCheckpoint(token, result), () => log.push(`complete ${token.batchIndex}`)),
              failCheckpoint: (token: Parameters<typeof real.failCheckpoint>[0], error: unknown) =>
                Effect.tap(real.failCheckpoint(token, error), () => log.push(`fail ${token.batchIndex}`)),
              awaitCheckpoint: (token: Parameters<typeof real.awaitCheckpoint>[0]) =>
                Effect.tap(real.awaitCheckpoint(token), () => log.push(`confirmed ${token.batchIndex}`))
            }))
          ),
          Layer.effect(
            RunService,
            Effect.gen(function* () {
              const real = yield* RunService
              const sql = yield* SqlClient.SqlClient
              return {
                ...real,
                updateProgress: (runId: string, completed: number, total: number) =>
                  Effect.gen(function* () {
                    const rows = yield* sql<{ status: string }>`SELECT status FROM baton_checkpoints
                      WHERE run_id = ${runId} AND batch_index = ${completed - 1}`
                    log.push(`progress ${completed} [${rows.map((row) => row.status).join(",")}]`)
                    return yield* real.updateProgress(runId, completed, total)
                  })
              }
            })
          )
        )
        const instrumentedLayer = ExtractionWorkflow.layer.pipe(
          Layer.provide(instrumented),
          Layer.provideMerge(coreLayer(backend.storage()))
        )
        yield* Effect.gen(function* () {
          yield* worker()
          const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
          yield* workflow.run({ documents, batchSize, runId: "ordered" })
        }).pipe(Effect.scoped, Effect.provide(instrumentedLayer))
        const expected = Array.from({ length: totalBatches }, (_, i) => [
          `create ${i}`,
          `complete ${i}`,
          `confirmed ${i}`,
          `progress ${i + 1} [completed]`
        ]).flat()
        assert.deepStrictEqual(log, expected)
      })
    )

    it.live("pending checkpoints are visible while a batch is in flight", () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const batch2 = new Set(documents.slice(2 * batchSize, 3 * batchSize).map((doc) => doc.path))
        yield* worker([gatedExtract(batch2, Deferred.await(gate)), ExtractionWorkflow.MergeBatch])
        const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
        const checkpoints = yield* CheckpointCoordinator
        const runs = yield* RunService
        const fiber = yield* Effect.fork(workflow.run({ documents, batchSize, runId: "watched" }))
        yield* Backends.eventually(
          Effect.map(checkpoints.getPendingCheckpoints("watched"), (pending) =>
            pending.some((t) => t.batchIndex === 2)
          ),
          "batch 2 pending"
        )
        const pending = yield* checkpoints.getPendingCheckpoints("watched")
        assert.deepStrictEqual(
          pending.map((token) => [token.runId, token.batchIndex]),
          [["watched", 2]]
        )
        const run = yield* runs.getRun("watched")
        assert.strictEqual(run.completedBatches, 2)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(fiber)
        assert.deepStrictEqual(yield* checkpoints.getPendingCheckpoints("watched"), [])
        yield* assertResults("watched")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live(
      "a failing batch blocks progress and fails the run; resume redoes it and matches an uninterrupted run",
      () =>
        Effect.gen(function* () {
          const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
          const checkpoints = yield* CheckpointCoordinator
          const runs = yield* RunService
          const bad = documents[3 * batchSize + 1]!.path
          const error = yield* Effect.scoped(
            Effect.gen(function* () {
              yield* worker([failingExtract(bad), ExtractionWorkflow.MergeBatch])
              return yield* Effect.flip(workflow.run({ documents, batchSize, runId: "broken" }))
            })
          )
          assert.strictEqual(error._tag, "ExtractionFailed")
          assert.strictEqual(error._tag === "ExtractionFailed" && error.batchIndex, 3)
          assert.match(error.message, /cannot read/)
          const failed = yield* runs.getRun("broken")
          assert.strictEqual(failed.state, "failed")
          assert.strictEqual(failed.completedBatches, 3)
          assert.match(failed.error ?? "", /batch 3/)
          const token = yield* checkpoints.findCheckpoint("broken", 3)
          assert.strictEqual(token._tag, "Some")
          const status = yield* checkpoints.pollCheckpoint(token._tag === "Some" ? token.value : (undefined as never))
          assert.strictEqual(status._tag, "Failed")
          assert.strictEqual(yield* countRows("batches", "broken"), 3)
          assert.strictEqual(yield* countRows("documents", "broken"), 3 * batchSize)
          // Progress cannot be forced past the failed checkpoint either.
          const forced = yield* Effect.flip(runs.updateProgress("broken", 4, totalBatches))
          assert.strictEqual(forced._tag, "ProgressRefused")

          // Fixed worker, resume: batch 3 is redone under scope "broken#1".
          yield* Effect.scoped(
            Effect.gen(function* () {
              yield* worker()
              const result = yield* workflow.resume("broken")
              assert.strictEqual(result.documents, documents.length)
            })
          )
          const done = yield* runs.getRun("broken")
          assert.strictEqual(done.state, "succeeded")
          assert.strictEqual(done.attempt, 2)
          assert.deepStrictEqual(done.checkpointScopes, ["broken", "broken#1"])
          const redone = yield* checkpoints.findCheckpoint("broken#1", 3)
          assert.strictEqual(redone._tag, "Some")
          yield* assertResults("broken")
        }).pipe(Effect.provide(layer()))
    )

    it.live("an interrupted driver resumes at the batch in flight, reusing its chord", () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const batch1 = new Set(documents.slice(batchSize, 2 * batchSize).map((doc) => doc.path))
        yield* worker([gatedExtract(batch1, Deferred.await(gate)), ExtractionWorkflow.MergeBatch])
        const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
        const checkpoints = yield* CheckpointCoordinator
        const runs = yield* RunService
        const fiber = yield* Effect.fork(workflow.run({ documents, batchSize, runId: "cut" }))
        yield* Backends.eventually(
          Effect.map(checkpoints.getPendingCheckpoints("cut"), (pending) => pending.some((t) => t.batchIndex === 1)),
          "batch 1 in flight"
        )
        yield* Fiber.interrupt(fiber)
        const interrupted = yield* runs.getRun("cut")
        assert.strictEqual(interrupted.state, "running")
        assert.strictEqual(interrupted.completedBatches, 1)
        yield* Deferred.succeed(gate, undefined)
        yield* workflow.resume("cut")
        const run = yield* runs.getRun("cut")
        assert.strictEqual(run.state, "succeeded")
        assert.strictEqual(run.attempt, 2)
        assert.deepStrictEqual(run.checkpointScopes, ["cut"])
        assert.strictEqual(yield* countRows("chords", "cut"), totalBatches)
        yield* assertResults("cut")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("two drivers on one run: every batch stored once, same results", () =>
      Effect.gen(function* () {
        yield* worker()
        const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
        yield* workflow.start({ documents, batchSize, runId: "twice" })
        const [a, b] = yield* Effect.all([workflow.resume("twice"), workflow.resume("twice")], { concurrency: 2 })
        assert.deepStrictEqual(a.summary, b.summary)
        assert.strictEqual(yield* countRows("batches", "twice"), totalBatches)
        assert.strictEqual(yield* countRows("documents", "twice"), documents.length)
        yield* assertResults("twice")
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )
  })
}

if (Backends.pgAvailable()) {
  describe("ExtractionWorkflow [pg, connections terminated]", () => {
    // Found by `npm run chaos`: a driver exited with "database error: … not queryable" when Postgres restarted (a
    // failed ROLLBACK was a defect, and a SqlError in a batch failed the run).
    it.live(
      "the run's database connections terminated again and again: the run still succeeds, in one attempt",
      () => {
        const applicationName = `bt-conn-kill-${process.pid}-${Date.now().toString(36)}`
        const schema = `bt_${process.pid}_${Date.now().toString(36)}_connkill`
        const storage = Storage.layerPg({ url: Backends.pgUrl(), schema, maxConnections: 5, applicationName })
        return Effect.gen(function* () {
          yield* worker()
          const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
          // A connection of its own (another application_name) terminates this run's pool connections every 40 ms,
          // 60 times (then the run must be able to finish).
          const killer = new Pg.Client({ connectionString: Backends.pgUrl() })
          yield* Effect.promise(() => killer.connect())
          let terminated = 0
          const killing = yield* Effect.promise(() =>
            killer
              .query(
                "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1",
                [applicationName]
              )
              .then((result) => void (terminated += Number(result.rows[0]?.n ?? 0)))
          ).pipe(Effect.zipRight(Effect.sleep("40 millis")), Effect.repeatN(59), Effect.fork)
          const result = yield* workflow.run({ documents, batchSize, runId: "connkill" })
          yield* Fiber.join(killing)
          yield* Effect.promise(() => killer.end())
          assert.isAbove(terminated, 0)
          assert.strictEqual(result.batches, totalBatches)
          const run = yield* (yield* RunService).getRun("connkill")
          assert.strictEqual(run.state, "succeeded")
          assert.strictEqual(run.attempt, 1)
          yield* assertResults("connkill")
        }).pipe(Effect.scoped, Effect.provide(servicesLayer(storage)))
      },
      120_000
    )
  })
}
