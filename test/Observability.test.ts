/**
 * Health, metrics and live workers: `/metrics` checked by a small strict Prometheus text-format parser (worker metrics
 * server and dashboard), `/healthz` 200 vs 503 (a migration missing), workers listed while a real worker process runs
 * and gone after its graceful shutdown, and a run flagged "stalled" while its work has no live worker.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as Baton from "../src/Baton.js"
import * as Observability from "../src/Observability.js"
import { ReadModel } from "../src/ReadModel.js"
import { RunService } from "../src/RunService.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Dashboard from "../src/dashboard/Dashboard.js"
import * as DashboardReadModel from "../src/dashboard/readModel.js"
import * as Backends from "./support/backends.js"
import { spawnFixture } from "./support/process.js"

// -- a strict parser of the Prometheus text format (0.0.4) -------------------------------------------------------

interface ParsedSample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}
interface ParsedFamily {
  readonly name: string
  type: string | undefined
  help: string | undefined
  readonly samples: Array<ParsedSample>
}

const nameRe = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelNameRe = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

const parseValue = (text: string, line: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  if (!/^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value in: ${line}`)
  return Number(text)
}

const parseLabels = (text: string, line: string): Record<string, string> => {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < text.length) {
    const eq = text.indexOf("=", i)
    if (eq < 0) throw new Error(`bad labels in: ${line}`)
    const key = text.slice(i, eq)
    if (!labelNameRe.test(key) || key in labels) throw new Error(`bad or repeated label name "${key}" in: ${line}`)
    if (text[eq + 1] !== '"') throw new Error(`unquoted label value in: ${line}`)
    let j = eq + 2
    let value = ""
    for (;;) {
      if (j >= text.length) throw new Error(`unterminated label value in: ${line}`)
      const c = text[j]!
      if (c === "\\") {
        const next = text[j + 1]
        if (next === "n") value += "\n"
        else if (next === "\\" || next === '"') value += next
        else throw new Error(`bad escape in: ${line}`)
        j += 2
      } else if (c === '"') {
        j++
        break
      } else {
        value += c
        j++
      }
    }
    labels[key] = value
    if (j < text.length) {
      if (text[j] !== ",") throw new Error(`expected , between labels in: ${line}`)
      j++
    }
    i = j
  }
  return labels
}

const familyOf = (sample: string, families: Map<string, ParsedFamily>): ParsedFamily | undefined => {
  if (families.has(sample)) return families.get(sample)
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (sample.endsWith(suffix)) {
      const family = families.get(sample.slice(0, -suffix.length))
      if (family !== undefined && (family.type === "histogram" || family.type === "summary")) return family
    }
  }
  return undefined
}

/** Parses and checks a whole exposition; throws on anything not in the format. */
const parsePrometheus = (text: string): Map<string, ParsedFamily> => {
  const families = new Map<string, ParsedFamily>()
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition must end with a newline")
  let current: ParsedFamily | undefined
  for (const line of text.split("\n")) {
    if (line === "") continue
    if (line.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (match === null) continue // a comment
      const [, keyword, name, rest] = match
      if (!nameRe.test(name!)) throw new Error(`bad metric name in: ${line}`)
      let family = families.get(name!)
      if (family === undefined) {
        family = { name: name!, type: undefined, help: undefined, samples: [] }
        families.set(name!, family)
      } else if (family.samples.length > 0) {
        throw new Error(`# ${keyword} after samples of ${name}`)
      }
      if (keyword === "TYPE") {
        if (family.type !== undefined) throw new Error(`second # TYPE for ${name}`)
        if (!types.has(rest!)) throw new Error(`unknown type in: ${line}`)
        family.type = rest
      } else {
        if (family.help !== undefined) throw new Error(`second # HELP for ${name}`)
        family.help = rest
      }
      current = family
      continue
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line)
    if (match === null) throw new Error(`not a sample line: ${line}`)
    const [, name, labelText, valueText] = match
    const family = familyOf(name!, families)
    if (family === undefined || family.type === undefined) throw new Error(`sample ${name} before its # TYPE`)
    if (family !== current) throw new Error(`samples of ${family.name} are not grouped together`)
    family.samples.push({
      name: name!,
      labels: labelText === undefined || labelText === "" ? {} : parseLabels(labelText, line),
      value: parseValue(valueText!, line)
    })
  }
  // Histogram rules: per label set, cumulative buckets ending with le="+Inf", equal to _count; a _sum.
  for (const family of families.values()) {
    if (family.type === "counter") {
      for (const sample of family.samples) if (!(sample.value >= 0)) throw new Error(`negative counter ${sample.name}`)
    }
    if (family.type !== "histogram") continue
    const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>()
    for (const sample of family.samples) {
      const { le, ...rest } = sample.labels
      const key = JSON.stringify(Object.entries(rest).sort())
      const entry = series.get(key) ?? { buckets: [] }
      series.set(key, entry)
      if (sample.name.endsWith("_bucket")) {
        if (le === undefined) throw new Error(`bucket without le in ${family.name}`)
        entry.buckets.push([parseValue(le, le), sample.value])
      } else if (sample.name.endsWith("_sum")) entry.sum = sample.value
      else if (sample.name.endsWith("_count")) entry.count = sample.value
      else throw new Error(`histogram ${family.name} has a plain sample`)
    }
    for (const entry of series.values()) {
      for (let i = 1; i < entry.buckets.length; i++) {
        if (!(entry.buckets[i]![0] > entry.buckets[i - 1]![0])) throw new Error(`${family.name}: le not increasing`)
        if (entry.buckets[i]![1] < entry.buckets[i - 1]![1]) throw new Error(`${family.name}: buckets not cumulative`)
      }
      const last = entry.buckets.at(-1)
      if (last === undefined || last[0] !== Infinity) throw new Error(`${family.name}: no le="+Inf" bucket`)
      if (entry.count !== last[1]) throw new Error(`${family.name}: _count differs from the +Inf bucket`)
      if (entry.sum === undefined) throw new Error(`${family.name}: no _sum`)
    }
  }
  return families
}

