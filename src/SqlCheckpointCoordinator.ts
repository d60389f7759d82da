/**
 * `CheckpointCoordinator` on `@effect/sql` (Postgres, a SQLite file, or SQLite `:memory:`): each checkpoint is a
 * durable row, so another process can await it and a restarted run sees where it stopped.
 *
 * - `createCheckpoint` is one statement; `completeCheckpoint` / `failCheckpoint` join the caller's transaction when
 *   there is one: the guarded update and the completion event commit or roll back with the caller's work.
 * - Nothing in this process is told about a completion before it committed.
 * - `awaitCheckpoint` registers before it reads, then waits: a completion in between is never lost. With a
 *   `CompletionBackend` in the layer's context, waiters also wake on the completion stream (checkpoint events of their
 *   run); a re-read of the row on an adaptive schedule is always the safety net.
 *
 * The statements live in the SQL layer (`internal/sql/checkpointCoordinator.ts`); docs/checkpoint-coordination.md has
 * the full contract.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { CheckpointCoordinator } from "./CheckpointCoordinator.js"
import { CompletionBackend } from "./CompletionBackend.js"
import * as Internal from "./internal/sql/checkpointCoordinator.js"
import type { Storage } from "./Storage.js"

/**
 * Options of the SQL coordinator.
 *
 * @category models
 */
export type Options = Internal.Options

/**
 * Builds the service. Requires the `SqlClient` and `Storage` of a storage layer.
 *
 * @category constructors
 */
export const make = Internal.make

// The CompletionBackend of the context, if any, wakes waiters (as SqlChordRegistry uses one if present).
const build = (options: Options) =>
  Effect.flatMap(Effect.serviceOption(CompletionBackend), (backend) =>
    make(
      options.completions !== undefined || Option.isNone(backend) ? options : { ...options, completions: backend.value }
    )
  )

/**
 * The layer with default options; requires a storage layer (`Storage.layerPg`, `layerSqlite`, `layerMemory`). Waiters
 * also wake on the completion stream when a `CompletionBackend` is provided.
 *
 * @category layers
 */
export const layer: Layer.Layer<CheckpointCoordinator, never, SqlClient.SqlClient | Storage> = Layer.effect(
  CheckpointCoordinator,
  build({})
)

/**
 * The layer with options (build it once: each build is a separate coordinator). Waiters also wake on the completion
 * stream when a `CompletionBackend` is provided.
 *
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<CheckpointCoordinator, never, SqlClient.SqlClient | Storage> =>
  Layer.effect(CheckpointCoordinator, build(options))

/**
 * The layer whose waiters wake on the completion stream, requiring a `CompletionBackend`.
 *
 * @deprecated `layerWith(options)` (or `layer`) with a `CompletionBackend` provided does the same.
 * @category layers
 */
export const layerWithCompletions = (
  options: Omit<Options, "completions"> = {}
): Layer.Layer<CheckpointCoordinator, never, SqlClient.SqlClient | Storage | CompletionBackend> =>
  Layer.effect(
    CheckpointCoordinator,
    Effect.flatMap(CompletionBackend, (completions) => make({ ...options, completions }))
  )
