/**
 * Health and metrics over HTTP: `/healthz` and `/metrics` (Prometheus text format 0.0.4).
 *
 * - `health`: the database answers and every Baton migration this code knows is applied. `/healthz` answers 200 with
 *   `{ "status": "ok", ... }` then, 503 with `{ "status": "unavailable", ... }` and the reason otherwise (a database
 *   that does not answer within 5 s counts as unreachable).
 * - `metrics`: every metric in Effect's global registry (`Metric.snapshot`: counters, gauges, histograms with
 *   cumulative `_bucket{le=...}`, `_sum` and `_count`, summaries, frequencies as counters labelled `key`) plus gauges
 *   read from the database at each scrape: tasks per queue and state, queue depth, the oldest waiting task's age, dead
 *   and running tasks per queue, live workers. A database that cannot be read leaves those out and sets
 *   `baton_database_up` to 0: a scrape never fails because of it.
 * - `serve`: both endpoints on their own port (`baton worker --metrics-port`); the dashboard serves them too.
 *
 * Metrics are process-wide (Effect's registry is global): a worker's `/metrics` shows what its process counted, the
 * database gauges are the same from every process.
 *
 * @since 0.1.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import { ReadModel, type SchemaStatus } from "./ReadModel.js"
import { TaskQueue } from "./TaskQueue.js"

/**
 * What `/healthz` reports.
 *
 * @category models
 */
export interface HealthReport {
  readonly status: "ok" | "unavailable"
  /** `ok`, or why the database could not be read. */
  readonly database: string
  /** `undefined` when the database could not be read. */
  readonly migrations: SchemaStatus | undefined
}

/**
 * One metric family in Prometheus terms: a name, its type and help, and its samples.
 *
 * @category models
 */
export interface Family {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  readonly help: string
  readonly samples: ReadonlyArray<Sample>
}

/**
 * One sample line: `name{labels} value` (`name` with its `_bucket`, `_sum`, `_count` suffix where there is one).
 *
 * @category models
 */
export interface Sample {
  readonly name: string
  readonly labels: ReadonlyArray<readonly [string, string]>
  readonly value: number
}

/**
 * The metrics server could not start (port taken, bad host, ...).
 *
 * @category errors
 */
export class ObservabilityError extends Data.TaggedError("ObservabilityError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The database's state for `/healthz`: reachable (within 5 s) and with every known migration applied.
 *
 * @category health
 */
export const health: Effect.Effect<HealthReport, never, ReadModel> = Effect.gen(function* () {
  const model = yield* ReadModel
  const status = yield* model.schemaStatus.pipe(
    Effect.timeoutFail({ duration: Duration.seconds(5), onTimeout: () => "timeout" as const }),
    Effect.either
  )
  if (status._tag === "Left") {
    const error = status.left
    const reason = error === "timeout" ? "no answer within 5 s" : error.message
    return { status: "unavailable", database: `unreachable: ${reason}`, migrations: undefined } as const
  }
  return {
    status: status.right.current ? "ok" : "unavailable",
    database: "ok",
    migrations: status.right
  } as const
})

// -- Prometheus text format ---------------------------------------------------------------------------------------

const metricName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(cleaned) ? cleaned : `_${cleaned}`
}

const labelName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[a-zA-Z_]/.test(cleaned) && !cleaned.startsWith("__") ? cleaned : `_${cleaned.replace(/^_+/, "")}`
}

const escapeLabel = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')
const escapeHelp = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

const sampleLine = (sample: Sample): string => {
  const labels =
    sample.labels.length === 0
      ? ""
      : `{${sample.labels.map(([key, value]) => `${labelName(key)}="${escapeLabel(value)}"`).join(",")}}`
  return `${metricName(sample.name)}${labels} ${formatValue(sample.value)}`
}

/**
 * Renders metric families as Prometheus text (format 0.0.4): one `# HELP` and `# TYPE` per family, then its samples.
 * Families with the same name are merged (the first one's type and help win); names and label names are sanitised,
 * label values and help escaped.
 *
 * @category prometheus
 */
