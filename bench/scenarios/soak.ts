/**
 * soak (opt-in: `npm run bench -- soak`; 10 minutes, or 1 minute with `--quick`): Baton under steady load for a
 * long time, to see whether latency or table sizes drift. In its own database (bench_soak), four agent processes:
 * - worker: `Worker.run` at concurrency 10 in a process providing all of `Baton.layerPg` (the "full layer");
 * - producer: one `enqueueMany` every 50 ms, at half the drain rate measured first (a short drain by the worker
 *   alone, queue-throughput's `drain`), or at `--rate` jobs/s; each payload carries its enqueue time;
 * - subscriber: a `CompletionBackend.subscribe` consumer counting events (in the producer's process);
 * - chords: one chord of 10 bodies every second (fixed schedule; a chord still running delays the next), timed from
 *   the `chord(...)` call to its callback's handler start (bench/peers/baton-chord.ts).
 * Reported per minute (per 20 s with --quick): enqueue → handler start p50/p99 and chord time p50/p99; at the end,
 * pg_total_relation_size and pg_stat_user_tables.n_dead_tup of Baton's tables, against their values at the start.
 * Retention is on: the worker runs `Retention.prune` once per bucket, keeping succeeded tasks and settled chords one
 * bucket long (Baton.layerPg's own Retention, at its 7-day defaults, prunes nothing in a soak).
 */
import type pg from "pg"
import { connect, ensureDatabase, pollUntilZero } from "../lib/db.js"
import { batonFull, type QueueSystem, startAgents } from "../lib/queues.js"
import { printTable, type ScenarioResult } from "../lib/report.js"
import { type Agent, spawnAgent } from "../lib/spawn.js"
import { nowMs, percentile, round } from "../lib/stats.js"
import { drain } from "./queue-throughput.js"
import type { ScenarioOptions } from "./types.js"

const system: QueueSystem = { ...batonFull, name: "baton (soak)", database: "bench_soak" }
const schema = "bench"

interface TableStat {
  readonly table: string
  readonly bytes: number
  readonly deadTuples: number
  readonly liveTuples: number
}