const sampleValue = (
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {}
): number | undefined => {
  const family = familyOf(name, families)
  const sample = family?.samples.find(
    (s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value)
  )
  return sample?.value
}

const get = (url: string, headers: Record<string, string> = {}) =>
  Effect.promise(async () => {
    const response = await fetch(url, { headers })
    return { status: response.status, type: response.headers.get("content-type"), text: await response.text() }
  })

// -- tests ---------------------------------------------------------------------------------------------------------

const probeHistogram = Metric.histogram(
  "baton_test_probe_ms",
  MetricBoundaries.fromIterable([1, 10, 100]),
  'A "probe" histogram\\with an escaped help'
)
const probeCounter = Metric.counter("baton_test_probe_total", { description: "probe counter" })

describe("parsePrometheus (the test's own parser) is strict", () => {
  it("refuses malformed expositions", () => {
    assert.throws(() => parsePrometheus("x 1\n"), /before its # TYPE/)
    assert.throws(() => parsePrometheus("# TYPE x gauge\nx{a=b} 1\n"), /unquoted/)
    assert.throws(() => parsePrometheus('# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1\nh_count 2\n'), /\+Inf/)
    assert.throws(() => parsePrometheus("# TYPE x gauge\n# TYPE x gauge\n"), /second/)
    assert.doesNotThrow(() => parsePrometheus('# HELP x y\n# TYPE x gauge\nx{a="q\\"\\n"} 1.5\n'))
  })
})

describe("metrics and health", () => {
  it.scopedLive(
    "worker metrics server: /metrics in Prometheus text; /healthz 200, then 503 when a migration is missing",
    () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* queue.enqueueRaw([
          { name: "a.task", payload: {}, queue: "alpha" },
          { name: "a.task", payload: {}, queue: "alpha" },
          { name: "b.task", payload: {}, queue: "beta" }
        ])
        yield* Metric.update(probeHistogram, 5)
        yield* Metric.update(probeHistogram, 50)
        yield* Metric.update(probeHistogram, 5000)
        yield* Metric.update(Metric.tagged(probeCounter, "kind", 'we"ird\\value'), 3)
        const served = yield* Observability.serve({ port: 0 })

        const metrics = yield* get(`${served.url}metrics`)
        assert.strictEqual(metrics.status, 200)
        assert.match(metrics.type ?? "", /^text\/plain; version=0\.0\.4/)
        const families = parsePrometheus(metrics.text)
        assert.strictEqual(families.get("baton_test_probe_ms")?.type, "histogram")
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_bucket", { le: "1" }), 0)
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_bucket", { le: "10" }), 1)
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_bucket", { le: "100" }), 2)
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_bucket", { le: "+Inf" }), 3)
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_count"), 3)
        assert.strictEqual(sampleValue(families, "baton_test_probe_ms_sum"), 5055)
        assert.strictEqual(families.get("baton_test_probe_total")?.type, "counter")
        assert.strictEqual(sampleValue(families, "baton_test_probe_total", { kind: 'we"ird\\value' }), 3)
        // Database gauges, read at scrape time.
        assert.strictEqual(sampleValue(families, "baton_database_up"), 1)
        assert.strictEqual(families.get("baton_queue_depth")?.type, "gauge")
        assert.strictEqual(sampleValue(families, "baton_queue_depth", { queue: "alpha" }), 2)
        assert.strictEqual(sampleValue(families, "baton_queue_depth", { queue: "beta" }), 1)
        assert.strictEqual(sampleValue(families, "baton_queue_tasks", { queue: "alpha", state: "pending" }), 2)
        assert.strictEqual(sampleValue(families, "baton_queue_dead_tasks", { queue: "alpha" }), 0)
        assert.strictEqual(sampleValue(families, "baton_queue_running_tasks", { queue: "beta" }), 0)
        assert.isAtLeast(sampleValue(families, "baton_queue_oldest_waiting_seconds", { queue: "alpha" })!, 0)
        assert.strictEqual(sampleValue(families, "baton_workers_live"), 0)

        const healthy = yield* get(`${served.url}healthz`)
        assert.strictEqual(healthy.status, 200)
        const report = JSON.parse(healthy.text)
        assert.strictEqual(report.status, "ok")
        assert.strictEqual(report.database, "ok")
        assert.deepStrictEqual(report.migrations.missing, [])
        assert.include(report.migrations.applied, "0010_progress_workers")

        // A database behind this code's migrations is not healthy.
        const sql = yield* SqlClient.SqlClient
        yield* sql`DELETE FROM baton_migrations WHERE migration_id = 10`
        const behind = yield* get(`${served.url}healthz`)
        assert.strictEqual(behind.status, 503)
        const body = JSON.parse(behind.text)
        assert.strictEqual(body.status, "unavailable")
        assert.deepStrictEqual(body.migrations.missing, ["0010_progress_workers"])
        assert.strictEqual((yield* get(`${served.url}nothing`)).status, 404)
      }).pipe(Effect.provide(Baton.layerMemory))
  )

  it.scopedLive("the dashboard serves /healthz without its token and /metrics, /api/workers behind it", () =>
    Effect.gen(function* () {
      const { url } = yield* Dashboard.make({ port: 0, token: "s3cret" })
      assert.strictEqual((yield* get(`${url}healthz`)).status, 200)
      assert.strictEqual((yield* get(`${url}metrics`)).status, 401)
      const metrics = yield* get(`${url}metrics`, { authorization: "Bearer s3cret" })
      assert.strictEqual(metrics.status, 200)
      assert.strictEqual(sampleValue(parsePrometheus(metrics.text), "baton_database_up"), 1)
      const workers = yield* get(`${url}api/workers`, { authorization: "Bearer s3cret" })
      assert.deepStrictEqual(JSON.parse(workers.text), { items: [] })
    }).pipe(Effect.provide(Baton.layerMemory))
  )
})

