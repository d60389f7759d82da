/**
 * Baton's ready-made layers: storage plus every core service, for one backend.
 *
 * `layerMemory` (tests), `layerSqlite({ filename })` (the embedded default), `layerPg({ url })` and
 * `layerPgConfig` (`DATABASE_URL`), or `layerWith(storage)` on any `Storage.layer*`. Each provides TaskQueue,
 * CompletionBackend, CheckpointCoordinator (durable, waking on the completion stream), ChordRegistry (whose coordinator
 * runs for the life of the layer), RunService, ReadModel, QueueControl (pause, rate and concurrency limits per queue)
 * and Retention (pruning finished work, as a Reconciler step) — and the `SqlClient` and `Storage` too, so application
 * code can join Baton's transactions (`sql.withTransaction`) — and run the `Reconciler` (expired leases, log retention,
 * chord healing) in the background for the life of the layer. Workers are started separately (`Worker.run` /
 * `Worker.layer`), so a process can produce without consuming.
 *
 * The reference workflow is not included: provide `ExtractionWorkflow.layer` on top
 * (`ExtractionWorkflow.layer.pipe(Layer.provideMerge(Baton.layerSqlite(...)))`), as the CLI does.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import type { CheckpointCoordinator } from "./CheckpointCoordinator.js"
import type { ChordRegistry } from "./ChordRegistry.js"
import type { CompletionBackend } from "./CompletionBackend.js"
import type { QueueControl } from "./QueueControl.js"
import type { ReadModel } from "./ReadModel.js"
import * as Reconciler from "./Reconciler.js"
import type { Retention } from "./Retention.js"
import type { RunService } from "./RunService.js"
import * as SqlCheckpointCoordinator from "./SqlCheckpointCoordinator.js"
import * as SqlChordRegistry from "./SqlChordRegistry.js"
import * as SqlCompletionBackend from "./SqlCompletionBackend.js"
import * as SqlQueueControl from "./SqlQueueControl.js"
import * as SqlReadModel from "./SqlReadModel.js"
import * as SqlRetention from "./SqlRetention.js"
import * as SqlRunService from "./SqlRunService.js"
import * as SqlTaskQueue from "./SqlTaskQueue.js"
import * as Storage from "./Storage.js"
import type { TaskQueue } from "./TaskQueue.js"

/** Everything a `Baton.layer*` provides. */
export type Services =
  | SqlClient.SqlClient
  | Storage.Storage
  | TaskQueue
  | CompletionBackend
  | CheckpointCoordinator
  | ChordRegistry
  | RunService
  | ReadModel
  | QueueControl
  | Retention
  | Reconciler.Reconciler

/** Baton's services on a given storage layer. */
export const layerWith = <E, R>(
  storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E, R>
): Layer.Layer<Services, E, R> => {
  const queue = SqlTaskQueue.layer.pipe(Layer.provideMerge(storage))
  const completions = SqlCompletionBackend.layer.pipe(Layer.provideMerge(queue))
  // The reconciler (expired leases, log retention, and the chords' heal pass, which the chord registry registers
  // as a step) runs for the life of the layer in every process.
  const withReconciler = Reconciler.layer.pipe(Layer.provideMerge(completions))
  return Layer.mergeAll(
    SqlCheckpointCoordinator.layer,
    SqlChordRegistry.layer,
    SqlRunService.layer,
    SqlReadModel.layer,
    SqlQueueControl.layer,
    SqlRetention.layer,
    Reconciler.layerRun()
  ).pipe(Layer.provideMerge(withReconciler))
}

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