const tableStats = async (client: pg.Client): Promise<Array<TableStat>> => {
  const { rows } = await client.query<{ table: string; bytes: string; dead: string; live: string }>(
    `SELECT c.relname AS table, pg_total_relation_size(c.oid) AS bytes,
            coalesce(s.n_dead_tup, 0) AS dead, coalesce(s.n_live_tup, 0) AS live
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname LIKE 'baton%'
      ORDER BY c.relname`,
    [schema]
  )
  return rows.map((row) => ({
    table: row.table,
    bytes: Number(row.bytes),
    deadTuples: Number(row.dead),
    liveTuples: Number(row.live)
  }))
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const durationMs = options.quick ? 60_000 : 600_000
  const bucketMs = options.quick ? 20_000 : 60_000
  const chordSize = 10
  const concurrency = 10
  const notes: Array<string> = []
  // Retention: Baton.layerPg's (defaults: 7 days, every minute, in the worker's Reconciler) prunes nothing in a
  // soak, so the runner also has the worker prune once per bucket, keeping succeeded tasks and settled chords this
  // long (the completions log keeps its backend's own policy, 7 days).
  const retainMs = options.quick ? 20_000 : 60_000
  let prunedTasks = 0
  let prunedChords = 0
  notes.push(
    `retention on: Retention.prune (SqlRetention.make) once per bucket, succeeded tasks and settled chords kept ${retainMs / 1000} s; the completions log keeps its default 7 days`
  )
  const agents: Array<Agent> = []
  let poll: pg.Client | undefined
  try {
    const url = await ensureDatabase(system.database)
    const [worker, producer] = await startAgents(system, 2)
    agents.push(worker!, producer!)
    poll = await connect(url)
    let rate = options.rate
    if (rate === undefined || !Number.isFinite(rate) || rate <= 0) {
      const n = options.quick ? 1_000 : 5_000
      const measured = await drain(system, producer!, [worker!], poll, n, concurrency)
      rate = Math.max(1, Math.round(measured.committed / 2))
      options.log(`  drain of ${n} by 1 process: ${Math.round(measured.committed)} jobs/s committed; soak at ${rate}/s`)
      notes.push(
        `rate ${rate} jobs/s = half of a ${n}-job drain by the worker process (${round(measured.committed)} jobs/s)`
      )
    } else {
      await producer!.call("reset")
      notes.push(`rate ${rate} jobs/s given by --rate`)
    }
    const chords = spawnAgent("baton-chord", {}, "baton-chord (soak)")
    agents.push(chords)
    await chords.call("setup", { url, schema }, 120_000)
    // A clean start for every table the soak writes (its reset TRUNCATEs baton_tasks, baton_chords, baton_completions).
    await chords.call("reset", null, 60_000)
    await producer!.call("subscribe", null, 60_000)
    const before = await tableStats(poll)

    await worker!.call("startWorker", { concurrency, ...system.worker })
    const start = nowMs()
    const bucketOf = (at: number) => Math.floor((at - start) / bucketMs)
    const buckets = Math.ceil(durationMs / bucketMs)
    const latencies: Array<Array<number>> = Array.from({ length: buckets }, () => [])
    const chordTimes: Array<Array<number>> = Array.from({ length: buckets }, () => [])
    const production = producer!.call<{ sent: number; ms: number }>(
      "produceBatched",
      { rate, durationMs },
      durationMs + 120_000
    )
    const chordLoop = (async () => {
      let late = 0
      // One chord at a time, one due every second; a chord that ends late makes the next start at once, and the
      // loop stops when the soak ends (so chords-per-bucket below 60 / minute means chords took over a second).
      for (let i = 0; ; i++) {
        const due = start + i * 1000
        if (due >= start + durationMs || nowMs() >= start + durationMs) break
        const wait = due - nowMs()
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
        else if (wait < -1000) late++
        const at = nowMs()
        const result = await chords.call<{ total: number }>("chord", { size: chordSize }, 120_000)
        chordTimes[Math.min(buckets - 1, bucketOf(at))]!.push(result.total)
      }
      return late
    })()
    // Latencies land in the bucket in which the runner collected them (the handler started in it or just before).
    const collector = (async () => {
      for (let b = 1; b <= buckets; b++) {
        const wait = start + b * bucketMs - nowMs()
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
        const taken = await worker!.call<Array<number>>("takeLatencies")
        const pruned = await worker!.call<{ tasks: { succeeded: number }; chords: number }>("prune", {
          maxAgeMs: retainMs
        })
        prunedTasks += pruned.tasks.succeeded
        prunedChords += pruned.chords
        for (const l of taken) latencies[b - 1]!.push(l)
        options.log(
          `  ${((b * bucketMs) / 1000).toFixed(0)} s: ${taken.length} jobs started, enqueue→start p99 ${round(percentile(taken, 99))} ms; chords ${chordTimes[b - 1]!.length}, p99 ${round(percentile(chordTimes[b - 1]!, 99))} ms`
        )
      }
    })()
    const [produced, lateChords] = await Promise.all([production, chordLoop, collector]).then(
      ([p, late]) => [p, late] as const
    )
    // Let the backlog drain, then stop and collect the stragglers into the last bucket.
    await pollUntilZero(poll, system.remainingSql, { intervalMs: 50, timeoutMs: 300_000 })
    const rest = await worker!.call<Array<number>>("takeLatencies")
    for (const l of rest) latencies[buckets - 1]!.push(l)
    const finished = await worker!.call<{ handled: number }>("stopWorker")
    const stream = await producer!.call<{ events: number; error: string | null }>("completionEvents")
    const after = await tableStats(poll)

    const perBucket = latencies.map((samples, b) => ({
      from: (b * bucketMs) / 1000,
      jobs: samples.length,
      latencyP50: round(percentile(samples, 50)),
      latencyP99: round(percentile(samples, 99)),
      chords: chordTimes[b]!.length,
      chordP50: round(percentile(chordTimes[b]!, 50)),
      chordP99: round(percentile(chordTimes[b]!, 99))
    }))
    const unitLabel = options.quick ? "20 s" : "minute"
    printTable(
      `soak: ${rate} jobs/s for ${durationMs / 1000} s (${produced.sent} sent) + a chord of ${chordSize} every second; per ${unitLabel} (ms)`,
      ["from (s)", "jobs", "enq→start p50", "p99", "chords", "chord p50", "p99"],
      perBucket.map((b) => [b.from, b.jobs, b.latencyP50, b.latencyP99, b.chords, b.chordP50, b.chordP99])
    )
    const beforeOf = new Map(before.map((t) => [t.table, t]))
    printTable(
      "soak: Baton's tables, start → end",
      ["table", "size start (kB)", "size end (kB)", "dead tuples start", "dead tuples end", "live end"],
      after.map((t) => [
        t.table,
        round((beforeOf.get(t.table)?.bytes ?? 0) / 1024),
        round(t.bytes / 1024),
        beforeOf.get(t.table)?.deadTuples ?? 0,
        t.deadTuples,
        t.liveTuples
      ])
    )
    options.log(
      `  handled ${finished.handled}; completion stream saw ${stream.events} events (jobs, chord bodies and callbacks); retention pruned ${prunedTasks} tasks, ${prunedChords} chords${stream.error !== null ? `, failed: ${stream.error}` : ""}; chords started > 1 s late: ${lateChords}`
    )
    if (stream.error !== null) notes.push(`the completion-stream subscriber failed: ${stream.error.slice(0, 300)}`)
    const all = latencies.flat()
    const allChords = chordTimes.flat()
    const last = perBucket[perBucket.length - 1]!
    const first = perBucket[0]!
    notes.push(
      `per ${unitLabel}: enqueue → handler start (payload time just before the enqueueMany call → first statement of the handler) and chord time (chord(...) call → callback handler start)`,
      "table sizes: pg_total_relation_size (heap + indexes + TOAST); dead tuples: pg_stat_user_tables.n_dead_tup (cumulative statistics: they may lag the last second or so)"
    )
    const ours = {
      rate,
      sent: produced.sent,
      handled: finished.handled,
      completionEvents: stream.events,
      lateChords,
      latencyP99: round(percentile(all, 99)),
      latencyP50: round(percentile(all, 50)),
      chordP99: round(percentile(allChords, 99)),
      chordP50: round(percentile(allChords, 50)),
      latencyP99First: first.latencyP99,
      latencyP99Last: last.latencyP99,
      chordP99First: first.chordP99,
      chordP99Last: last.chordP99,
      bytesEnd: after.reduce((sum, t) => sum + t.bytes, 0),
      deadTuplesEnd: after.reduce((sum, t) => sum + t.deadTuples, 0),
      perBucket,
      tables: { before, after },
      retention: { keepMs: retainMs, prunedTasks, prunedChords },
      settings: system.settings
    }
    return {
      scenario: "soak",
      unit: "ms",
      higherIsBetter: false,
      headline: "latencyP99",
      ours,
      peers: {},
      ratios: {},
      quick: options.quick,
      rounds: 1,
      summary: [
        { figure: `soak ${durationMs / 60_000} min at ${rate} jobs/s: enqueue → start p99`, key: "latencyP99" },
        { figure: "soak: chord of 10, call → callback start p99", key: "chordP99" },
        { figure: "soak: Baton's tables at the end", key: "bytesEnd", unit: "bytes" },
        { figure: "soak: dead tuples at the end", key: "deadTuplesEnd", unit: "tuples" }
      ],
      notes
    }
  } finally {
    for (const agent of agents) {
      await agent.call("teardown", null, 60_000).catch(() => undefined)
      await agent.close()
    }
    await poll?.end().catch(() => undefined)
  }
}
