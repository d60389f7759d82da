/**
 * The page-titles workflow's task contracts: what a producer (the driver) needs to fan batches out, and nothing of
 * the handlers (see worker.ts).
 */
import * as Schema from "effect/Schema"
import * as BatchWorkflow from "../../src/BatchWorkflow.js"
import * as Task from "../../src/Task.js"

/** A page that could not be fetched (network error, non-2xx status); retried, then the batch fails. */
export class FetchFailed extends Schema.TaggedError<FetchFailed>()("FetchFailed", {
  url: Schema.String,
  reason: Schema.String
}) {}

/** One page: its title (null when it has none) and its size in bytes. */
export const Page = Schema.Struct({ url: Schema.String, title: Schema.NullOr(Schema.String), bytes: Schema.Number })
export type Page = typeof Page.Type

/** Body task: fetches one URL. */
export const FetchPage = Task.contract("page-titles.fetch", {
  payload: Schema.Struct({ url: Schema.String }),
  success: Page,
  failure: FetchFailed,
  // A crash of the process running a fetch counts as an attempt (its lease expires): room for a few crashes on top
  // of the retries of a failing fetch.
  maxAttempts: 6,
  timeout: "30 seconds",
  backoff: { base: "100 millis", factor: 2, max: "2 seconds" }
})

/** Merge callback: a batch's totals from its pages (in URL order). */
export const MergePages = Task.contract("page-titles.merge", {
  payload: BatchWorkflow.mergePayload(Page),
  success: Schema.Struct({ pages: Schema.Number, titled: Schema.Number, bytes: Schema.Number })
})
