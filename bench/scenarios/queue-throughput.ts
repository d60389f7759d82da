/**
 * queue-throughput: bulk-enqueue N no-op jobs (one call), then drain them with one worker process at concurrency
 * 10, and again with two processes (concurrency 10 each). Reported per system and round:
 * - enqueue jobs/s: N / time of the one bulk enqueue call (in the agent process),
 * - drain jobs/s (handled): N / time from "start worker" to the last handler having run,
 * - drain jobs/s (committed): N / time from "start worker" until the database shows every job completed
 *   (the headline: work is done when its completion is durable).
 * Systems alternate within each round (and the order rotates between rounds); medians over the rounds.
 */
import type { Agent } from "../lib/spawn.js"
import { connect, databasePrefix, urlFor } from "../lib/db.js"
import {
  assertSyncClaims,
  baton,
  batonFull,
  batonSyncClaims,
  collect,
  graphile,
  graphilePerf,
  pgBoss,
  pgBossPerf,
  type QueueSystem,
  startAgents,
  waitForHandled
} from "../lib/queues.js"
import { family, printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { medianOfRounds, round } from "../lib/stats.js"
import { pollUntilZero } from "../lib/db.js"
import type { ScenarioOptions } from "./types.js"

interface Round {
  enqueue: number
  drain1: number
  drain1Handled: number
  drain2: number
  drain2Handled: number
}

/**
 * Resets, bulk-enqueues `n` no-op jobs from `producer`, starts `workers` (concurrency each) and times the drain
 * (also used by scale-out and soak).
 */
export const drain = async (
  system: QueueSystem,
  producer: Agent,
  workers: ReadonlyArray<Agent>,
  poll: import("pg").Client,
  n: number,
  concurrency: number
) => {
  await producer.call("reset")
  const enq = await producer.call<{ ms: number; count: number }>("enqueueBulk", { n })
  if (enq.count !== n) throw new Error(`${system.name}: enqueued ${enq.count} of ${n}`)
  const handled = waitForHandled(workers, n)
  const t0 = performance.now()
  await Promise.all(workers.map((w) => w.call("startWorker", { concurrency, ...system.worker })))
  const tHandled = await handled
  const tCommitted = await pollUntilZero(poll, system.remainingSql)
  await Promise.all(workers.map((w) => w.call("stopWorker")))
  await assertSyncClaims(system, workers)
  return {
    enqueue: (n / enq.ms) * 1000,
    handled: (n / (tHandled - t0)) * 1000,
    committed: (n / (tCommitted - t0)) * 1000
  }
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const n = options.quick ? 500 : 20_000
  const rounds = options.rounds
  const concurrency = 10
  const systems = [
    baton,
    batonSyncClaims,
    ...(options.quick ? [] : [batonFull]),
    graphile,
    graphilePerf,
    pgBoss,
    pgBossPerf
  ].filter(
    (system) =>
      options.systems === undefined ||
      options.systems.includes(system.name) ||
      options.systems.includes(family(system.name)) ||
      system.ours
  )
  const agents = new Map<string, ReadonlyArray<Agent>>()
  const polls = new Map<string, import("pg").Client>()
  const results = new Map<string, Array<Round>>()
  try {
    const setupStarted = performance.now()
    // Databases start in parallel; systems sharing one (two configurations of a peer) one after the other, so that
    // their schema installations do not race.
    const databases = [...new Set(systems.map((system) => system.database))]
    await Promise.all(
      databases.map(async (database) => {
        for (const system of systems.filter((s) => s.database === database)) {
          agents.set(system.name, await startAgents(system, 2))
          polls.set(system.name, await connect(urlFor(`${databasePrefix}${system.database}`)))
          results.set(system.name, [])
        }
      })
    )
    options.log(`  agents ready in ${((performance.now() - setupStarted) / 1000).toFixed(1)} s`)
    for (let r = 0; r < rounds; r++) {
      // A B A B …, rotating who goes first.
      const order = systems.map((_, i) => systems[(i + r) % systems.length]!)
      for (const system of order) {
        const [a, b] = agents.get(system.name)!
        const poll = polls.get(system.name)!
        const one = await drain(system, a!, [a!], poll, n, concurrency)
        const two = await drain(system, a!, [a!, b!], poll, n, concurrency)
        const row: Round = {
          enqueue: round(one.enqueue),
          drain1: round(one.committed),
          drain1Handled: round(one.handled),
          drain2: round(two.committed),
          drain2Handled: round(two.handled)
        }
        results.get(system.name)!.push(row)
        options.log(`  round ${r + 1} ${system.name}: ${JSON.stringify(row)}`)
      }
    }
  } finally {
    for (const list of agents.values()) await Promise.all(list.map((agent) => agent.close()))
    for (const client of polls.values()) await client.end().catch(() => undefined)
  }
  const { ours, peers, summaries } = collect(systems, (system) => ({
    ...medianOfRounds(results.get(system.name)!),
    settings: system.settings
  }))
  const rows = systems.map((system) => {
    const s = summaries.get(system.name)! as Record<string, number>
    return [system.name, s.enqueue, s.drain1, s.drain1Handled, s.drain2, s.drain2Handled]
  })
  printTable(
    `queue-throughput: ${n.toLocaleString("en-US")} no-op jobs, concurrency ${concurrency} per process, median of ${rounds} rounds (jobs/s)`,
    ["system", "enqueue", "drain 1 proc", "(handled)", "drain 2 procs", "(handled)"],
    rows
  )
  return {
    scenario: "queue-throughput",
    unit: "jobs/s",
    higherIsBetter: true,
    headline: "drain1",
    ours,
    peers,
    ratios: ratios("drain1", ours, peers),
    quick: options.quick,
    rounds,
    summary: [
      { figure: `drain ${n.toLocaleString("en-US")} jobs, 1 process, c=${concurrency}, committed`, key: "drain1" },
      { figure: `drain ${n.toLocaleString("en-US")} jobs, 2 processes, committed`, key: "drain2" },
      { figure: `bulk enqueue ${n.toLocaleString("en-US")} jobs`, key: "enqueue" }
    ],
    notes: [
      `${n} jobs enqueued with one bulk call, then drained; drain1 = 1 worker process at concurrency ${concurrency}, drain2 = 2 processes at concurrency ${concurrency} each`,
      "drain figures count until every completion is committed (polled from the database); (handled) until the last handler ran",
      "each system has its own database on the same server; agents are separate Node processes, kept between rounds"
    ]
  }
}
