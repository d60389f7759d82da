/**
 * Dashboard: the live web view behind `baton dashboard`, embeddable in an application that already provides Baton's
 * services (`Baton.layerPg`, `layerSqlite`, …).
 *
 * One page and a JSON API (`/api/runs`, `/api/chords`, `/api/queues`, `/api/tasks`, …; docs/dashboard.md) over an
 * @effect/platform HTTP server, with live updates pushed as Server-Sent Events from the CompletionBackend. Binds
 * 127.0.0.1 by default, read-only unless `allowActions`, and optionally requires a bearer token; every list is paged
 * and filtered in SQL. `make` serves in the caller's scope (closing it ends event streams and connections and
 * stops the server); `layer` serves for the life of the layer.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Baton from "../Baton.js"
import * as Server from "./server.js"

/**
 * How the dashboard is served: `port` (default 4400; 0 = any free port), `host` (default 127.0.0.1), …
 *
 * @category models
 */
export type Options = Server.DashboardOptions

/**
 * A running dashboard: its URL and the bound port.
 *
 * @category models
 */
export type RunningDashboard = Server.RunningDashboard

/**
 * The server could not start (port already in use, no such local address, …).
 *
 * @category errors
 */
export const DashboardError = Server.DashboardError
/**
 * The server could not start.
 *
 * @category errors
 */
export type DashboardError = Server.DashboardError

/**
 * Serves the dashboard until the scope closes; succeeds once it listens, with the bound URL.
 *
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<RunningDashboard, DashboardError, Baton.Services | Scope.Scope> => Server.serve(options)

/**
 * Serves the dashboard for the life of the layer (and logs its URL).
 *
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, DashboardError, Baton.Services> =>
  Layer.scopedDiscard(Effect.flatMap(make(options), (running) => Effect.logInfo(`baton dashboard on ${running.url}`)))
