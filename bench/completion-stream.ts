/**
 * Completion stream on Postgres, measured end to end with the subscriber in ANOTHER OS process:
 *
 *   npx tsx bench/completion-stream.ts [latencyCount=10000] [ratePerSecond=500] [throughputCount=100000] [heldCount=600] [rounds=5]
 *
 * 1. latency: `latencyCount` tasks are claimed, then completed one per transaction at `ratePerSecond` (paced, one
 *    connection). For each, the time from the producer seeing its commit acknowledged (and, as an upper bound,
 *    from just before the completing transaction started) to the subscriber process receiving the event, on the
 *    host-wide monotonic clock (hrtime). p50/p90/p99/max.
 * 1b. held writer: the same, with an unrelated connection idle in a writing transaction (`BEGIN; INSERT INTO
 *    some_other_table`) in the same database for the whole measurement: commit → event p50/p99 (issue 16's target:
 *    p99 within 10 ms, as without it).
 * 2. throughput: events/s one subscriber sustains (a) live, while 4 producers complete `throughputCount / 2` tasks
 *    as fast as they can in transactions of 100, and (b) replaying `throughputCount` events from the log (catch-up).
 * 3. held open 1 s: while `heldCount` completions flow at 200/s, an unrelated transaction is held open for 1 s on
 *    another connection: latency of the events committed while it was open vs the others (before live delivery by
 *    snapshot difference, those waited for it).
 *
 * Writes bench/results/completion-stream.json. BENCH_PG_URL overrides the server (the bench uses its own database).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import pg from "pg"
import { CompletionBackend } from "../src/CompletionBackend.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import { type ClaimedTask, TaskQueue } from "../src/TaskQueue.js"
import { connect, ensureDatabase, serverInfo } from "./lib/db.js"
import { machine, writeResult } from "./lib/report.js"
import { latencySummary, median, nowMs, round } from "./lib/stats.js"

const schema = "bench_cs"

// -- child: the subscriber process ---------------------------------------------------------------------------------

/**
 * `completion-stream.ts child <url> <mode> <count>`: subscribes (mode "live" or "replay"), prints READY when the
 * subscription is active, then a line per 1000 events and finally one JSON line with what it saw.
 */
const child = async (url: string, mode: string, count: number, collectIds: boolean) => {
  const layer = SqlCompletionBackend.layer.pipe(
    Layer.provide(Storage.layerPg({ url, schema, maxConnections: 2, applicationName: "bench-cs-subscriber" }))
  )
  const seen: Array<[string, number]> = []
  let first = 0
  let last = 0
  let n = 0
  let lastSequence = -1
  let outOfOrder = 0
  const cursors = new Set<string>()
  const program = Effect.gen(function* () {
    const completions = yield* CompletionBackend
    const stream = yield* completions.subscribe(mode === "replay" ? { fromSequence: 0 } : {})
    console.log("READY")
    yield* stream.pipe(
      Stream.take(count),
      Stream.runForEach((event) =>
        Effect.sync(() => {
          const at = nowMs()
          if (n === 0) first = at
          last = at
          n++
          cursors.add(event.cursor)
          // Sequential single-task transactions commit in seq order, so seq must increase here.
          if (event.sequence <= lastSequence) outOfOrder++
          lastSequence = event.sequence
          if (collectIds) seen.push([event.taskId as string, at])
        })
      )
    )
  }).pipe(Effect.scoped, Effect.provide(layer))
  await Effect.runPromise(program)
  // Exit only once the (large) line is flushed: stdout to a pipe is asynchronous.
  process.stdout.write(JSON.stringify({ n, first, last, unique: cursors.size, outOfOrder, seen }) + "\n", () =>
    process.exit(0)
  )
}

interface ChildResult {
  readonly n: number
  readonly first: number
  readonly last: number
  readonly unique: number
  readonly outOfOrder: number
  readonly seen: ReadonlyArray<[string, number]>
}

