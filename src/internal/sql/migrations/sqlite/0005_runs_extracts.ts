/**
 * Runs (RunService) and the ExtractionWorkflow's input and result tables (SQLite). Times are epoch milliseconds.
 *
 * The primary keys make saving a batch idempotent: a batch is `(run_id, batch_index)` and a document result is
 * `(run_id, doc_index)`, and both are written with `ON CONFLICT DO NOTHING`, so a batch saved twice (a resumed run, two
 * drivers) is stored once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE baton_runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    completed_batches INTEGER NOT NULL DEFAULT 0,
    total_batches INTEGER NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    generation INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    CONSTRAINT baton_runs_progress CHECK (completed_batches >= 0 AND completed_batches <= total_batches)
  )`
  yield* sql`CREATE INDEX baton_runs_created ON baton_runs (created_at)`
  yield* sql`CREATE INDEX baton_runs_state ON baton_runs (state)`
  yield* sql`CREATE TABLE baton_extract_inputs (
    run_id TEXT NOT NULL,
    doc_index INTEGER NOT NULL,
    path TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (run_id, doc_index)
  )`
  yield* sql`CREATE TABLE baton_extract_documents (
    run_id TEXT NOT NULL,
    doc_index INTEGER NOT NULL,
    batch_index INTEGER NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    title TEXT,
    word_count INTEGER NOT NULL,
    headings TEXT NOT NULL,
    links TEXT NOT NULL,
    emails TEXT NOT NULL,
    dates TEXT NOT NULL,
    code_languages TEXT NOT NULL,
    keywords TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, doc_index)
  )`
  yield* sql`CREATE TABLE baton_extract_batches (
    run_id TEXT NOT NULL,
    batch_index INTEGER NOT NULL,
    documents INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    words INTEGER NOT NULL,
    summary TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, batch_index)
  )`
})
