/**
 * The reference for the extraction runs: the same corpus, read the way `baton run extract` reads it, extracted by an
 * uninterrupted run of the real workflow (in this process, on SQLite `:memory:`, with an in-process worker). A run
 * that went through the chaos must end with exactly these rows (the run id aside).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Baton from "../../src/Baton.js"
import * as ExtractionWorkflow from "../../src/extraction/ExtractionWorkflow.js"
import { directoryCorpus } from "../../src/cli/corpus.js"
import * as Worker from "../../src/Worker.js"

/** A run's saved rows, normalised for comparison (no run id, no timestamps, numbers as numbers). */
export interface RunRows {
  readonly documents: ReadonlyArray<string>
  readonly batches: ReadonlyArray<string>
}

/** Reads a run's saved documents and batches (the same statement on every backend). */
export const readRunRows = (runId: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const documents = yield* sql<Record<string, unknown>>`SELECT doc_index, batch_index, path, format, bytes, title,
      word_count, headings, links, emails, dates, code_languages, keywords
      FROM baton_extract_documents WHERE run_id = ${runId} ORDER BY doc_index`
    const batches = yield* sql<Record<string, unknown>>`SELECT batch_index, documents, bytes, words, summary
      FROM baton_extract_batches WHERE run_id = ${runId} ORDER BY batch_index`
    const normalise = (row: Record<string, unknown>) =>
      JSON.stringify(
        Object.fromEntries(
          Object.entries(row).map(([key, value]) => [key, typeof value === "bigint" ? Number(value) : value])
        )
      )
    return { documents: documents.map(normalise), batches: batches.map(normalise) } satisfies RunRows
  })

/** Runs the extraction of `dir` uninterrupted and returns its rows. */
export const referenceRun = (dir: string, batchSize: number): Promise<RunRows> =>
  Effect.runPromise(
    Effect.gen(function* () {
      const corpus = yield* directoryCorpus({ dir })
      const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
      yield* Worker.run({ tasks: ExtractionWorkflow.tasks, concurrency: 8 })
      yield* workflow.run({ documents: corpus.documents, batchSize, runId: "reference" })
      return yield* readRunRows("reference")
    }).pipe(Effect.scoped, Effect.provide(ExtractionWorkflow.layer.pipe(Layer.provideMerge(Baton.layerMemory))))
  )
