/**
 * ExtractionWorkflow: the reference workflow. It extracts structure and statistics from a collection of documents in
 * sequential batches, fanning each batch out to workers, and records progress only after the batch's checkpoint is
 * confirmed.
 *
 * It is one use of `BatchWorkflow` (which runs the sequence below for any kind of item): documents are the items,
 * `ExtractDocument` the body, `MergeBatch` the merge, and the save step writes the batch's documents and summary.
 *
 * For each batch `i`, in order:
 * 1. `createCheckpoint(scope, i)` (the scope is the run id, or `<runId>#g` after `g` failed attempts; see RunService);
 * 2. fan the batch out as a chord: one `ExtractDocument` task per document, and the `MergeBatch` callback, which
 *    receives the extracts in document order and merges them into a `BatchSummary`;
 * 3. save the batch (its documents and its summary) and complete the checkpoint in ONE transaction; on any failure
 *    (a document that fails for good, the merge failing, the save failing) fail the checkpoint instead;
 * 4. `awaitCheckpoint`;
 * 5. only then `updateProgress(runId, i + 1, total)`.
 *
 * Guarantees:
 * - Progress is never recorded for a batch whose checkpoint is not completed (RunService re-checks the checkpoint row
 *   in the statement that moves progress), and a failed batch fails the run: progress stays where it was.
 * - Saving a batch is idempotent: `(run_id, batch_index)` and `(run_id, doc_index)` are primary keys written with
 *   `ON CONFLICT DO NOTHING`, and a checkpoint completed twice with the same result is a no-op. So a batch is stored
 *   once whoever saves it and however often (a resumed run, two drivers on one run).
 * - The run's input (every document's path and text) is stored with the run, so `resume(runId)` needs nothing but
 *   the id, in any process, on any host. It continues after the last confirmed batch: a batch confirmed but not yet
 *   recorded as progress (the driver died in between) is recorded without redoing it; a batch in flight is picked up
 *   where it is (the same checkpoint token, the same chord by idempotency key); a failed batch is redone under a new
 *   checkpoint scope. A crash at any moment costs at most the batch in flight, and a resumed run ends with exactly the
 *   results an uninterrupted run would have.
 * - Nothing here executes tasks: workers (`Worker.run({ tasks: ExtractionWorkflow.tasks })`, in this process or in
 *   others) do, and any process holding a `ChordRegistry` dispatches the merge callbacks.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Struct from "effect/Struct"
import type { CheckpointCoordinator } from "../CheckpointCoordinator.js"
import * as ChordRegistry from "../ChordRegistry.js"
import type { CompletionBackend } from "../CompletionBackend.js"
import type { ReadModel } from "../ReadModel.js"
import { BatchSummary, DocumentExtract, extractDocument, mergeBatch } from "./Extract.js"
import * as Validate from "../internal/validate.js"
import * as BatchWorkflow from "../BatchWorkflow.js"
import { type Run, type RunId, type RunNotFound, RunService, RunStateConflict } from "../RunService.js"
import * as Task from "../Task.js"
import { InvalidInput, type TaskQueue } from "../TaskQueue.js"

// ---------------------------------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Body task: extracts one document (pure; the document travels in the payload, so any host can run it).
 *
 * @category tasks
 */
export const ExtractDocument = Task.make("baton.extract.document", {
  payload: Schema.Struct({ path: Schema.String, content: Schema.String }),
  success: DocumentExtract,
  handler: ({ content, path }) => Effect.sync(() => extractDocument(path, content)),
  maxAttempts: 3,
  timeout: "2 minutes",
  backoff: { base: "200 millis", factor: 2, max: "10 seconds" }
})

/**
 * Chord callback: merges a batch's extracts (in document order) into its summary.
 *
 * @category tasks
 */
export const MergeBatch = Task.make("baton.extract.merge", {
  payload: ChordRegistry.callbackPayload(DocumentExtract, { runId: Schema.String, batchIndex: Schema.Number }),
  success: BatchSummary,
  handler: ({ results }) => Effect.sync(() => mergeBatch(results)),
  maxAttempts: 3,
  backoff: { base: "200 millis", factor: 2, max: "10 seconds" }
})

