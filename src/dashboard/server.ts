/**
 * The dashboard's HTTP server (@effect/platform's HttpRouter on @effect/platform-node's NodeHttpServer): one page
 * (`/`, `/app.js`, `/app.css`), a JSON API under `/api/`, and `/api/events`, a Server-Sent Events stream fed by the
 * CompletionBackend (the page refetches what it shows when told something changed; it never polls).
 *
 * Security model (docs/dashboard.md):
 * - Binds 127.0.0.1 unless told otherwise; on a loopback address, requests whose `Host` is not a loopback name are
 *   refused (DNS rebinding).
 * - Optional bearer token: with one, every request (the page included) needs `Authorization: Bearer <token>` or the
 *   HttpOnly `SameSite=Strict` cookie that `/?token=<token>` sets (then redirects to `/`, dropping the token from
 *   the address bar). Tokens are compared in constant time.
 * - Read-only unless `allowActions`: actions answer 403 otherwise. An action is a POST that must carry the header
 *   `X-Baton-Action: 1` (a cross-site form cannot set it, and a cross-origin fetch with it needs a CORS preflight
 *   this server never grants) and, if it has an `Origin`, one that matches `Host`.
 * - Everything shown is user data: the page renders with `textContent` only, and a strict Content-Security-Policy
 *   (no inline script) backs that up.
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as crypto from "node:crypto"
import * as http from "node:http"
import { CompletionBackend, type CompletionEvent } from "../CompletionBackend.js"
import * as Observability from "../Observability.js"
import { appCss, appJs, pageHtml } from "./assets.js"
import type { TaskListFilter } from "../TaskQueue.js"
import * as ReadModel from "./readModel.js"

/**
 * How the dashboard is served.
 *
 * @category models
 */
export interface DashboardOptions {
  /** TCP port (0: any free port; the bound one is in the returned address). Default 4400. */
  readonly port?: number | undefined
  /** Interface to bind. Default 127.0.0.1. */
  readonly host?: string | undefined
  /** Allow actions (retrying a dead task). Default false: actions answer 403. */
  readonly allowActions?: boolean | undefined
  /** Require this bearer token on every request. Default: none. */
  readonly token?: string | undefined
  /** A label for the storage, shown on the page. */
  readonly storage?: string | undefined
}

/**
 * The server could not start (port taken, bad host, …).
 *
 * @category errors
 */
export class DashboardError extends Data.TaggedError("DashboardError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A running dashboard.
 *
 * @category models
 */
export interface RunningDashboard {
  /** `http://host:port/` as bound (the real port when 0 was asked for). */
  readonly url: string
  readonly host: string
  readonly port: number
}

const cookieName = "baton_dashboard_token"

const loopbackHosts = new Set(["127.0.0.1", "localhost", "::1", "[::1]"])
const isLoopback = (host: string) => loopbackHosts.has(host) || host.startsWith("127.")

const hostnameOf = (hostHeader: string): string => {
  if (hostHeader.startsWith("[")) return hostHeader.slice(0, hostHeader.indexOf("]") + 1)
  const colon = hostHeader.lastIndexOf(":")
  return colon === -1 ? hostHeader : hostHeader.slice(0, colon)
}

const digest = (text: string) => crypto.createHash("sha256").update(text).digest()
const sameToken = (given: string, expected: Buffer) => crypto.timingSafeEqual(digest(given), expected)

const securityHeaders = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-store"
}

const json = (body: unknown, status = 200) => HttpServerResponse.unsafeJson(body, { status })
const problem = (status: number, error: string) => json({ error }, status)

class BadRequest extends Data.TaggedError("BadRequest")<{ readonly message: string }> {}

const intParam = (params: Readonly<Record<string, string | ReadonlyArray<string>>>, name: string, fallback: number) => {
  const raw = params[name]
  if (raw === undefined || raw === "") return Effect.succeed(fallback)
  const text = typeof raw === "string" ? raw : raw[0]!
  const n = Number(text)
  return Number.isInteger(n) && n >= 0
    ? Effect.succeed(n)
    : Effect.fail(new BadRequest({ message: `${name} must be a non-negative integer` }))
}

