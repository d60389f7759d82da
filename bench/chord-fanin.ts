/**
 * Chord fan-in on Postgres: the time from the last body completion to the callback being enqueued, for chords of 10,
 * 1,000 and 100,000 body tasks, and the total chord time; plus the hot-row check: draining 100,000 body tasks of one
 * chord (every completion moves the same counter row) next to draining 100,000 plain tasks with the same workers.
 *
 *   npx tsx bench/chord-fanin.ts [--quick] [--plan 10:100,1000:20,100000:3] [--topologies 1x100,4x25]
 *
 * Setup: Baton in its own database (`bench_chords`), `SqlTaskQueue` + `SqlChordRegistry` (+ `SqlCompletionBackend`,
 * as in production), a pool of 20 connections. Two worker topologies are measured in the same run, one after the
 * other: `1x100` (one `Worker.run` with 100 slots: one completer, so completions of a chord never contend for its
 * row) and `4x25` (four `Worker.run` instances with 25 slots each, each with its own completion batches: they contend
 * for the chord row, as workers of several processes do). The body handler returns `n * 2` at once.
 *
 * What is measured, per chord:
 * - `latency` (the headline): from the moment the last body handler returned (host monotonic clock, recorded by the
 *   handler) to the moment the callback task is visible to another connection (an observer polls the chord row back to
 *   back on its own connection once the body is nearly done). It therefore includes the worker's group-commit wait,
 *   the completing transaction (which counts, reads the body results once and inserts the callback) and its commit,
 *   plus at most one observer round trip.
 * - `inTransaction`: `dispatched_at - last_body_at` from the chord row: the part of that time spent inside the
 *   completing transaction (reading the results, building the payload), by the database clock in ms.
 * - `total`: from the `chord(...)` call to the callback being visible.
 * - drain rates (body tasks per second from the first to the last handler) and, during the 100,000-task runs, how
 *   often a backend of this benchmark was waiting on a lock (sampled every 50 ms from `pg_stat_activity`).
 * - the queue's floor, measured the same way: one plain task, from its handler returning to its completion being
 *   visible; and 100,000 plain tasks drained by the same workers (the hot-row comparison).
 *
 * Not part of `npm run bench` (whose chord-fanin scenario, bench/scenarios/chord-fanin.ts, compares Baton with BullMQ):
 * Baton's deeper chord diagnostics. Writes bench/results/chord-fanin-detail.json. Environment: BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as os from "node:os"
import type pg from "pg"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import { connect, ensureDatabase, serverInfo } from "./lib/db.js"
import { machine, printTable, writeResult } from "./lib/report.js"
import { latencySummary, mean, median, nowMs, round } from "./lib/stats.js"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const topologiesArg = args.includes("--topologies") ? args[args.indexOf("--topologies") + 1] : undefined
const topologies: ReadonlyArray<{ readonly workers: number; readonly concurrency: number }> = (
  topologiesArg ?? "1x100,4x25"
)
  .split(",")
  .map((item) => {
    const [workers, concurrency] = item.split("x").map(Number)
    return { workers: workers!, concurrency: concurrency! }
  })
const planArg = args.includes("--plan") ? args[args.indexOf("--plan") + 1] : undefined
const plan: ReadonlyArray<{ readonly size: number; readonly runs: number }> = planArg
  ? planArg.split(",").map((item) => {
      const [size, runs] = item.split(":").map(Number)
      return { size: size!, runs: runs ?? 1 }
    })
  : quick
    ? [
        { size: 10, runs: 20 },
        { size: 1_000, runs: 5 },
        { size: 100_000, runs: 1 }
      ]
    : [
        { size: 10, runs: 100 },
        { size: 1_000, runs: 20 },
        { size: 100_000, runs: 3 }
      ]

// Per chord: when its body handlers ran (host monotonic clock). Keyed by chord id (TaskContext.chordId).
const timings = new Map<string, { first: number; last: number; count: number }>()
// Plain drain runs: distinct payloads seen (a task run twice counts once) and when. Single tasks: n < 0.
const plain = { first: 0, last: 0, seen: new Set<number>() }
const singles = new Map<number, number>()

const Double = Task.make("bench-double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) =>
    Effect.map(Task.TaskContext, (ctx) => {
      const now = nowMs()
      if (ctx.chordId === undefined) {
        if (n < 0) singles.set(n, now)
        else {
          if (plain.seen.size === 0) plain.first = now
          plain.seen.add(n)
          plain.last = now
        }
      } else {
        let t = timings.get(ctx.chordId)
        if (t === undefined) timings.set(ctx.chordId, (t = { first: now, last: now, count: 0 }))
        t.count++
        t.last = Math.max(t.last, now)
      }
      return n * 2
    })
})

const Total = Task.make("bench-total", {
  payload: ChordRegistry.callbackPayload(Schema.Number),
  success: Schema.Number,
  handler: ({ results }) => Effect.succeed(results.length)
})

interface ChordSample {
  readonly size: number
  readonly latency: number
  readonly inTransaction: number
  readonly total: number
  readonly drain: number
  readonly lockWaitShare?: number
  readonly lockWaitersMean?: number
}

/** Samples lock waits of this benchmark's backends every 50 ms until stopped. */
const lockSampler = (client: pg.Client, applicationName: string) => {
  const samples: Array<number> = []
  let running = true
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [applicationName]
      )
      samples.push(Number(rows[0]!.n))
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()
  return async () => {
    running = false
    await loop
    return {
      lockWaitShare: samples.length === 0 ? 0 : samples.filter((n) => n > 0).length / samples.length,
      lockWaitersMean: mean(samples)
    }
  }
}

