/**
 * `baton export`: a run's saved results as JSON Lines (one JSON object a line) or CSV (RFC 4180: every field quoted
 * when it needs to be, lists as JSON text in one cell), in document (or batch) order. Deterministic: the same run
 * exports the same bytes.
 */
import type { SavedBatch, SavedDocument } from "../extraction/ExtractionWorkflow.js"

/** Export formats. */
export const formats = ["jsonl", "csv"] as const
/** An export format. */
export type Format = (typeof formats)[number]

/** What to export. */
export const subjects = ["documents", "batches"] as const
/** What to export. */
export type Subject = (typeof subjects)[number]

const documentColumns = [
  "runId",
  "batchIndex",
  "docIndex",
  "path",
  "format",
  "bytes",
  "title",
  "wordCount",
  "headings",
  "links",
  "emails",
  "dates",
  "codeLanguages",
  "keywords"
] as const

const csvField = (value: unknown): string => {
  const text =
    value === null || value === undefined
      ? ""
      : typeof value === "string"
        ? value
        : typeof value === "number" || typeof value === "boolean"
          ? String(value)
          : JSON.stringify(value)
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

const csvLine = (values: ReadonlyArray<unknown>) => values.map(csvField).join(",")

const documentRecord = (doc: SavedDocument) => ({
  runId: doc.runId,
  batchIndex: doc.batchIndex,
  docIndex: doc.docIndex,
  path: doc.path,
  format: doc.format,
  bytes: doc.bytes,
  title: doc.title,
  wordCount: doc.wordCount,
  headings: doc.headings,
  links: doc.links,
  emails: doc.emails,
  dates: doc.dates,
  codeLanguages: doc.codeLanguages,
  keywords: doc.keywords
})

/** Document extracts as text in the given format (ends with a newline unless empty). */
export const exportDocuments = (documents: ReadonlyArray<SavedDocument>, format: Format): string => {
  if (format === "jsonl") return documents.map((doc) => JSON.stringify(documentRecord(doc)) + "\n").join("")
  const lines = [csvLine(documentColumns)]
  for (const doc of documents) {
    const record = documentRecord(doc)
    lines.push(csvLine(documentColumns.map((column) => record[column])))
  }
  return lines.join("\r\n") + "\r\n"
}

const batchColumns = [
  "runId",
  "batchIndex",
  "documents",
  "formats",
  "bytes",
  "words",
  "headings",
  "missingTitles",
  "links",
  "emails",
  "dates",
  "earliestDate",
  "latestDate",
  "codeLanguages",
  "keywords"
] as const

/** Batch summaries as text in the given format. */
export const exportBatches = (batches: ReadonlyArray<SavedBatch>, format: Format): string => {
  const records = batches.map((batch) => ({ runId: batch.runId, batchIndex: batch.batchIndex, ...batch.summary }))
  if (format === "jsonl") return records.map((record) => JSON.stringify(record) + "\n").join("")
  const lines = [csvLine(batchColumns)]
  for (const record of records) lines.push(csvLine(batchColumns.map((column) => record[column])))
  return lines.join("\r\n") + "\r\n"
}