export const render = (families: ReadonlyArray<Family>): string => {
  const merged = new Map<string, { family: Family; samples: Array<Sample> }>()
  for (const family of families) {
    const name = metricName(family.name)
    const entry = merged.get(name)
    if (entry === undefined) merged.set(name, { family, samples: [...family.samples] })
    else if (entry.family.type === family.type) entry.samples.push(...family.samples)
  }
  const lines: Array<string> = []
  for (const [name, { family, samples }] of merged) {
    lines.push(`# HELP ${name} ${escapeHelp(family.help === "" ? name : family.help)}`)
    lines.push(`# TYPE ${name} ${family.type}`)
    for (const sample of samples) lines.push(sampleLine(sample))
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}

/**
 * Converts Effect metric pairs (`Metric.snapshot`) to Prometheus families: counter → counter, gauge → gauge,
 * histogram → histogram (cumulative buckets, always ending with `le="+Inf"`), summary → summary (quantiles, `_sum`,
 * `_count`), frequency → counter with one sample per key (label `key`). Tags become labels.
 *
 * @category prometheus
 */
export const fromSnapshot = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): ReadonlyArray<Family> => {
  const families: Array<Family> = []
  for (const pair of pairs) {
    const key = pair.metricKey
    const name = metricName(key.name)
    const help = Option.getOrElse(key.description, () => "")
    const tags: ReadonlyArray<readonly [string, string]> = key.tags.map((tag) => [tag.key, tag.value] as const)
    const state: unknown = pair.metricState
    if (MetricState.isCounterState(state)) {
      families.push({ name, help, type: "counter", samples: [{ name, labels: tags, value: Number(state.count) }] })
    } else if (MetricState.isGaugeState(state)) {
      families.push({ name, help, type: "gauge", samples: [{ name, labels: tags, value: Number(state.value) }] })
    } else if (MetricState.isHistogramState(state)) {
      const samples: Array<Sample> = []
      let sawInf = false
      for (const [le, count] of state.buckets) {
        if (le === Infinity) sawInf = true
        samples.push({ name: `${name}_bucket`, labels: [...tags, ["le", formatValue(le)]], value: count })
      }
      if (!sawInf) samples.push({ name: `${name}_bucket`, labels: [...tags, ["le", "+Inf"]], value: state.count })
      samples.push({ name: `${name}_sum`, labels: tags, value: state.sum })
      samples.push({ name: `${name}_count`, labels: tags, value: state.count })
      families.push({ name, help, type: "histogram", samples })
    } else if (MetricState.isSummaryState(state)) {
      const samples: Array<Sample> = []
      for (const [quantile, value] of state.quantiles) {
        samples.push({
          name,
          labels: [...tags, ["quantile", String(quantile)]],
          value: Option.getOrElse(value, () => NaN)
        })
      }
      samples.push({ name: `${name}_sum`, labels: tags, value: state.sum })
      samples.push({ name: `${name}_count`, labels: tags, value: state.count })
      families.push({ name, help, type: "summary", samples })
    } else if (MetricState.isFrequencyState(state)) {
      const samples: Array<Sample> = []
      for (const [value, count] of state.occurrences)
        samples.push({ name, labels: [...tags, ["key", value]], value: count })
      families.push({ name, help, type: "counter", samples })
    }
  }
  return families
}

/**
 * Gauges read from the database at scrape time: tasks per queue and state, queue depth (pending), the oldest waiting
 * task's age (seconds), dead and running tasks per queue, live workers; `baton_database_up` 1, or 0 (and nothing
 * else) when the database cannot be read.
 *
 * @category prometheus
 */
