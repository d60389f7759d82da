/**
 * queue-latency: enqueue → handler start at light load. A producer process enqueues one job every 10 ms (one
 * `enqueue` / `addJob` / `send` call each, with the host-wide monotonic time in the payload); a separate, idle
 * worker process (concurrency 10) records when each handler starts. Both sides are woken by LISTEN/NOTIFY, so the
 * figure is NOTIFY delivery + the claim round trip + dispatch. The first 10 jobs of a round are warm-up.
 * A system that has not run every job 10 s after the producer finished is stopped; the jobs it had not started are
 * counted as dropped samples (per round and in total, in the JSON and the table), never silently left out.
 */
import {
  assertSyncClaims,
  baton,
  batonSyncClaims,
  collect,
  graphile,
  pgBoss,
  type QueueSystem,
  startAgents
} from "../lib/queues.js"
import { family, printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { latencySummary, median, round } from "../lib/stats.js"
import type { Agent } from "../lib/spawn.js"
import type { ScenarioOptions } from "./types.js"

const warmup = 10

interface Round {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  /** Jobs of the round that had not started by the deadline: samples missing from the percentiles. */
  readonly dropped: number
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const jobs = (options.quick ? 30 : 500) + warmup
  const intervalMs = 10
  const concurrency = 10
  const systems: ReadonlyArray<QueueSystem> = [
    baton,
    batonSyncClaims,
    graphile,
    {
      ...pgBoss,
      worker: { variant: "latency" },
      settings:
        "useListenNotify, queue notify: true; work batchSize 1, localConcurrency 10 (with localConcurrency 1 it fell behind one job every 10 ms)"
    }
  ].filter(
    (system) =>
      options.systems === undefined ||
      options.systems.includes(system.name) ||
      options.systems.includes(family(system.name)) ||
      system.ours
  )
  const agents = new Map<string, ReadonlyArray<Agent>>()
  const results = new Map<string, Array<Round>>()
  const pooled = new Map<string, Array<number>>()
  try {
    const setupStarted = performance.now()
    // Systems start in parallel (each in its own database).
    await Promise.all(
      systems.map(async (system) => {
        agents.set(system.name, await startAgents(system, 2))
        results.set(system.name, [])
        pooled.set(system.name, [])
      })
    )
    options.log(`  agents ready in ${((performance.now() - setupStarted) / 1000).toFixed(1)} s`)
    for (let r = 0; r < options.rounds; r++) {
      const order = systems.map((_, i) => systems[(i + r) % systems.length]!)
      for (const system of order) {
        const [worker, producer] = agents.get(system.name)!
        await worker!.call("reset")
        await worker!.call("startWorker", { concurrency, ...system.worker })
        // Let the worker settle into its idle state (LISTEN established, first empty poll done).
        await new Promise((resolve) => setTimeout(resolve, options.quick ? 150 : 300))
        await producer!.call("produce", { count: jobs, intervalMs })
        // Wait for the last jobs to run.
        const deadline = performance.now() + 10_000
        let result: { handled: number; latencies: Array<number> }
        for (;;) {
          await new Promise((resolve) => setTimeout(resolve, 50))
          const progress = await worker!.call<{ handled: number }>("progress")
          if (progress.handled >= jobs || performance.now() > deadline) break
        }
        result = await worker!.call("stopWorker")
        await assertSyncClaims(system, [worker!])
        const dropped = Math.max(0, jobs - result.handled)
        if (dropped > 0)
          options.log(`  ${system.name}: only ${result.handled} of ${jobs} jobs ran (${dropped} dropped)`)
        const samples = result.latencies.slice(warmup)
        pooled.get(system.name)!.push(...samples)
        const summary = latencySummary(samples)
        const row = {
          p50: round(summary.p50),
          p90: round(summary.p90),
          p99: round(summary.p99),
          max: round(summary.max),
          dropped
        }
        results.get(system.name)!.push(row)
        options.log(`  round ${r + 1} ${system.name}: ${JSON.stringify(row)}`)
      }
    }
  } finally {
    for (const list of agents.values()) await Promise.all(list.map((agent) => agent.close()))
  }
  const { ours, peers, summaries } = collect(systems, (system) => {
    const rounds = results.get(system.name)!
    const all = latencySummary(pooled.get(system.name)!)
    return {
      p50: round(median(rounds.map((x) => x.p50))),
      p99: round(median(rounds.map((x) => x.p99))),
      pooledP50: round(all.p50),
      pooledP99: round(all.p99),
      pooledMax: round(all.max),
      samples: all.count,
      dropped: rounds.reduce((sum, x) => sum + x.dropped, 0),
      rounds,
      settings: system.settings
    }
  })
  printTable(
    `queue-latency: enqueue → handler start, one job every ${intervalMs} ms, ${jobs - warmup} jobs a round, median of ${options.rounds} rounds (ms)`,
    ["system", "p50", "p99", "pooled p50", "pooled p99", "pooled max", "samples", "dropped"],
    systems.map((system) => {
      const s = summaries.get(system.name)! as Record<string, number>
      return [system.name, s.p50, s.p99, s.pooledP50, s.pooledP99, s.pooledMax, s.samples, s.dropped]
    })
  )
  return {
    scenario: "queue-latency",
    unit: "ms",
    higherIsBetter: false,
    headline: "p99",
    ours,
    peers,
    ratios: ratios("p99", ours, peers),
    quick: options.quick,
    rounds: options.rounds,
    summary: [
      { figure: `enqueue → handler start p99, one job every ${intervalMs} ms`, key: "p99" },
      { figure: "enqueue → handler start p50", key: "p50" },
      {
        figure: `dropped samples (not started 10 s after the last enqueue), ${options.rounds} rounds`,
        key: "dropped",
        unit: "jobs",
        higherIsBetter: false
      }
    ],
    notes: [
      `producer and worker are separate processes; latency = handler start − enqueue call start (CLOCK_MONOTONIC, same host); the first ${warmup} jobs of each round are dropped`,
      "p50/p99 are medians over rounds of each round's percentile; pooled figures are over all samples",
      "dropped: jobs not started 10 s after the producer finished (the system is then stopped); they are missing from the percentiles, counted per round under rounds[].dropped and in total"
    ]
  }
}