const spawnChild = async (url: string, mode: "live" | "replay", count: number, collectIds: boolean) => {
  const proc: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", path.resolve(import.meta.filename), "child", url, mode, String(count), collectIds ? "1" : "0"],
    { stdio: ["ignore", "pipe", "inherit"] }
  )
  const lines = readline.createInterface({ input: proc.stdout! })
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (onReady = resolve))
  const result = new Promise<ChildResult>((resolve, reject) => {
    lines.on("line", (line) => {
      if (line === "READY") onReady()
      else if (line.startsWith("{")) resolve(JSON.parse(line) as ChildResult)
    })
    proc.on("exit", (code) => reject(new Error(`subscriber exited with ${code} before reporting`)))
  })
  await ready
  return { result, kill: () => proc.kill("SIGKILL") }
}

// -- parent: the producer ------------------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Samples, every 10 ms, when the oldest writing transaction of OTHER sessions started — in this database (those hold
 * the delivery horizon back) and in other databases of the cluster (those do not). Classifies commit times.
 */
const startForeignWriterMonitor = async (url: string) => {
  const client = new pg.Client({ connectionString: url, application_name: "bench-cs-monitor" })
  await client.connect()
  type Sample = { readonly at: number; readonly here: number | undefined; readonly elsewhere: number | undefined }
  const samples: Array<Sample> = []
  let running = true
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ here: number | null; elsewhere: number | null }>(
        `SELECT
           extract(epoch FROM now() - min(xact_start) FILTER (WHERE datname = current_database())) * 1000 AS here,
           extract(epoch FROM now() - min(xact_start) FILTER (WHERE datname <> current_database())) * 1000 AS elsewhere
         FROM pg_stat_activity
         WHERE backend_xid IS NOT NULL AND application_name NOT LIKE 'bench-cs-producer%'`
      )
      const at = nowMs()
      const start = (age: number | null | undefined) => (age === null || age === undefined ? undefined : at - age)
      samples.push({ at, here: start(rows[0]?.here), elsewhere: start(rows[0]?.elsewhere) })
      await sleep(10)
    }
  })()
  const openAt = (commitAt: number, where: "here" | "elsewhere"): boolean => {
    const sample = samples.find((s) => s.at >= commitAt)
    const started = sample?.[where]
    return started !== undefined && started < commitAt
  }
  return {
    /** Whether, just after `commitAt`, a writing transaction of this database begun before it was still open. */
    heldAt: (commitAt: number) => openAt(commitAt, "here"),
    /** The same for other databases (which the horizon ignores). */
    elsewhereAt: (commitAt: number) => openAt(commitAt, "elsewhere"),
    stop: async () => {
      running = false
      await loop
      await client.end()
    }
  }
}