export const databaseFamilies: Effect.Effect<ReadonlyArray<Family>, never, TaskQueue | ReadModel> = Effect.gen(
  function* () {
    const queue = yield* TaskQueue
    const model = yield* ReadModel
    const read = Effect.all([queue.queueStats, model.workers, Clock.currentTimeMillis]).pipe(
      Effect.timeout(Duration.seconds(5)),
      Effect.either
    )
    const result = yield* read
    const up = (value: number): Family => ({
      name: "baton_database_up",
      type: "gauge",
      help: "1 when the database answered this scrape's queries, else 0",
      samples: [{ name: "baton_database_up", labels: [], value }]
    })
    if (result._tag === "Left") return [up(0)]
    const [stats, workers, now] = result.right
    const perQueue = (name: string, help: string, value: (s: (typeof stats)[number]) => number): Family => ({
      name,
      type: "gauge",
      help,
      samples: stats.map((s) => ({ name, labels: [["queue", s.queue]], value: value(s) }))
    })
    return [
      up(1),
      {
        name: "baton_queue_tasks",
        type: "gauge",
        help: "Tasks per queue and state",
        samples: stats.flatMap((s) =>
          Object.entries(s.counts).map(([state, n]) => ({
            name: "baton_queue_tasks",
            labels: [
              ["queue", s.queue],
              ["state", state]
            ] as const,
            value: n
          }))
        )
      },
      perQueue(
        "baton_queue_depth",
        "Pending tasks per queue (waiting to run, scheduled ones included)",
        (s) => s.counts.pending
      ),
      perQueue(
        "baton_queue_oldest_waiting_seconds",
        "Age of the task waiting longest per queue (runnable, not claimed), 0 when none",
        (s) =>
          Option.match(s.oldestWaiting, {
            onNone: () => 0,
            onSome: (o) => Math.max(0, (now - o.runAt.getTime()) / 1000)
          })
      ),
      perQueue("baton_queue_dead_tasks", "Dead tasks per queue (retries exhausted)", (s) => s.counts.dead),
      perQueue("baton_queue_running_tasks", "Running tasks per queue", (s) => s.counts.running),
      {
        name: "baton_workers_live",
        type: "gauge",
        help: "Workers registered with an unexpired heartbeat",
        samples: [{ name: "baton_workers_live", labels: [], value: workers.length }]
      }
    ]
  }
)

/**
 * The `/metrics` body: Effect's metric registry and the database gauges, as Prometheus text.
 *
 * @category prometheus
 */
export const metricsText: Effect.Effect<string, never, TaskQueue | ReadModel> = Effect.gen(function* () {
  const pairs = yield* Metric.snapshot
  const database = yield* databaseFamilies
  return render([...fromSnapshot(pairs), ...database])
})

/**
 * The content type of `/metrics`.
 *
 * @category prometheus
 */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

/**
 * `GET /healthz` (200 or 503, JSON) and `GET /metrics` (Prometheus text) as a router, for any `HttpServer`.
 *
 * @category http
 */
export const router = HttpRouter.empty.pipe(
  HttpRouter.get(
    "/healthz",
    Effect.map(health, (report) => healthResponse(report))
  ),
  HttpRouter.get(
    "/metrics",
    Effect.map(metricsText, (text) => HttpServerResponse.text(text, { contentType }))
  )
)

/**
 * The `/healthz` response of a report: 200 when ok, else 503.
 *
 * @category http
 */
export const healthResponse = (report: HealthReport) =>
  HttpServerResponse.unsafeJson(report, {
    status: report.status === "ok" ? 200 : 503,
    headers: { "cache-control": "no-store" }
  })

/**
 * Options of `serve`.
 *
 * @category models
 */
export interface ServeOptions {
  /** TCP port (0: any free port; the bound one is returned). */
  readonly port: number
  /** Interface to bind (default 127.0.0.1; `0.0.0.0` for a scraper on another host). */
  readonly host?: string | undefined
}

/**
 * Serves `/healthz` and `/metrics` in the current scope until it closes; returns the bound address.
 *
 * @category http
 */
export const serve = (
  options: ServeOptions
): Effect.Effect<
  { readonly url: string; readonly host: string; readonly port: number },
  ObservabilityError,
  Scope.Scope | TaskQueue | ReadModel
> =>
  Effect.gen(function* () {
    const host = options.host ?? "127.0.0.1"
    let nodeServer: http.Server | undefined
    const server = yield* NodeHttpServer.make(
      () => {
        nodeServer = http.createServer()
        return nodeServer
      },
      { port: options.port, host }
    ).pipe(
      Effect.mapError(
        (error) =>
          new ObservabilityError({
            message: `cannot serve metrics on ${host}:${options.port}: ${String((error.cause as Error | undefined)?.message ?? error)}`,
            cause: error.cause
          })
      )
    )
    // Before the server's own close (finalizers run in reverse): drop idle keep-alive connections of scrapers.
    yield* Effect.addFinalizer(() => Effect.sync(() => nodeServer?.closeAllConnections()))
    const app = router.pipe(
      Effect.catchTag("RouteNotFound", () =>
        Effect.succeed(HttpServerResponse.text("not found: try /healthz or /metrics\n", { status: 404 }))
      )
    )
    yield* server.serve(app)
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : options.port
    const urlHost = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host
    return { url: `http://${urlHost}:${port}/`, host, port }
  })
