/**
 * `ReadModel` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (one code path). The statements are in
 * `internal/sql/readModel.ts`, with the rest of the SQL layer.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import * as Internal from "./internal/sql/readModel.js"
import { ReadModel } from "./ReadModel.js"

/**
 * Builds the service. Requires the `SqlClient` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The read model on the `SqlClient` in context.
 *
 * @category layers
 */
export const layer = Layer.effect(ReadModel, make)