/** Waits for the callback of `chordId` to be visible; polls slowly until the body is nearly done, then back to back. */
const observe = async (client: pg.Client, chordId: string, size: number): Promise<number> => {
  for (;;) {
    const { rows } = await client.query<{ callback_task_id: string | null; done: number }>(
      "SELECT callback_task_id, succeeded + failed + cancelled AS done FROM baton_chords WHERE id = $1",
      [chordId]
    )
    const row = rows[0]!
    if (row.callback_task_id !== null) return nowMs()
    if (size - Number(row.done) > 500) await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const main = async () => {
  const url = await ensureDatabase("bench_chords")
  const postgres = await serverInfo()
  const applicationName = `baton-chord-bench-${process.pid}`
  const schema = `chord_bench_${process.pid}`
  console.log(`chord fan-in: ${plan.map((p) => `${p.runs} x ${p.size}`).join(", ")} body tasks`)
  console.log(`topologies: ${topologies.map((t) => `${t.workers}x${t.concurrency}`).join(", ")}`)
  console.log(`node ${process.version}, ${postgres}, ${machine()}`)

  const layer = SqlChordRegistry.layer.pipe(
    Layer.provideMerge(SqlCompletionBackend.layer),
    Layer.provideMerge(SqlTaskQueue.layer),
    Layer.provideMerge(Storage.layerPg({ url, schema, maxConnections: 20, applicationName }))
  )
  const runtime = ManagedRuntime.make(layer)
  const observer = await connect(url)
  await observer.query(`SET search_path = ${schema}`)
  const sampler = await connect(url)

  const runPhase = async (workers: number, concurrency: number) => {
    const startWorkers: Effect.Effect<void, unknown, TaskQueue | Scope.Scope> = Effect.forEach(
      Array.from({ length: workers }, (_, i) => i),
      (i) =>
        Worker.run({
          // No heartbeat during the run (lease 30 min, beat every 10 min): SqlTaskQueue's heartbeat and completion
          // UPDATEs can deadlock on Postgres (reported), and a lost completion batch stalls for a lease. That is a
          // queue issue, not the fan-in being measured.
          leaseDuration: "30 minutes",
          heartbeatInterval: "10 minutes",
          tasks: [Double, Total],
          concurrency,
          workerId: `bench-${i}`,
          pollInterval: { min: "1 millis", max: "20 millis" }
        }),
      { discard: true }
    )
    const scope = await runtime.runPromise(Scope.make())
    await runtime.runPromise(Scope.extend(startWorkers, scope))
    console.log(`\n--- ${workers} worker(s) x ${concurrency} slots`)

    const runChord = async (size: number): Promise<ChordSample> => {
      const stopSampler = size >= 10_000 ? lockSampler(sampler, applicationName) : undefined
      const t0 = nowMs()
      const handle = await runtime.runPromise(
        Effect.flatMap(ChordRegistry.ChordRegistry, (registry) =>
          registry.chord({
            body: Array.from({ length: size }, (_, n) => Task.call(Double, { n })),
            callback: ChordRegistry.callback(Total, {})
          })
        )
      )
      const visible = await observe(observer, handle.chordId, size)
      const locks = stopSampler === undefined ? undefined : await stopSampler()
      const { rows } = await observer.query<{ in_tx: number }>(
        "SELECT dispatched_at - last_body_at AS in_tx FROM baton_chords WHERE id = $1",
        [handle.chordId]
      )
      const t = timings.get(handle.chordId)
      timings.delete(handle.chordId)
      if (t === undefined || t.count < size) {
        throw new Error(`chord ${handle.chordId}: ${t?.count ?? 0} of ${size} body handlers ran`)
      }
      return {
        size,
        latency: visible - t.last,
        inTransaction: Number(rows[0]!.in_tx),
        total: visible - t0,
        drain: (size / Math.max(1, t.last - t.first)) * 1000,
        ...(locks ?? {})
      }
    }

    /** 100,000 plain tasks (no chord) through the same workers: the drain rate without the chord counter. */
    const runPlain = async (size: number) => {
      plain.seen.clear()
      const stopSampler = lockSampler(sampler, applicationName)
      await runtime.runPromise(
        Effect.flatMap(TaskQueue, (queue) =>
          queue.enqueueMany(Array.from({ length: size }, (_, n) => Task.call(Double, { n })))
        )
      )
      while (plain.seen.size < size) await new Promise((resolve) => setTimeout(resolve, 20))
      const locks = await stopSampler()
      return { drain: (size / Math.max(1, plain.last - plain.first)) * 1000, ...locks }
    }

    /** The queue's own floor: one plain task, from its handler returning to its completion being visible. */
    let single = 0
    const runSingle = async (): Promise<number> => {
      const n = -1 - single++
      const id = await runtime.runPromise(Effect.flatMap(TaskQueue, (queue) => queue.enqueue(Double, { n })))
      for (;;) {
        const { rows } = await observer.query<{ state: string }>("SELECT state FROM baton_tasks WHERE id = $1", [id])
        if (rows[0]!.state === "succeeded") return nowMs() - singles.get(n)!
      }
    }
    const baseline: Array<number> = []
    await runSingle()
    for (let i = 0; i < (quick ? 20 : 100); i++) baseline.push(await runSingle())
    const baselineSummary = latencySummary(baseline)
    console.log(
      `  plain task, handler return → completion visible: p50 ${round(baselineSummary.p50)} ms, p99 ${round(baselineSummary.p99)} ms`
    )

    const results: Record<number, Array<ChordSample>> = {}
    for (const { runs, size } of plan) {
      // One warm-up chord per size (connections, JIT), not recorded.
      if (size < 100_000) await runChord(size)
      const list: Array<ChordSample> = []
      for (let i = 0; i < runs; i++) {
        const sample = await runChord(size)
        list.push(sample)
        if (size >= 1_000) {
          console.log(
            `  ${size}: latency ${round(sample.latency)} ms, in-tx ${sample.inTransaction} ms, total ${round(sample.total)} ms, ` +
              `drain ${round(sample.drain)}/s` +
              (sample.lockWaitShare === undefined ? "" : `, lock-wait share ${round(sample.lockWaitShare)}`)
          )
        }
      }
      results[size] = list
    }
    const plainRuns: Array<{ drain: number; lockWaitShare: number; lockWaitersMean: number }> = []
    const plainSize = Math.max(...plan.map((p) => p.size))
    for (let i = 0; i < (quick ? 1 : 2); i++) {
      const r = await runPlain(plainSize)
      console.log(`  plain ${plainSize}: drain ${round(r.drain)}/s, lock-wait share ${round(r.lockWaitShare)}`)
      plainRuns.push(r)
    }

    const summary = (size: number) => {
      const list = results[size]!
      const latency = latencySummary(list.map((s) => s.latency))
      const inTx = latencySummary(list.map((s) => s.inTransaction))
      const total = latencySummary(list.map((s) => s.total))
      return {
        runs: list.length,
        latencyP50Ms: round(latency.p50),
        latencyP99Ms: round(latency.p99),
        latencyMaxMs: round(latency.max),
        inTransactionP50Ms: round(inTx.p50),
        inTransactionP99Ms: round(inTx.p99),
        totalP50Ms: round(total.p50),
        totalP99Ms: round(total.p99),
        drainPerSecond: size >= 1_000 ? round(median(list.map((s) => s.drain))) : undefined,
        ...(size >= 10_000
          ? {
              lockWaitShare: round(median(list.map((s) => s.lockWaitShare ?? 0))),
              lockWaitersMean: round(median(list.map((s) => s.lockWaitersMean ?? 0)))
            }
          : {}),
        samples: list.map((s) => ({
          latency: round(s.latency),
          inTransaction: s.inTransaction,
          total: round(s.total),
          drain: round(s.drain)
        }))
      }
    }
    const bySize = Object.fromEntries(plan.map(({ size }) => [String(size), summary(size)]))
    const plainDrain = median(plainRuns.map((r) => r.drain))
    const chordDrain = bySize[String(plainSize)]!.drainPerSecond
    printTable(
      "last body completion → callback enqueued (ms)",
      ["body tasks", "runs", "p50", "p99", "max", "in-tx p50", "total p50", "drain/s"],
      plan.map(({ size }) => {
        const s = bySize[String(size)]!
        return [
          size,
          s.runs,
          s.latencyP50Ms,
          s.latencyP99Ms,
          s.latencyMaxMs,
          s.inTransactionP50Ms,
          s.totalP50Ms,
          s.drainPerSecond
        ]
      })
    )
    console.log(
      `hot row: ${plainSize} plain tasks drain at ${round(plainDrain)}/s, one ${plainSize}-task chord at ${chordDrain}/s`
    )
    // Nothing left over for the next phase (callbacks, re-runs).
    for (;;) {
      const { rows } = await observer.query<{ n: number }>(
        "SELECT count(*) AS n FROM baton_tasks WHERE state IN ('pending', 'running')"
      )
      if (Number(rows[0]!.n) === 0) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    await runtime.runPromise(Scope.close(scope, Exit.void))
    return {
      latencyP50Ms_10: bySize["10"]?.latencyP50Ms,
      latencyP99Ms_10: bySize["10"]?.latencyP99Ms,
      latencyP50Ms_1000: bySize["1000"]?.latencyP50Ms,
      latencyP99Ms_1000: bySize["1000"]?.latencyP99Ms,
      latencyP50Ms_100000: bySize["100000"]?.latencyP50Ms,
      latencyP99Ms_100000: bySize["100000"]?.latencyP99Ms,
      totalP50Ms_10: bySize["10"]?.totalP50Ms,
      totalP50Ms_1000: bySize["1000"]?.totalP50Ms,
      totalP50Ms_100000: bySize["100000"]?.totalP50Ms,
      plainTaskCompletionP50Ms: round(baselineSummary.p50),
      plainTaskCompletionP99Ms: round(baselineSummary.p99),
      bySize,
      hotRow: {
        plainDrainPerSecond: round(plainDrain),
        chordDrainPerSecond: chordDrain,
        chordOverPlain: chordDrain === undefined ? undefined : round(chordDrain / plainDrain),
        plainLockWaitShare: round(median(plainRuns.map((r) => r.lockWaitShare))),
        plainRuns: plainRuns.map((r) => ({ drain: round(r.drain), lockWaitShare: round(r.lockWaitShare) }))
      },
      settings: `${workers} Worker.run x concurrency ${concurrency} (default prefetch) in one process, lease 30 min without heartbeats during the run, pool of 20; SqlChordRegistry.layer + SqlCompletionBackend.layer defaults`
    }
  }

  const loadBefore = os.loadavg().map((l) => round(l))
  const phases: Record<string, Awaited<ReturnType<typeof runPhase>>> = {}
  for (const { concurrency, workers } of topologies) {
    phases[`${workers}x${concurrency}`] = await runPhase(workers, concurrency)
  }
  const main4 = phases["4x25"] ?? Object.values(phases)[0]!
  const file = writeResult({
    scenario: "chord-fanin-detail",
    unit: "ms",
    higherIsBetter: false,
    headline: "latencyP99Ms_1000",
    // Top-level figures: the contended topology (several completers per chord, as with several worker processes).
    ours: {
      ...Object.fromEntries(Object.entries(main4).filter(([key]) => key !== "bySize" && key !== "hotRow")),
      topologies: phases,
      loadAverage: { before: loadBefore, after: os.loadavg().map((l) => round(l)) }
    },
    peers: {},
    ratios: {},
    node: process.version,
    postgres,
    when: new Date().toISOString(),
    quick,
    rounds: 1,
    machine: machine(),
    notes: [
      "latency: last body handler returned → callback task visible to another connection (observer polls back to back near the end); includes group commit, the completing transaction (count, read results, insert callback) and its commit",
      "inTransaction: dispatched_at - last_body_at on the chord row (database-side part, ms resolution)",
      "total: chord(...) call → callback visible (includes enqueueing the body and draining it)",
      "plainTaskCompletion: the queue's floor measured the same way for one plain task (handler returned → its succeeded state visible)",
      "topologies: 1x100 = one Worker.run with 100 slots (one completer: no contention on the chord row), 4x25 = four Worker.run with 25 slots each (four completers contend for the chord row, like several worker processes); the top-level figures are 4x25",
      "hotRow: the same workers drain 100,000 plain tasks; lockWaitShare = share of 50 ms samples in which a backend of this benchmark waited on a lock"
    ]
  })
  console.log(`wrote ${file}`)

  await runtime.dispose()
  await observer.end()
  await sampler.end()
  const cleanup = await connect(url)
  await cleanup.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await cleanup.end()
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
