/**
 * The page-titles workflow: a user's own workflow on `BatchWorkflow`. Input: a list of URLs. Per batch, one
 * `FetchPage` task per URL, `MergePages` as the callback, and a save step writing each page's title and size and the
 * batch's totals — idempotently (`ON CONFLICT DO NOTHING`), in the transaction that completes the batch's checkpoint.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as BatchWorkflow from "../../src/BatchWorkflow.js"
import * as Task from "../../src/Task.js"
import { FetchPage, MergePages } from "./contracts.js"

export class PageTitles extends Context.Tag("example/PageTitles")<PageTitles, BatchWorkflow.BatchWorkflow<string>>() {}

/** The example's own tables (an application would use its migrations). */
const createTables = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.zipRight(
    sql`CREATE TABLE IF NOT EXISTS page_titles (
      run_id TEXT NOT NULL, item_index INTEGER NOT NULL, url TEXT NOT NULL, title TEXT, bytes INTEGER NOT NULL,
      PRIMARY KEY (run_id, item_index))`,
    sql`CREATE TABLE IF NOT EXISTS page_title_batches (
      run_id TEXT NOT NULL, batch_index INTEGER NOT NULL, pages INTEGER NOT NULL, titled INTEGER NOT NULL,
      bytes INTEGER NOT NULL, PRIMARY KEY (run_id, batch_index))`
  )
)

export const make = Effect.gen(function* () {
  yield* createTables
  return yield* BatchWorkflow.make({
    kind: "page-titles",
    item: Schema.String,
    body: (url) => Task.call(FetchPage, { url }),
    merge: MergePages,
    batchSize: 5,
    save: ({ batchIndex, firstIndex, merged, results, run, sql }) =>
      Effect.zipRight(
        sql`INSERT INTO page_title_batches ${sql.insert({ run_id: run.id, batch_index: batchIndex, ...merged })}
          ON CONFLICT DO NOTHING`,
        sql`INSERT INTO page_titles ${sql.insert(
          results.map((page, i) => ({ run_id: run.id, item_index: firstIndex + i, ...page }))
        )} ON CONFLICT DO NOTHING`
      ),
    checkpointResult: ({ merged }) => merged
  })
})

export const layer = Layer.effect(PageTitles, make)

/** The saved pages of a run, in input order. */
export const pages = (runId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ item_index: number; url: string; title: string | null; bytes: number }>`
      SELECT item_index, url, title, bytes FROM page_titles WHERE run_id = ${runId} ORDER BY item_index`
  )