const textParam = (params: Readonly<Record<string, string | ReadonlyArray<string>>>, name: string) => {
  const raw = params[name]
  const text = raw === undefined ? undefined : typeof raw === "string" ? raw : raw[0]
  return text === undefined || text === "" ? undefined : text
}

const maxOffset = 100_000_000

const pageParams = Effect.gen(function* () {
  const params = yield* HttpServerRequest.ParsedSearchParams
  const limit = yield* intParam(params, "limit", 50)
  const offset = yield* intParam(params, "offset", 0)
  if (limit < 1 || limit > ReadModel.maxLimit) {
    return yield* new BadRequest({ message: `limit must be between 1 and ${ReadModel.maxLimit}` })
  }
  if (offset > maxOffset) return yield* new BadRequest({ message: `offset must be at most ${maxOffset}` })
  return { limit, offset, params }
})

const enumParam = <A extends string>(
  params: Readonly<Record<string, string | ReadonlyArray<string>>>,
  name: string,
  is: (s: string) => s is A
) => {
  const text = textParam(params, name)
  if (text === undefined) return Effect.succeed(undefined)
  return is(text) ? Effect.succeed(text) : Effect.fail(new BadRequest({ message: `unknown ${name}: ${text}` }))
}

/**
 * Serves the dashboard in the current scope until it closes (then open event streams end and connections close).
 * Needs Baton's services (the read model) and the CompletionBackend.
 *
 * @category constructors
 */
