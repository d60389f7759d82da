/**
 * `QueueControl` on `@effect/sql` (Postgres, a SQLite file, SQLite `:memory:`): settings in `baton_queues`, enforced
 * by `TaskQueue.claim` (the statements are in `internal/sql/queueControl.ts`).
 *
 * @since 0.2.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import * as Internal from "./internal/sql/queueControl.js"
import { QueueControl } from "./QueueControl.js"
import type { Storage } from "./Storage.js"

/**
 * Builds the service. Requires the `SqlClient` and `Storage` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The layer; requires a storage layer.
 *
 * @category layers
 */
export const layer: Layer.Layer<QueueControl, never, SqlClient.SqlClient | Storage> = Layer.effect(QueueControl, make)