/**
 * The tasks a worker must run for this workflow: `Worker.run({ tasks: ExtractionWorkflow.tasks })`.
 *
 * @category tasks
 */
export const tasks = [ExtractDocument, MergeBatch] as const

// ---------------------------------------------------------------------------------------------------------------------
// Contract
// ---------------------------------------------------------------------------------------------------------------------

/**
 * The run kind this workflow records on its runs (`Run.kind`).
 *
 * @category constants
 */
export const kind = "extract"

/**
 * Default number of documents per batch.
 *
 * @category constants
 */
export const defaultBatchSize = 20

/**
 * A document to extract.
 *
 * @category models
 */
export interface InputDocument {
  /** A name for the document (a relative path); its extension selects Markdown, HTML or text rules. */
  readonly path: string
  readonly content: string
}

/**
 * What `run` processes.
 *
 * @category models
 */
export interface RunInput {
  readonly documents: Iterable<InputDocument>
  /** Documents per batch (default 20). */
  readonly batchSize?: number | undefined
  /** Choose the run id (default random). Running an existing id continues that run, like `resume`. */
  readonly runId?: string | undefined
  /** Where the documents came from (kept in the run's metadata, shown by the CLI). */
  readonly source?: string | undefined
}

/**
 * The workflow-specific part of a run's metadata.
 *
 * @category models
 */
export const RunMetadata = Schema.Struct({
  batchSize: Schema.Int.pipe(Schema.positive()),
  totalDocuments: Schema.NonNegativeInt,
  source: Schema.optional(Schema.String)
})
/**
 * The workflow-specific part of a run's metadata.
 *
 * @category models
 */
export interface RunMetadata extends Schema.Schema.Type<typeof RunMetadata> {}

/**
 * A finished run.
 *
 * @category models
 */
export interface RunResult {
  readonly runId: RunId
  readonly batches: number
  readonly documents: number
  /** Totals over every document of the run (computed from the saved extracts). */
  readonly summary: BatchSummary
}

/**
 * Where a run stands.
 *
 * @category models
 */
export interface Progress {
  readonly run: Run
  readonly metadata: RunMetadata
  /** Documents in saved (confirmed) batches. */
  readonly documentsDone: number
}

/**
 * One saved document extract.
 *
 * @category models
 */
export interface SavedDocument extends DocumentExtract {
  readonly runId: string
  readonly batchIndex: number
  readonly docIndex: number
}

/**
 * One saved batch summary.
 *
 * @category models
 */
export interface SavedBatch {
  readonly runId: string
  readonly batchIndex: number
  readonly summary: BatchSummary
}

/**
 * The run failed at a batch (a document that failed for good, the merge, or the save); progress stays before it.
 * The builder's `BatchWorkflow.BatchFailed` under this workflow's own tag: the same fields and message.
 *
 * @category errors
 */
export class ExtractionFailed extends Schema.TaggedError<ExtractionFailed>()(
  "ExtractionFailed",
  Struct.omit(BatchWorkflow.BatchFailed.fields, "_tag")
) {
  override get message(): string {
    return new BatchWorkflow.BatchFailed({ runId: this.runId, batchIndex: this.batchIndex, reason: this.reason })
      .message
  }
}

/**
 * The run is not an extraction run (or its metadata is unreadable).
 *
 * @category errors
 */
export class NotAnExtractionRun extends Schema.TaggedError<NotAnExtractionRun>()("NotAnExtractionRun", {
  runId: Schema.String,
  kind: Schema.String
}) {
  override get message(): string {
    return `run ${this.runId} is a "${this.kind}" run, not an extraction run`
  }
}

/**
 * Errors of running or resuming.
 *
 * @category errors
 */
export type WorkflowError =
  ExtractionFailed | NotAnExtractionRun | RunNotFound | RunStateConflict | InvalidInput | SqlError

/**
 * Largest `batchSize` (a batch is one chord).
 *
 * @category constants
 */
export const maxBatchSize = 100_000
/**
 * Longest document path.
 *
 * @category constants
 */
export const maxPathLength = 4096

