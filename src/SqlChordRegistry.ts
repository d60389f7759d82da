/**
 * `ChordRegistry` on `@effect/sql` (Postgres, a SQLite file, SQLite `:memory:`), with the chord coordinator.
 *
 * - `chord` encodes everything first (an invalid payload writes nothing), then in one transaction inserts the chord and
 *   its body tasks; a repeated idempotency key returns the existing chord. An empty body is dispatched in that same
 *   transaction.
 * - Counting and dispatch happen in the transaction that completes a body task, in whatever process completes it: the
 *   producer may be long gone (docs/chords.md).
 * - The coordinator (a background part per registry, i.e. per process that provides this layer) latches the chords
 *   awaited here, re-checks the chords of body-task completion events, and runs the reconciler pass every
 *   `reconcileInterval` (as a step of the `Reconciler` service when one is provided). Every dispatch it makes goes
 *   through the same guard as the normal path and counts in the healed-chords metric (`ChordRegistry.chordsHealed`).
 *
 * The statements live in the SQL layer (`internal/sql/chordRegistry.ts`, `internal/sql/chordCoordinator.ts`,
 * `internal/sql/chordLedger.ts`); this module builds the service from it.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Layer from "effect/Layer"
import { ChordRegistry } from "./ChordRegistry.js"
import * as Internal from "./internal/sql/chordRegistry.js"
import type { Storage } from "./Storage.js"
import type { TaskQueue } from "./TaskQueue.js"

/**
 * Settings of the registry's coordinator.
 *
 * @category models
 */
export type Options = Internal.Options

/**
 * The name of the chord step when a `Reconciler` service drives the reconciler pass.
 *
 * @category constants
 */
export const reconcileStepName = Internal.reconcileStepName

/**
 * Builds the registry and starts its coordinator in the current scope.
 *
 * @category constructors
 */
export const make = Internal.make

/**
 * The registry with default settings; requires a storage layer and the `TaskQueue` (a `CompletionBackend` is used if
 * present).
 *
 * @category layers
 */
export const layer: Layer.Layer<ChordRegistry, never, SqlClient.SqlClient | Storage | TaskQueue> = Layer.scoped(
  ChordRegistry,
  make()
)

/**
 * The registry with explicit coordinator settings.
 *
 * @category layers
 */
export const layerWith = (
  options: Options
): Layer.Layer<ChordRegistry, never, SqlClient.SqlClient | Storage | TaskQueue> =>
  Layer.scoped(ChordRegistry, make(options))
