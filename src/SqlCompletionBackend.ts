/**
 * `CompletionBackend` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (same code, two dialects).
 *
 * Every subscriber reads the durable completions log after its own cursor; live channels (LISTEN/NOTIFY on Postgres,
 * in-process signals on SQLite) only tell it when to read again, so a lost wake-up costs latency, never an event.
 * On Postgres each read delivers what committed since the previous one, whatever older transaction is still open, and
 * a late-committing event (lower `seq`) when it commits: never skipped, never twice, never held back by an unrelated
 * open transaction; cursors resume exactly (docs/completion-backend.md). Filters compile to SQL or fail with `FilterUnsupported`. Retention (`prune`) advances a
 * watermark; a resume point below it fails with `CursorExpired`.
 *
 * The statements live in the SQL layer (`internal/sql/completionBackend.ts`); this module builds the service from it.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import { CompletionBackend } from "./CompletionBackend.js"
import * as Internal from "./internal/sql/completionBackend.js"
import type { Storage } from "./Storage.js"

/**
 * Settings of the SQL completion backend (retention, polling).
 *
 * @category models
 */
export type Options = Internal.Options

/**
 * Default retention: events are kept for a week.
 *
 * @category models
 */
export const defaultRetention = Internal.defaultRetention

/**
 * Builds the service. Requires the `SqlClient` and `Storage` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The layer with default settings (7-day retention); requires a storage layer.
 *
 * @category layers
 */
export const layer: Layer.Layer<CompletionBackend, never, SqlClient.SqlClient | Storage> = Layer.effect(
  CompletionBackend,
  make()
)

/**
 * The layer with explicit settings (retention, polling); requires a storage layer.
 *
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<CompletionBackend, never, SqlClient.SqlClient | Storage> =>
  Layer.effect(CompletionBackend, make(options))