/**
 * The run's input, checked before anything is written: the run id like every Baton name, the batch size in range,
 * and every document's path and content free of NUL and lone surrogates (Postgres text refuses NUL, and a lone
 * surrogate cannot be stored as UTF-8 without being replaced: the same refusal on every backend, naming the document).
 */
const checkInput = (
  input: RunInput,
  batchSize: number,
  documents: ReadonlyArray<InputDocument>
): InvalidInput | undefined => {
  const invalid = (field: string, message: string | undefined) =>
    message === undefined ? undefined : new InvalidInput({ field, message })
  const first =
    invalid("batchSize", Validate.integer("batchSize", batchSize, 1, maxBatchSize)) ??
    (input.runId === undefined ? undefined : invalid("runId", Validate.name("runId", input.runId))) ??
    (input.source === undefined ? undefined : invalid("source", Validate.text("source", input.source, maxPathLength)))
  if (first !== undefined) return first
  for (const [i, doc] of documents.entries()) {
    const problem =
      invalid(`documents[${i}].path`, Validate.name(`documents[${i}].path`, doc?.path, { maxLength: maxPathLength })) ??
      invalid(`documents[${i}].content`, Validate.text(`documents[${i}].content`, doc?.content))
    if (problem !== undefined) return problem
  }
  return undefined
}

/**
 * The extraction workflow.
 *
 * @category tags
 */
export class ExtractionWorkflow extends Context.Tag("baton/ExtractionWorkflow")<
  ExtractionWorkflow,
  {
    /** Records a new run and its input (one transaction) without processing it; an existing id is returned as is. */
    readonly start: (input: RunInput) => Effect.Effect<Run, InvalidInput | SqlError>
    /** Records the run and processes it batch by batch until it succeeds or fails. */
    readonly run: (input: RunInput) => Effect.Effect<RunResult, WorkflowError>
    /** Continues a run after its last confirmed batch (a succeeded run returns its result at once). */
    readonly resume: (runId: string) => Effect.Effect<RunResult, WorkflowError>
    /** Where a run stands (batches from RunService, documents from the saved batches). */
    readonly progress: (runId: string) => Effect.Effect<Progress, RunNotFound | NotAnExtractionRun | SqlError>
    /** Totals over the run's saved documents. */
    readonly summary: (runId: string) => Effect.Effect<BatchSummary, SqlError>
    /** The run's saved document extracts, in document order. */
    readonly documents: (runId: string) => Effect.Effect<ReadonlyArray<SavedDocument>, SqlError>
    /** The run's saved batch summaries, in batch order. */
    readonly batches: (runId: string) => Effect.Effect<ReadonlyArray<SavedBatch>, SqlError>
  }
>() {}

// ---------------------------------------------------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------------------------------------------------

interface DocumentRow {
  readonly run_id: string
  readonly doc_index: number
  readonly batch_index: number
  readonly path: string
  readonly format: string
  readonly bytes: number
  readonly title: string | null
  readonly word_count: number
  readonly headings: string
  readonly links: string
  readonly emails: string
  readonly dates: string
  readonly code_languages: string
  readonly keywords: string
}

const decodeMetadata = Schema.decodeUnknownOption(RunMetadata)
const decodeSummaryJson = Schema.decodeUnknownSync(Schema.parseJson(BatchSummary))
const decodeExtract = Schema.decodeUnknownSync(DocumentExtract)

const toSaved = (row: DocumentRow): SavedDocument => ({
  runId: row.run_id,
  batchIndex: Number(row.batch_index),
  docIndex: Number(row.doc_index),
  ...decodeExtract({
    path: row.path,
    format: row.format,
    bytes: Number(row.bytes),
    title: row.title,
    headings: JSON.parse(row.headings),
    links: JSON.parse(row.links),
    emails: JSON.parse(row.emails),
    dates: JSON.parse(row.dates),
    codeLanguages: JSON.parse(row.code_languages),
    wordCount: Number(row.word_count),
    keywords: JSON.parse(row.keywords)
  })
})

/**
 * The extraction as a batch workflow: documents are the items, `ExtractDocument` the body, `MergeBatch` the merge, and
 * the save step writes the batch's documents and summary. Its input lives in `baton_extract_inputs` and its metadata
 * keeps the reference workflow's own layout (`{ batchSize, totalDocuments, source? }`).
 */