const main = async () => {
  const latencyCount = Number(process.argv[2] ?? 10_000)
  const rate = Number(process.argv[3] ?? 500)
  const throughputCount = Number(process.argv[4] ?? 100_000)
  const heldCount = Number(process.argv[5] ?? 600)
  const rounds = Number(process.argv[6] ?? 5)
  const url = await ensureDatabase("bench_completions")
  const postgres = await serverInfo()
  const loadAtStart = os.loadavg()
  const admin = await connect(url)
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  console.log(`completion stream on ${postgres}; node ${process.version}; ${machine()}`)

  const runtime = ManagedRuntime.make(
    Layer.mergeAll(SqlTaskQueue.layer, SqlCompletionBackend.layer).pipe(
      Layer.provideMerge(Storage.layerPg({ url, schema, maxConnections: 8, applicationName: "bench-cs-producer" }))
    )
  )
  const queue = await runtime.runPromise(TaskQueue)
  const run = <A, E>(effect: Effect.Effect<A, E, never>) => runtime.runPromise(effect)

  const claimAll = async (n: number, name: string): Promise<Array<ClaimedTask>> => {
    const claimed: Array<ClaimedTask> = []
    for (let done = 0; done < n; done += 5000) {
      const size = Math.min(5000, n - done)
      await run(
        queue.enqueueRaw(Array.from({ length: size }, (_, i) => ({ name: "bench", payload: done + i, queue: name })))
      )
    }
    while (claimed.length < n) {
      claimed.push(...(await run(queue.claim({ queues: [name], limit: 5000, leaseMs: 3_600_000, workerId: "bench" }))))
    }
    return claimed
  }
  const completeOne = (task: ClaimedTask) => run(queue.complete([{ id: task.id, leaseId: task.leaseId, result: 1 }]))

  // 1. latency ------------------------------------------------------------------------------------------------------
  console.log(`\n1. latency: ${latencyCount} completions, one per transaction, ${rate}/s`)
  const latencyTasks = await claimAll(latencyCount, "latency")
  const monitor = await startForeignWriterMonitor(url)
  const subscriber = await spawnChild(url, "live", latencyCount, true)
  const started = new Map<string, number>()
  const acked = new Map<string, number>()
  const interval = 1000 / rate
  const t0 = nowMs()
  for (const [i, task] of latencyTasks.entries()) {
    const wait = t0 + i * interval - nowMs()
    if (wait > 0) await sleep(wait)
    started.set(task.id, nowMs())
    await completeOne(task)
    acked.set(task.id, nowMs())
  }
  const produceSeconds = (nowMs() - t0) / 1000
  const latencyResult = await subscriber.result
  const fromAck = latencyResult.seen.map(([id, at]) => at - acked.get(id)!)
  const fromStart = latencyResult.seen.map(([id, at]) => at - started.get(id)!)
  const segment = Math.ceil(fromAck.length / rounds)
  const latencyRounds = Array.from({ length: rounds }, (_, r) => fromAck.slice(r * segment, (r + 1) * segment))
    .filter((samples) => samples.length > 0)
    .map((samples) => {
      const s = latencySummary(samples)
      return { samples: s.count, p50: round(s.p50), p99: round(s.p99) }
    })
  await monitor.stop()
  const quiet: Array<number> = []
  const heldBack: Array<number> = []
  const otherDatabase: Array<number> = []
  for (const [id, at] of latencyResult.seen) {
    const ack = acked.get(id)!
    ;(monitor.heldAt(ack) ? heldBack : quiet).push(at - ack)
    if (monitor.elsewhereAt(ack)) otherDatabase.push(at - ack)
  }
  const latency = {
    events: latencyResult.n,
    unique: latencyResult.unique,
    outOfOrder: latencyResult.outOfOrder,
    achievedRate: round(latencyCount / produceSeconds),
    fromCommitAckMs: roundAll(latencySummary(fromAck)),
    fromTransactionStartMs: roundAll(latencySummary(fromStart)),
    // The samples in `rounds` consecutive segments: the headline is the median of the segments' percentiles.
    rounds: latencyRounds,
    // Split by whether another session's writing transaction in this database, begun before the commit, was still
    // open just after it (sampled every 10 ms): those events wait for the horizon.
    fromCommitAckNoForeignWriterMs: roundAll(latencySummary(quiet)),
    fromCommitAckForeignWriterOpenMs: roundAll(latencySummary(heldBack)),
    // Events committed while a writing transaction begun earlier was open in ANOTHER database (ignored by the horizon).
    fromCommitAckOtherDatabaseWriterOpenMs: roundAll(latencySummary(otherDatabase))
  }
  console.log(JSON.stringify(latency))

  // 1b. the same with an unrelated writer idle in transaction for the whole measurement ----------------------------
  console.log(`\n1b. held writer: ${latencyCount} completions, one per transaction, ${rate}/s, while an unrelated`)
  console.log("    connection sits idle in a writing transaction (BEGIN; INSERT INTO some_other_table) throughout")
  const heldWriterTasks = await claimAll(latencyCount, "held-writer")
  const idleWriter = new pg.Client({ connectionString: url, application_name: "bench-cs-idle-writer" })
  await idleWriter.connect()
  await idleWriter.query("CREATE TABLE IF NOT EXISTS public.bench_cs_some_other_table (x int)")
  await idleWriter.query("BEGIN")
  await idleWriter.query("INSERT INTO public.bench_cs_some_other_table VALUES (1)")
  const heldWriterSubscriber = await spawnChild(url, "live", latencyCount, true)
  const heldWriterAcked = new Map<string, number>()
  const w0 = nowMs()
  for (const [i, task] of heldWriterTasks.entries()) {
    const wait = w0 + i * interval - nowMs()
    if (wait > 0) await sleep(wait)
    await completeOne(task)
    heldWriterAcked.set(task.id, nowMs())
  }
  const heldWriterResult = await heldWriterSubscriber.result
  // Still open: every event above was delivered while the writer sat idle in its transaction.
  const stillOpen =
    (
      await admin.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'bench-cs-idle-writer' AND backend_xid IS NOT NULL"
      )
    ).rows[0]?.n === 1
  await idleWriter.query("ROLLBACK")
  await idleWriter.end()
  const heldWriterSamples = heldWriterResult.seen.map(([id, at]) => at - heldWriterAcked.get(id)!)
  const heldWriterSegment = Math.ceil(heldWriterSamples.length / rounds)
  const heldWriterRounds = Array.from({ length: rounds }, (_, r) =>
    heldWriterSamples.slice(r * heldWriterSegment, (r + 1) * heldWriterSegment)
  )
    .filter((samples) => samples.length > 0)
    .map((samples) => {
      const s = latencySummary(samples)
      return { samples: s.count, p50: round(s.p50), p99: round(s.p99) }
    })
  const heldWriter = {
    events: heldWriterResult.n,
    unique: heldWriterResult.unique,
    writerOpenThroughout: stillOpen,
    fromCommitAckMs: roundAll(latencySummary(heldWriterSamples)),
    rounds: heldWriterRounds
  }
  console.log(JSON.stringify(heldWriter))

  // 2a. live throughput ----------------------------------------------------------------------------------------------
  const liveCount = Math.floor(throughputCount / 2)
  console.log(`\n2a. live throughput: 4 producers complete ${liveCount} tasks in transactions of 100`)
  const liveTasks = await claimAll(liveCount, "live")
  const liveSubscriber = await spawnChild(url, "live", liveCount, false)
  const batches: Array<Array<ClaimedTask>> = []
  for (let i = 0; i < liveTasks.length; i += 100) batches.push(liveTasks.slice(i, i + 100))
  const p0 = nowMs()
  let lastCommit = 0
  await Promise.all(
    Array.from({ length: 4 }, async (_, w) => {
      for (let b = w; b < batches.length; b += 4) {
        await run(queue.complete(batches[b]!.map((task) => ({ id: task.id, leaseId: task.leaseId, result: 1 }))))
        lastCommit = nowMs()
      }
    })
  )
  const produceRate = liveCount / ((lastCommit - p0) / 1000)
  const live = await liveSubscriber.result
  const liveResult = {
    events: live.n,
    unique: live.unique,
    producerEventsPerSecond: round(produceRate),
    subscriberEventsPerSecond: round(live.n / ((live.last - live.first) / 1000)),
    lagAfterLastCommitMs: round(live.last - lastCommit)
  }
  console.log(JSON.stringify(liveResult))

  // 2b. replay throughput ------------------------------------------------------------------------------------------
  const inLog = Number((await admin.query(`SELECT count(*) AS n FROM ${schema}.baton_completions`)).rows[0].n)
  if (inLog < throughputCount) {
    const extra = await claimAll(throughputCount - inLog, "replay")
    for (let i = 0; i < extra.length; i += 1000) {
      await run(queue.complete(extra.slice(i, i + 1000).map((t) => ({ id: t.id, leaseId: t.leaseId, result: 1 }))))
    }
  }
  console.log(`\n2b. replay throughput: ${throughputCount} events from the log`)
  const replaySubscriber = await spawnChild(url, "replay", throughputCount, false)
  const replay = await replaySubscriber.result
  const replayResult = {
    events: replay.n,
    unique: replay.unique,
    eventsPerSecond: round(replay.n / ((replay.last - replay.first) / 1000))
  }
  console.log(JSON.stringify(replayResult))

  // 3. held back by an open transaction -----------------------------------------------------------------------------
  console.log(`\n3. held back: ${heldCount} completions at 200/s; an unrelated transaction stays open 1 s meanwhile`)
  const heldTasks = await claimAll(heldCount, "held")
  const heldSubscriber = await spawnChild(url, "live", heldCount, true)
  const blocker = new pg.Client({ connectionString: url, application_name: "bench-cs-blocker" })
  await blocker.connect()
  const heldAcked = new Map<string, number>()
  let holdStart = 0
  let holdEnd = 0
  const h0 = nowMs()
  for (const [i, task] of heldTasks.entries()) {
    const wait = h0 + i * 5 - nowMs()
    if (wait > 0) await sleep(wait)
    if (i === 100) {
      await blocker.query("BEGIN")
      await blocker.query("SELECT pg_current_xact_id()")
      holdStart = nowMs()
      setTimeout(() => {
        void blocker.query("COMMIT").then(() => {
          holdEnd = nowMs()
        })
      }, 1000)
    }
    await completeOne(task)
    heldAcked.set(task.id, nowMs())
  }
  const held = await heldSubscriber.result
  await blocker.end()
  const during: Array<number> = []
  const outside: Array<number> = []
  for (const [id, at] of held.seen) {
    const ack = heldAcked.get(id)!
    ;(ack >= holdStart && ack <= holdEnd ? during : outside).push(at - ack)
  }
  const heldResult = {
    openTransactionMs: round(holdEnd - holdStart),
    committedWhileOpen: roundAll(latencySummary(during)),
    others: roundAll(latencySummary(outside))
  }
  console.log(JSON.stringify(heldResult))

  await runtime.dispose()
  await admin.end()

  const result = {
    scenario: "completion-stream",
    unit: "ms (p50 commit → event seen in another process)",
    higherIsBetter: false,
    headline: "latencyP50Ms",
    ours: {
      latencyP50Ms: round(median(latencyRounds.map((r) => r.p50))),
      latencyP99Ms: round(median(latencyRounds.map((r) => r.p99))),
      heldWriterLatencyP50Ms: round(median(heldWriterRounds.map((r) => r.p50))),
      heldWriterLatencyP99Ms: round(median(heldWriterRounds.map((r) => r.p99))),
      liveEventsPerSecond: liveResult.subscriberEventsPerSecond,
      replayEventsPerSecond: replayResult.eventsPerSecond,
      latency,
      heldWriter,
      live: liveResult,
      replay: replayResult,
      heldBackByOpenTransaction: heldResult,
      settings:
        "SqlCompletionBackend.layer defaults (LISTEN wake-ups, batch 1000); subscriber in a separate Node process; " +
        "producer: SqlTaskQueue.complete on a pool of 8"
    },
    peers: {},
    ratios: {},
    node: process.version,
    postgres,
    when: new Date().toISOString(),
    quick: false,
    rounds,
    machine: machine(),
    notes: [
      `load average (1/5/15 min) at start ${loadAtStart.map((l) => l.toFixed(2)).join("/")}, ` +
        `at end ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join("/")}`,
      "latency: the producer paces at most ratePerSecond; achievedRate is what sequential commits allowed",
      `latencyP50Ms / latencyP99Ms: medians over ${rounds} consecutive segments of the latency samples of each segment's percentile (latency.rounds); latency.fromCommitAckMs pools every sample; the throughput figures are one measurement each`,
      "ForeignWriter split: whether another session's writing transaction in the same database, begun before the " +
        "commit, was still open just after it (sampled every 10 ms); such events wait for the horizon. " +
        "OtherDatabaseWriter: the same for writers in other databases of the cluster (not waited for)"
    ]
  }
  console.log(`\nwrote ${writeResult(result)}`)
}

const roundAll = <T extends Record<string, number>>(summary: T): T =>
  Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, round(v)])) as T

if (process.argv[2] === "child") {
  void child(process.argv[3]!, process.argv[4]!, Number(process.argv[5]), process.argv[6] === "1")
} else {
  main().then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}
