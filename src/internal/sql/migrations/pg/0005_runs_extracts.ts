/**
 * Runs (RunService) and the ExtractionWorkflow's input and result tables (Postgres). Times are epoch milliseconds.
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
    id text PRIMARY KEY,
    kind text NOT NULL,
    state text NOT NULL,
    completed_batches integer NOT NULL DEFAULT 0,
    total_batches integer NOT NULL,
    attempt integer NOT NULL DEFAULT 1,
    generation integer NOT NULL DEFAULT 0,
    error text,
    metadata text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    finished_at bigint,
    CONSTRAINT baton_runs_progress CHECK (completed_batches >= 0 AND completed_batches <= total_batches)
  )`
  yield* sql`CREATE INDEX baton_runs_created ON baton_runs (created_at)`
  yield* sql`CREATE INDEX baton_runs_state ON baton_runs (state)`
  yield* sql`CREATE TABLE baton_extract_inputs (
    run_id text NOT NULL,
    doc_index integer NOT NULL,
    path text NOT NULL,
    content text NOT NULL,
    PRIMARY KEY (run_id, doc_index)
  )`
  yield* sql`CREATE TABLE baton_extract_documents (
    run_id text NOT NULL,
    doc_index integer NOT NULL,
    batch_index integer NOT NULL,
    path text NOT NULL,
    format text NOT NULL,
    bytes integer NOT NULL,
    title text,
    word_count integer NOT NULL,
    headings text NOT NULL,
    links text NOT NULL,
    emails text NOT NULL,
    dates text NOT NULL,
    code_languages text NOT NULL,
    keywords text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (run_id, doc_index)
  )`
  yield* sql`CREATE TABLE baton_extract_batches (
    run_id text NOT NULL,
    batch_index integer NOT NULL,
    documents integer NOT NULL,
    bytes bigint NOT NULL,
    words bigint NOT NULL,
    summary text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (run_id, batch_index)
  )`
})