const definition = (sql: SqlClient.SqlClient) =>
  ({
    kind,
    item: Schema.Struct({ path: Schema.String, content: Schema.String }),
    body: (doc: InputDocument) => Task.call(ExtractDocument, { path: doc.path, content: doc.content }),
    merge: MergeBatch,
    batchSize: defaultBatchSize,
    save: (batch: BatchWorkflow.Batch<InputDocument, DocumentExtract, BatchSummary>) =>
      saveBatch(sql, batch.run.id, batch.batchIndex, batch.firstIndex, batch.merged, batch.results),
    checkpointResult: ({ merged }: BatchWorkflow.Batch<InputDocument, DocumentExtract, BatchSummary>) => ({
      documents: merged.documents,
      words: merged.words,
      bytes: merged.bytes
    }),
    input: {
      save: (runId: string, documents: ReadonlyArray<InputDocument>) =>
        Effect.gen(function* () {
          const rows = documents.map((doc, i) => ({
            run_id: runId,
            doc_index: i,
            path: doc.path,
            content: doc.content
          }))
          for (let i = 0; i < rows.length; i += 500) {
            yield* sql`INSERT INTO baton_extract_inputs ${sql.insert(rows.slice(i, i + 500))} ON CONFLICT DO NOTHING`
          }
        }),
      load: (runId: string, from: number, to: number) =>
        sql<{ path: string; content: string }>`SELECT path, content FROM baton_extract_inputs
          WHERE run_id = ${runId} AND doc_index >= ${from} AND doc_index < ${to} ORDER BY doc_index`
    },
    metadata: {
      encode: (shape: BatchWorkflow.Shape, extra: Record<string, unknown>) => ({
        batchSize: shape.batchSize,
        totalDocuments: shape.totalItems,
        ...extra
      }),
      decode: (metadata: unknown) =>
        Option.map(decodeMetadata(metadata), (m) => ({ batchSize: m.batchSize, totalItems: m.totalDocuments }))
    }
  }) satisfies BatchWorkflow.Definition<
    InputDocument,
    { readonly path: string; readonly content: string },
    typeof ExtractDocument,
    typeof MergeBatch,
    SqlError,
    never
  >

// Idempotent: the batch row decides; its documents were written in the same transaction.
const saveBatch = (
  sql: SqlClient.SqlClient,
  runId: string,
  batchIndex: number,
  firstDoc: number,
  summary: BatchSummary,
  extracts: ReadonlyArray<DocumentExtract>
) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const inserted = yield* sql<{ run_id: string }>`INSERT INTO baton_extract_batches ${sql.insert({
      run_id: runId,
      batch_index: batchIndex,
      documents: summary.documents,
      bytes: summary.bytes,
      words: summary.words,
      summary: JSON.stringify(Schema.encodeSync(BatchSummary)(summary)),
      created_at: now
    })} ON CONFLICT DO NOTHING RETURNING run_id`
    if (inserted.length === 0) return false
    const rows = extracts.map((extract, i) => ({
      run_id: runId,
      doc_index: firstDoc + i,
      batch_index: batchIndex,
      path: extract.path,
      format: extract.format,
      bytes: extract.bytes,
      title: extract.title,
      word_count: extract.wordCount,
      headings: JSON.stringify(extract.headings),
      links: JSON.stringify(extract.links),
      emails: JSON.stringify(extract.emails),
      dates: JSON.stringify(extract.dates),
      code_languages: JSON.stringify(extract.codeLanguages),
      keywords: JSON.stringify(extract.keywords),
      created_at: now
    }))
    for (let i = 0; i < rows.length; i += 500) {
      yield* sql`INSERT INTO baton_extract_documents ${sql.insert(rows.slice(i, i + 500))} ON CONFLICT DO NOTHING`
    }
    return true
  })

