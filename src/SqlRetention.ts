/**
 * `Retention` on `@effect/sql` (Postgres, a SQLite file, SQLite `:memory:`): bounded, batched deletes of finished
 * tasks, settled chords and finished runs (`internal/sql/retention.ts`), plus the completions log's own
 * `CompletionBackend.prune` when a completion backend is in context. With a `Reconciler` in context the layer
 * registers the step `retention.prune` (every `interval`, default 1 minute) for its lifetime.
 *
 * @since 0.2.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import * as Internal from "./internal/sql/retention.js"
import { Retention, type Options } from "./Retention.js"
import type { Storage } from "./Storage.js"

/**
 * Builds the service; registers the Reconciler step in the current scope if a `Reconciler` is in context.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * Retention with the documented defaults (`Retention.defaults`).
 *
 * @category layers
 */
export const layer: Layer.Layer<Retention, never, SqlClient.SqlClient | Storage> = Layer.scoped(Retention, make())

/**
 * Retention with explicit policies (omitted fields keep their defaults).
 *
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<Retention, never, SqlClient.SqlClient | Storage> =>
  Layer.scoped(Retention, make(options))
