/**
 * `TaskQueue` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (same code, two dialects).
 *
 * - A claim is one statement (`FOR UPDATE SKIP LOCKED` on Postgres), so two workers never hold a valid lease on the
 *   same task.
 * - Completions are batched: one transaction completes many tasks, each guarded by its lease, and appends their
 *   completion events (and NOTIFY) in that same transaction (docs/architecture.md, "How a task finishes").
 * - Bulk enqueue sends one JSON parameter instead of thousands of placeholders.
 *
 * The statements live in the SQL layer (`internal/sql/taskQueue.ts`); this module builds the service from it.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import * as Internal from "./internal/sql/taskQueue.js"
import type { Storage } from "./Storage.js"
import { TaskQueue } from "./TaskQueue.js"

/**
 * Turns a typed enqueue into a raw one (encoding the payload with the task's Schema, checking the options).
 *
 * @category encoding
 */
export { checkRequest, encodeCall } from "./internal/request.js"

/**
 * Builds the service. Requires the `SqlClient` and `Storage` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The layer; requires a storage layer (`Storage.layerPg`, `layerSqlite`, `layerMemory`).
 *
 * @category layers
 */
export const layer: Layer.Layer<TaskQueue, never, SqlClient.SqlClient | Storage> = Layer.scoped(TaskQueue, make)
