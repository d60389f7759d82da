/**
 * chord-fanin: chords of 10, 1,000 and 10,000 no-op body tasks — Baton on Postgres (bench/peers/baton-chord.ts) vs
 * BullMQ 6.7 flows on Redis (bench/peers/bullmq.ts: a FlowProducer parent with N children). Both run the same way:
 * one agent process per system holding its workers (bodies/children at concurrency 10, callback/parent at
 * concurrency 1), chords one at a time, each agent timing itself on the same definitions (bench/lib/chords.ts):
 * - latency (the headline): callback/parent handler start − the latest body/child handler end,
 * - withResultsLatency: until the callback holds every body result (BullMQ's parent fetches them),
 * - total: chord / flow creation call → callback/parent handler start.
 * Per round, each chord size runs on one system then the other (A B, the order swapping every round); before each
 * round each system is reset (Baton: TRUNCATE of its tables; BullMQ: FLUSHDB of its Redis database). Per-round
 * percentiles, medians over rounds; pooled percentiles over every chord as well.
 */
import { ensureDatabase } from "../lib/db.js"
import type { ChordRun } from "../lib/chords.js"
import { printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { type Agent, closeAgents, selectSystems, startSystemAgents } from "../lib/spawn.js"
import { latencySummary, median, round } from "../lib/stats.js"
import type { ScenarioOptions } from "./types.js"

interface System {
  readonly name: string
  readonly peer: string
  readonly setup: () => Promise<Record<string, unknown>>
  readonly settings: string
}

const redisDb = Number(process.env.BENCH_REDIS_DB ?? 5)

const systems: ReadonlyArray<System> = [
  {
    name: "baton",
    peer: "baton-chord",
    setup: async () => ({ url: await ensureDatabase("bench_chords"), schema: "chord_fanin" }),
    settings:
      "Postgres, own database bench_chords; SqlChordRegistry.layer + SqlCompletionBackend.layer + SqlTaskQueue.layer defaults (pool of 10); Worker.run concurrency 10 on the body queue, Worker.run concurrency 1 on the callback queue, other Worker options default"
  },
  {
    name: "bullmq",
    peer: "bullmq",
    setup: async () => ({ url: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379", db: redisDb }),
    settings: `BullMQ 6.7 FlowProducer, Redis 127.0.0.1 database ${redisDb} (no persistence), maxRetriesPerRequest null; children Worker concurrency 10, parent Worker concurrency 1, other options default (docs/benchmarks.md)`
  }
]

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  // [size, chords per round and system]
  const sizes: ReadonlyArray<readonly [number, number]> = options.quick
    ? [
        [10, 3],
        [100, 2],
        [1_000, 1]
      ]
    : [
        [10, 20],
        [1_000, 5],
        [10_000, 1]
      ]
  const plan = sizes.map(([size, chords]) => ({ size, chords }))
  const selected = selectSystems(systems, options.systems)
  const agents = new Map<string, Agent>()
  // samples[system][size][round] = runs
  const samples = new Map<string, Map<number, Array<Array<ChordRun>>>>()
  try {
    // Warm-up (connections, JIT, scripts) not recorded.
    await startSystemAgents(selected, agents, options.log, async (system, agent) => {
      await agent.call("setup", await system.setup(), 120_000)
      for (const { size } of plan) await agent.call("chord", { size: Math.min(size, options.quick ? 100 : 1_000) })
      samples.set(system.name, new Map(plan.map(({ size }) => [size, []])))
    })
    for (let r = 0; r < options.rounds; r++) {
      const order = selected.map((_, i) => selected[(i + r) % selected.length]!)
      for (const system of order) await agents.get(system.name)!.call("reset")
      for (const { chords, size } of plan) {
        for (const system of order) {
          const runs: Array<ChordRun> = []
          for (let i = 0; i < chords; i++) runs.push(await agents.get(system.name)!.call<ChordRun>("chord", { size }))
          samples.get(system.name)!.get(size)!.push(runs)
          const s = latencySummary(runs.map((x) => x.latency))
          options.log(
            `  round ${r + 1} ${system.name} ${size}: latency p50 ${round(s.p50)} ms, max ${round(s.max)} ms, total p50 ${round(median(runs.map((x) => x.total)))} ms`
          )
        }
      }
    }
  } finally {
    await closeAgents(agents.values())
  }

  const summarize = (system: System) => {
    const bySize: Record<string, Record<string, unknown>> = {}
    const flat: Record<string, number> = {}
    for (const { size } of plan) {
      const rounds = samples.get(system.name)!.get(size)!
      const perRound = rounds.map((runs) => {
        const latency = latencySummary(runs.map((x) => x.latency))
        return {
          p50: latency.p50,
          p99: latency.p99,
          total: median(runs.map((x) => x.total)),
          drain: median(runs.map((x) => x.drain))
        }
      })
      const all = rounds.flat()
      const pooled = latencySummary(all.map((x) => x.latency))
      const withResults = latencySummary(all.map((x) => x.withResultsLatency))
      const figures = {
        latencyP50Ms: round(median(perRound.map((x) => x.p50))),
        latencyP99Ms: round(median(perRound.map((x) => x.p99))),
        totalP50Ms: round(median(perRound.map((x) => x.total)))
      }
      for (const [key, value] of Object.entries(figures)) flat[`${key}_${size}`] = value
      bySize[String(size)] = {
        chords: all.length,
        ...figures,
        pooledLatencyP50Ms: round(pooled.p50),
        pooledLatencyP99Ms: round(pooled.p99),
        pooledLatencyMaxMs: round(pooled.max),
        withResultsP50Ms: round(withResults.p50),
        withResultsP99Ms: round(withResults.p99),
        drainPerSecond: size >= 100 ? round(median(perRound.map((x) => x.drain))) : undefined,
        rounds: perRound.map((x) => ({
          latencyP50Ms: round(x.p50),
          latencyP99Ms: round(x.p99),
          totalP50Ms: round(x.total)
        }))
      }
    }
    return { ...flat, bySize, settings: system.settings }
  }
  const results = new Map(selected.map((system) => [system.name, summarize(system)]))
  const ours = results.get("baton")! as Record<string, unknown>
  const peers = Object.fromEntries(
    selected.filter((s) => s.name !== "baton").map((s) => [s.name, results.get(s.name)! as Record<string, unknown>])
  )
  const headline = "latencyP99Ms_1000"
  printTable(
    `chord-fanin: last body done → callback handler start (ms; p50/p99 median of ${options.rounds} rounds' percentiles) and total chord time`,
    ["system", "bodies", "chords", "p50", "p99", "pooled p99", "+results p50", "total p50", "drain/s"],
    selected.flatMap((system) =>
      plan.map(({ size }) => {
        const s = (results.get(system.name)!.bySize as Record<string, Record<string, number>>)[String(size)]!
        return [
          system.name,
          size,
          s.chords,
          s.latencyP50Ms,
          s.latencyP99Ms,
          s.pooledLatencyP99Ms,
          s.withResultsP50Ms,
          s.totalP50Ms,
          s.drainPerSecond
        ]
      })
    )
  )
  return {
    scenario: "chord-fanin",
    unit: "ms",
    higherIsBetter: false,
    headline,
    ours,
    peers,
    ratios: ratios(headline, ours, peers),
    quick: options.quick,
    rounds: options.rounds,
    summary: plan.flatMap(({ size }) => [
      { figure: `last body → callback start p99, ${size.toLocaleString("en-US")} bodies`, key: `latencyP99Ms_${size}` },
      { figure: `total chord time p50, ${size.toLocaleString("en-US")} bodies`, key: `totalP50Ms_${size}` }
    ]),
    notes: [
      "latency = callback (Baton) / parent (BullMQ) handler's first statement − the latest body / child handler's last statement; both instants taken in the system's agent process (workers and timing in one process) on the host's monotonic clock (process.hrtime)",
      "withResults: Baton's callback receives the body results in its payload; BullMQ's parent reads them with job.getChildrenValues() after it started",
      "total = chord(...) / FlowProducer.add(...) call start → callback / parent handler start",
      `per size, chords run one at a time; per round ${plan.map((p) => `${p.chords} × ${p.size}`).join(", ")} per system, the systems alternating per size, the order swapping each round; latencyP50Ms/P99Ms = median over rounds of each round's percentile; pooled = over every chord`,
      "Redis runs without persistence: BullMQ's figures are not durability-equivalent to Postgres commits",
      "bench/chord-fanin.ts is Baton's own deeper chord benchmark (topologies, hot row, in-transaction time); it writes chord-fanin-detail.json"
    ]
  }
}