export const serve = (options: DashboardOptions) =>
  Effect.gen(function* () {
    const model = yield* ReadModel.make
    const completions = yield* CompletionBackend
    const host = options.host ?? "127.0.0.1"
    const port = options.port ?? 4400
    const allowActions = options.allowActions === true
    const expected = options.token === undefined || options.token === "" ? undefined : digest(options.token)
    const shutdown = yield* Deferred.make<void>()

    const authorized = (request: HttpServerRequest.HttpServerRequest): boolean => {
      if (expected === undefined) return true
      const header = request.headers["authorization"]
      if (header !== undefined && header.startsWith("Bearer ") && sameToken(header.slice(7).trim(), expected)) {
        return true
      }
      const cookie = request.cookies[cookieName]
      return cookie !== undefined && sameToken(cookie, expected)
    }

    const unauthorized = (page: boolean) =>
      page
        ? HttpServerResponse.text(
            "401 Unauthorized: this dashboard requires its token (BATON_DASHBOARD_TOKEN).\n" +
              "Open /?token=<token> once in the browser, or send Authorization: Bearer <token>.\n",
            { status: 401, headers: { "www-authenticate": 'Bearer realm="baton"' } }
          )
        : HttpServerResponse.unsafeJson(
            { error: "unauthorized: send Authorization: Bearer <BATON_DASHBOARD_TOKEN>" },
            { status: 401, headers: { "www-authenticate": 'Bearer realm="baton"' } }
          )

    const page = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const params = yield* HttpServerRequest.ParsedSearchParams
      const given = textParam(params, "token")
      if (given !== undefined && expected !== undefined) {
        if (!sameToken(given, expected)) return unauthorized(true)
        // Trade the token in the address for an HttpOnly cookie, and drop it from the address bar and history.
        return yield* HttpServerResponse.redirect("/", { status: 303 }).pipe(
          HttpServerResponse.setCookie(cookieName, given, { httpOnly: true, sameSite: "strict", path: "/" }),
          Effect.orDie
        )
      }
      if (!authorized(request)) return unauthorized(true)
      return HttpServerResponse.text(pageHtml, { contentType: "text/html; charset=utf-8" })
    })

    const config = json({ allowActions, storage: options.storage ?? null, tokenRequired: expected !== undefined })

    const runs = Effect.gen(function* () {
      const { limit, params } = yield* pageParams
      const state = yield* enumParam(params, "state", ReadModel.isRunState)
      return json({ items: yield* model.listRuns({ state, limit }) })
    })

    const run = Effect.gen(function* () {
      const { id } = yield* HttpRouter.params
      const { limit, offset } = yield* pageParams
      return yield* model.runDetail(id!, { limit, offset }).pipe(
        Effect.map((detail) => json(detail)),
        Effect.catchTag("RunNotFound", () => Effect.succeed(problem(404, "no such run")))
      )
    })

    const chords = Effect.gen(function* () {
      const { limit, offset, params } = yield* pageParams
      const state = yield* enumParam(params, "state", ReadModel.isChordState)
      return json(yield* model.listChords({ state, limit, offset }))
    })

    const chord = Effect.gen(function* () {
      const { id } = yield* HttpRouter.params
      return Option.match(yield* model.chordDetail(id!), {
        onNone: () => problem(404, "no such chord"),
        onSome: (detail) => json(detail)
      })
    })

    const tasks = Effect.gen(function* () {
      const { limit, offset, params } = yield* pageParams
      const state = yield* enumParam(params, "state", ReadModel.isTaskState)
      const filter: TaskListFilter = {
        state,
        queue: textParam(params, "queue"),
        name: textParam(params, "name"),
        search: textParam(params, "q"),
        runId: textParam(params, "run"),
        chordId: textParam(params, "chord")
      }
      return json(yield* model.listTasks(filter, { limit, offset }))
    })

    const task = Effect.gen(function* () {
      const { id } = yield* HttpRouter.params
      return yield* model.taskDetail(id!).pipe(
        Effect.map((detail) => json(detail)),
        Effect.catchTag("TaskNotFound", () => Effect.succeed(problem(404, "no such task")))
      )
    })

    const retry = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (!allowActions) return problem(403, "read-only: start the dashboard with --allow-actions to retry tasks")
      if (request.headers["x-baton-action"] !== "1") return problem(403, "actions need the header X-Baton-Action: 1")
      const origin = request.headers["origin"]
      if (origin !== undefined) {
        const originHost = Option.getOrUndefined(Option.liftThrowable(() => new URL(origin).host)())
        if (originHost !== request.headers["host"]) return problem(403, "cross-origin action refused")
      }
      const { id } = yield* HttpRouter.params
      if (yield* model.retryTask(id!)) return json({ retried: true, taskId: id })
      return yield* model.taskDetail(id!).pipe(
        Effect.map((detail) =>
          problem(409, `task is ${detail.state}${detail.chordId !== null ? " (a chord body task)" : ""}: not retried`)
        ),
        Effect.catchTag("TaskNotFound", () => Effect.succeed(problem(404, "no such task")))
      )
    })

    const encoder = new TextEncoder()
    // Completion events, batched (at most one message per 250 ms), each message saying what kinds of thing changed.
    const events = Effect.gen(function* () {
      const changes = <E>(events: Stream.Stream<CompletionEvent, E>) =>
        events.pipe(
          Stream.groupedWithin(1000, "250 millis"),
          Stream.map((chunk) => {
            const kinds: Record<string, number> = {}
            for (const event of Chunk.toReadonlyArray(chunk)) kinds[event.kind] = (kinds[event.kind] ?? 0) + 1
            const last = Chunk.last(chunk)
            return `id: ${Option.match(last, { onNone: () => "", onSome: (e) => e.cursor })}\nevent: change\ndata: ${JSON.stringify({ events: chunk.length, kinds })}\n\n`
          })
        )
      // "hello" only once the subscription is active (LISTEN confirmed on Postgres): a client that acts after hello
      // is told about every completion that commits from then on.
      const live = Stream.unwrapScoped(
        completions
          .subscribe()
          .pipe(
            Effect.map((events) =>
              Stream.concat(Stream.make("retry: 2000\nevent: hello\ndata: {}\n\n"), changes(events))
            )
          )
      ).pipe(
        Stream.catchAll((error) =>
          Stream.make(`event: error\ndata: ${JSON.stringify({ error: String(error._tag) })}\n\n`)
        )
      )
      const heartbeat = Stream.tick("15 seconds").pipe(
        Stream.drop(1),
        Stream.map(() => ": ping\n\n")
      )
      const body = Stream.merge(live, heartbeat).pipe(
        Stream.interruptWhen(Deferred.await(shutdown)),
        Stream.map((text) => encoder.encode(text))
      )
      return HttpServerResponse.stream(body, {
        contentType: "text/event-stream",
        headers: { "cache-control": "no-store", "x-accel-buffering": "no" }
      })
    })

    const api = <E, R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
      Effect.gen(function* () {
        const request = yield* HttpServerRequest.HttpServerRequest
        if (!authorized(request)) return unauthorized(false)
        return yield* handler
      })

    // The script and stylesheet hold no data, but they are behind the token too: nothing is served without it.
    const asset = (body: string, contentType: string) =>
      Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
        authorized(request) ? HttpServerResponse.text(body, { contentType }) : unauthorized(true)
      )

    const router = HttpRouter.empty.pipe(
      HttpRouter.get("/", page),
      HttpRouter.get("/app.js", asset(appJs, "text/javascript; charset=utf-8")),
      HttpRouter.get("/app.css", asset(appCss, "text/css; charset=utf-8")),
      HttpRouter.get("/api/config", api(Effect.succeed(config))),
      HttpRouter.get("/api/runs", api(runs)),
      HttpRouter.get("/api/runs/:id", api(run)),
      HttpRouter.get("/api/chords", api(chords)),
      HttpRouter.get("/api/chords/:id", api(chord)),
      HttpRouter.get("/api/queues", api(model.queues.pipe(Effect.map((q) => json(q))))),
      HttpRouter.get("/api/tasks", api(tasks)),
      HttpRouter.get("/api/tasks/:id", api(task)),
      HttpRouter.post("/api/tasks/:id/retry", api(retry)),
      HttpRouter.get("/api/events", api(events)),
      HttpRouter.get("/api/workers", api(model.workers.pipe(Effect.map((w) => json(w))))),
      // Health needs no token (it shows no data, and load balancers probe without one); metrics are behind it.
      HttpRouter.get("/healthz", Effect.map(Observability.health, Observability.healthResponse)),
      HttpRouter.get(
        "/metrics",
        api(
          Effect.map(Observability.metricsText, (text) =>
            HttpServerResponse.text(text, { contentType: Observability.contentType })
          )
        )
      )
    )

    const app = router.pipe(
      Effect.catchTags({
        BadRequest: (error) => Effect.succeed(problem(400, error.message)),
        RouteNotFound: () => Effect.succeed(problem(404, "not found"))
      }),
      Effect.catchAll((error) =>
        Effect.as(
          Effect.logError("dashboard request failed", error),
          problem(500, `internal error: ${(error as { _tag?: string })._tag ?? "unknown"}`)
        )
      ),
      Effect.map(HttpServerResponse.setHeaders(securityHeaders))
    )

    const guarded = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (isLoopback(host)) {
        const hostHeader = request.headers["host"]
        if (hostHeader === undefined || !isLoopback(hostnameOf(hostHeader))) {
          return problem(403, "this dashboard answers only to a loopback Host (DNS rebinding guard)")
        }
      }
      return yield* app
    })

    let nodeServer: http.Server | undefined
    const server = yield* NodeHttpServer.make(
      () => {
        nodeServer = http.createServer()
        return nodeServer
      },
      { port, host }
    ).pipe(
      Effect.mapError((error) => {
        const code = (error.cause as { code?: string } | undefined)?.code
        return new DashboardError({
          message:
            code === "EADDRINUSE"
              ? `port ${port} on ${host} is already in use (choose another with --port, or --port 0 for any free port)`
              : code === "EADDRNOTAVAIL" || code === "ENOTFOUND"
                ? `cannot bind ${host}:${port}: no such local address`
                : code === "EACCES"
                  ? `cannot bind ${host}:${port}: permission denied`
                  : `cannot listen on ${host}:${port}: ${String((error.cause as Error | undefined)?.message ?? error)}`,
          cause: error.cause
        })
      })
    )
    // Runs before the server's own close (finalizers run in reverse): end the event streams and drop idle
    // keep-alive connections, or `close` would wait for them forever.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Deferred.succeed(shutdown, undefined),
        Effect.sync(() => nodeServer?.closeAllConnections())
      )
    )
    yield* server.serve(guarded)
    const address = server.address
    const boundPort = address._tag === "TcpAddress" ? address.port : port
    const urlHost = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host
    const running: RunningDashboard = { url: `http://${urlHost}:${boundPort}/`, host, port: boundPort }
    return running
  })

/**
 * The services `serve` needs.
 *
 * @category models
 */
export type Requirements =
  Effect.Effect.Context<ReturnType<typeof serve>> extends infer R ? Exclude<R, Scope.Scope> : never
