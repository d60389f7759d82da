/**
 * `RunService` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (one code path).
 *
 * `updateProgress` is one guarded `UPDATE`: it moves the run's confirmed batches only when the run is still running,
 * the move is forward, and every batch it skips over has a completed checkpoint. When the guard refuses, the run is
 * read again to name the reason. The statements live in the SQL layer (`internal/sql/runService.ts`).
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import * as Internal from "./internal/sql/runService.js"
import { RunService } from "./RunService.js"

/**
 * Builds the service. Requires the `SqlClient` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The layer; requires a storage layer (`Storage.layerPg`, `layerSqlite`, `layerMemory`).
 *
 * @category layers
 */
export const layer: Layer.Layer<RunService, never, SqlClient.SqlClient> = Layer.effect(RunService, make)