const kind: "sqlite" | "pg" = Backends.pgAvailable() ? "pg" : "sqlite"

describe(`live workers [${kind}]`, () => {
  it.live(
    "a worker process is listed while it runs (host, pid, queues) and gone after its graceful shutdown",
    () => {
      const shared = Backends.sharedStorage(kind)
      return Effect.gen(function* () {
        const model = yield* ReadModel
        const child = spawnFixture("worker-process.ts", shared.descriptor, { LEASE_MS: "3000" })
        try {
          yield* Effect.promise(() => child.waitForLine("ready"))
          const workers = yield* model.workers
          assert.strictEqual(workers.length, 1)
          const worker = workers[0]!
          assert.strictEqual(worker.pid, child.process.pid)
          assert.deepStrictEqual(worker.queues, ["default"])
          assert.strictEqual(worker.concurrency, 4)
          assert.isAbove(worker.expiresAt.getTime(), worker.lastHeartbeat.getTime())
          // It heartbeats: the heartbeat moves on (every second with a 3 s lease).
          const first = worker.lastHeartbeat.getTime()
          yield* Backends.eventually(
            Effect.map(model.workers, (list) => (list[0]?.lastHeartbeat.getTime() ?? 0) > first),
            "a worker heartbeat"
          )
          child.kill("SIGTERM")
          assert.strictEqual(yield* Effect.promise(() => child.exited), 0)
          // Deregistered at shutdown, not merely expired: gone at once.
          assert.deepStrictEqual(yield* model.workers, [])
        } finally {
          child.kill("SIGKILL")
        }
      }).pipe(Effect.provide(Baton.layerWith(shared.layer)))
    },
    30_000
  )
})

