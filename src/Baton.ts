/**
 * Baton's ready-made layers: storage plus every service, for one backend.
 *
 * `layerMemory` (tests), `layerSqlite({ filename })` (the embedded default), `layerPg({ url })` and
 * `layerPgConfig` (`DATABASE_URL`). Each provides the `SqlClient` and `Storage` too, so application code can join
 * Baton's transactions (`sql.withTransaction`).
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import * as SqlTaskQueue from "./SqlTaskQueue.js"
import * as Storage from "./Storage.js"
import type { TaskQueue } from "./TaskQueue.js"

/** Everything Baton provides. */
export type Services = TaskQueue | SqlClient.SqlClient | Storage.Storage

/** Baton's services on a given storage layer. */
export const layerWith = <E, R>(
  storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E, R>
): Layer.Layer<Services, E, R> => SqlTaskQueue.layer.pipe(Layer.provideMerge(storage))

/** Baton on SQLite `:memory:` (a fresh database per layer build). */
export const layerMemory: Layer.Layer<Services, Storage.StorageError> = layerWith(Storage.layerMemory)

/** Baton on a SQLite file. */
export const layerSqlite = (options: Storage.SqliteOptions): Layer.Layer<Services, Storage.StorageError> =>
  layerWith(Storage.layerSqlite(options))

/** Baton on Postgres. */
export const layerPg = (options: Storage.PgOptions): Layer.Layer<Services, Storage.StorageError> =>
  layerWith(Storage.layerPg(options))

/** Baton on Postgres from `DATABASE_URL` (and optional `BATON_PG_SCHEMA`). */
export const layerPgConfig: Layer.Layer<Services, Storage.StorageError> = layerWith(Storage.layerPgConfig)