/**
 * Builds the workflow from Baton's services: one use of `BatchWorkflow`, plus the reads of its saved results.
 *
 * @category constructors
 */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const runs = yield* RunService
  const driver = yield* BatchWorkflow.make(definition(sql))

  const metadataOf = (run: Run) =>
    run.kind !== kind
      ? Effect.fail(new NotAnExtractionRun({ runId: run.id, kind: run.kind }))
      : Option.match(decodeMetadata(run.metadata), {
          onNone: () => Effect.fail(new NotAnExtractionRun({ runId: run.id, kind: `${run.kind} (bad metadata)` })),
          onSome: Effect.succeed
        })

  // The builder's errors in this workflow's terms (its callers and tests know these).
  const asWorkflowError = <A, R>(effect: Effect.Effect<A, BatchWorkflow.WorkflowError, R>) =>
    effect.pipe(
      Effect.catchTags({
        BatchFailed: (e) =>
          Effect.fail(new ExtractionFailed({ runId: e.runId, batchIndex: e.batchIndex, reason: e.reason })),
        WrongKind: (e) => Effect.fail(new NotAnExtractionRun({ runId: e.runId, kind: e.kind })),
        RunCancelled: (e) => Effect.fail(new RunStateConflict({ runId: e.runId, from: "cancelled", to: "running" }))
      })
    )

  // The reference workflow's own input checks (document paths and contents), then the builder's run input.
  const runInput = (input: RunInput) => {
    const batchSize = input.batchSize ?? defaultBatchSize
    const documents = [...input.documents]
    const problem = checkInput(input, batchSize, documents)
    return problem !== undefined
      ? Effect.fail(problem)
      : Effect.succeed({
          items: documents,
          batchSize,
          runId: input.runId,
          metadata: input.source !== undefined ? { source: input.source } : {}
        })
  }

  const start = (input: RunInput) =>
    Effect.flatMap(runInput(input), driver.start).pipe(Effect.withSpan("ExtractionWorkflow.start"))

  const summary = (runId: string) =>
    Effect.map(documents(runId), (docs) => mergeBatch(docs)).pipe(Effect.withSpan("ExtractionWorkflow.summary"))

  const documents = (runId: string) =>
    sql<DocumentRow>`SELECT * FROM baton_extract_documents WHERE run_id = ${runId} ORDER BY doc_index`.pipe(
      Effect.map((rows) => rows.map(toSaved))
    )

  const batches = (runId: string) =>
    sql<{ run_id: string; batch_index: number; summary: string }>`SELECT run_id, batch_index, summary
      FROM baton_extract_batches WHERE run_id = ${runId} ORDER BY batch_index`.pipe(
      Effect.map((rows) =>
        rows.map((row) => ({
          runId: row.run_id,
          batchIndex: Number(row.batch_index),
          summary: decodeSummaryJson(row.summary)
        }))
      )
    )

  const result = (run: Run) =>
    Effect.map(summary(run.id), (total): RunResult => ({
      runId: run.id,
      batches: run.totalBatches,
      documents: total.documents,
      summary: total
    }))

  const run = (input: RunInput) =>
    Effect.flatMap(runInput(input), (checked) => asWorkflowError(driver.run(checked))).pipe(
      Effect.flatMap(result),
      Effect.withSpan("ExtractionWorkflow.run")
    )

  const resume = (runId: string) =>
    asWorkflowError(driver.resume(runId)).pipe(
      Effect.flatMap(result),
      Effect.withSpan("ExtractionWorkflow.resume", { attributes: { runId } })
    )

  const progress = (runId: string) =>
    Effect.gen(function* () {
      const found = yield* runs.getRun(runId)
      const metadata = yield* metadataOf(found)
      const rows = yield* sql<{ n: number | null }>`SELECT sum(documents) AS n FROM baton_extract_batches
        WHERE run_id = ${runId}`
      return { run: found, metadata, documentsDone: Number(rows[0]?.n ?? 0) }
    })

  return ExtractionWorkflow.of({ start, run, resume, progress, summary, documents, batches })
})

/**
 * The workflow on Baton's services (storage, RunService, CheckpointCoordinator, ChordRegistry, TaskQueue, completions).
 *
 * @category layers
 */
export const layer: Layer.Layer<
  ExtractionWorkflow,
  never,
  | SqlClient.SqlClient
  | RunService
  | CheckpointCoordinator
  | ChordRegistry.ChordRegistry
  | TaskQueue
  | CompletionBackend
  | ReadModel
> = Layer.effect(ExtractionWorkflow, make)