describe("stalled runs", () => {
  it.live("a running run with pending work and no live worker for its queue is stalled", () =>
    Effect.gen(function* () {
      const runs = yield* RunService
      const queue = yield* TaskQueue
      const views = yield* DashboardReadModel.make
      const run = yield* runs.createRun({ kind: "probe", totalBatches: 2 })
      const idle = yield* runs.createRun({ kind: "probe", totalBatches: 1 })
      yield* queue.enqueueRaw([{ name: "step", payload: {}, queue: "stall-q", runId: run.id }])
      const flags = Effect.map(views.listRuns({ limit: 10 }), (items) =>
        Object.fromEntries(items.map((item) => [item.id, [item.stalled, item.tasksPending]]))
      )
      assert.deepStrictEqual((yield* flags)[run.id], [true, 1])
      // A run with no unfinished task is not stalled (it may be between batches).
      assert.deepStrictEqual((yield* flags)[idle.id], [false, 0])
      // A live worker on another queue does not help; one on the run's queue does.
      yield* queue.registerWorker({
        id: "w-other",
        host: "h",
        pid: 1,
        queues: ["other"],
        concurrency: 1,
        ttlMs: 60_000
      })
      assert.deepStrictEqual((yield* flags)[run.id], [true, 1])
      yield* queue.registerWorker({
        id: "w-stall",
        host: "h",
        pid: 2,
        queues: ["stall-q"],
        concurrency: 1,
        ttlMs: 60_000
      })
      assert.deepStrictEqual((yield* flags)[run.id], [false, 1])
      assert.strictEqual((yield* views.runDetail(run.id, { limit: 10, offset: 0 })).run.stalled, false)
      // Its heartbeat expires (ttl 0 from now): gone, and the run is stalled again.
      assert.isTrue(yield* queue.heartbeatWorker("w-stall", 0, -1))
      assert.deepStrictEqual((yield* flags)[run.id], [true, 1])
      assert.deepStrictEqual(
        (yield* queue.workers).map((worker) => worker.id),
        ["w-other"]
      )
      yield* queue.deregisterWorker("w-other")
      assert.isFalse(yield* queue.heartbeatWorker("w-other", 0, 1000))
    }).pipe(Effect.provide(Baton.layerMemory))
  )
})
