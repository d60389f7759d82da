/**
 * scale-out: drain N no-op jobs (bulk-enqueued by one call) with 1, 2 and 4 worker processes at concurrency 10 each,
 * all on one Postgres, for Baton and the best configuration of each peer (graphile-worker perf, pg-boss perf);
 * jobs/s until every completion is committed (queue-throughput's `drain`). Placements:
 * - "local": the worker processes in the host's network namespace, connecting to 127.0.0.1;
 * - "netns": each worker process in its own network namespace, reaching Postgres over a veth pair and a TCP
 *   forwarder in the runner (bench/lib/netns.ts): what several worker hosts look like, minus the wire, plus a hop;
 * - "netns + delay": the same with a 0.5 ms one-way netem delay on each veth end, only where the kernel has netem.
 * Postgres has max_connections 100 here and is shared, so one system's agents live at a time (4 per system and
 * placement); rounds alternate the process counts, not the systems. Needs root for the namespaces; without it only
 * "local" runs.
 */
import { connect, databasePrefix, urlFor } from "../lib/db.js"
import { type NetnsSetup, netemAvailable, netnsAvailable, setupNetns } from "../lib/netns.js"
import {
  baton,
  collect,
  graphilePerf,
  pgBossPerf,
  type Placement,
  type QueueSystem,
  startAgents
} from "../lib/queues.js"
import { family, printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { median, round } from "../lib/stats.js"
import { baseUrl } from "../lib/db.js"
import { drain } from "./queue-throughput.js"
import type { ScenarioOptions } from "./types.js"

const processCounts = [1, 2, 4] as const

interface PlacementSpec {
  readonly name: string
  readonly key: string
  readonly delayMs?: number
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const n = options.quick ? 1_000 : 10_000
  const rounds = options.rounds
  const concurrency = 10
  const systems = [baton, graphilePerf, pgBossPerf].filter(
    (system) =>
      options.systems === undefined ||
      options.systems.includes(system.name) ||
      options.systems.includes(family(system.name)) ||
      system.ours
  )
  const notes: Array<string> = [
    `${n} jobs enqueued with one bulk call by the first worker process, then drained by 1, 2 or 4 processes at concurrency ${concurrency} each; jobs/s until every completion is committed (polled from the database by the runner)`,
    "one system's agents at a time (Postgres max_connections 100, shared); within a system the process counts alternate round by round"
  ]
  const placements: Array<PlacementSpec> = [{ name: "local", key: "" }]
  if (netnsAvailable()) {
    placements.push({ name: "netns", key: "Netns" })
    const netem = netemAvailable()
    if (netem.ok) placements.push({ name: "netns + 0.5 ms", key: "Delay", delayMs: 0.5 })
    else {
      options.log(`  no delay variant: ${netem.reason}`)
      notes.push(`no 0.5 ms delay variant: ${netem.reason}`)
    }
    notes.push(
      "netns: each worker process in its own network namespace, joined by a veth pair to the host; a TCP forwarder in the runner (Node net) pipes to Postgres on 127.0.0.1, one extra user-space hop per direction"
    )
  } else {
    options.log("  no network namespaces (needs root and iproute2): local only")
    notes.push("netns variant skipped: needs root and `ip netns`")
  }

  const samples = new Map<string, Record<string, Array<number>>>()
  for (const system of systems) samples.set(system.name, {})
  const target = new URL(baseUrl)
  for (const placement of placements) {
    let ns: NetnsSetup | undefined
    try {
      let where: Placement = {}
      if (placement.name !== "local") {
        ns = await setupNetns(
          Math.max(...processCounts),
          { host: target.hostname, port: Number(target.port || 5432) },
          placement.delayMs ?? 0
        )
        where = { wrap: ns.wrap, url: ns.url }
      }
      for (const system of systems) {
        const started = performance.now()
        const agents = await startAgents(system, Math.max(...processCounts), where)
        const poll = await connect(urlFor(`${databasePrefix}${system.database}`))
        options.log(
          `  ${placement.name} ${system.name}: agents ready in ${((performance.now() - started) / 1000).toFixed(1)} s`
        )
        try {
          for (let r = 0; r < rounds; r++) {
            const order = processCounts.map((_, i) => processCounts[(i + r) % processCounts.length]!)
            const row: Record<string, number> = {}
            for (const count of order) {
              const result = await drain(system, agents[0]!, agents.slice(0, count), poll, n, concurrency)
              const key = `drain${count}${placement.key}`
              row[key] = round(result.committed)
              ;(samples.get(system.name)![key] ??= []).push(result.committed)
            }
            options.log(`  round ${r + 1} ${placement.name} ${system.name}: ${JSON.stringify(row)}`)
          }
        } finally {
          await Promise.all(agents.map((agent) => agent.close()))
          await poll.end().catch(() => undefined)
        }
      }
    } finally {
      if (ns !== undefined) {
        options.log(`  ${placement.name}: forwarder piped ${(ns.forwarded() / 2 ** 20).toFixed(1)} MiB`)
        await ns.close()
      }
    }
  }

  const summarize = (system: QueueSystem) => {
    const out: Record<string, unknown> = { settings: system.settings }
    for (const [key, values] of Object.entries(samples.get(system.name)!)) out[key] = round(median(values))
    const one = out.drain1
    if (typeof one === "number" && typeof out.drain4 === "number") out.speedup4 = round(out.drain4 / one)
    if (typeof out.drain1Netns === "number" && typeof out.drain4Netns === "number") {
      out.speedup4Netns = round(out.drain4Netns / out.drain1Netns)
    }
    return out
  }
  const { ours, peers, summaries } = collect(systems, summarize)
  const headers = ["system"]
  const keys: Array<string> = []
  for (const placement of placements) {
    for (const count of processCounts) {
      headers.push(`${placement.name} ${count}p`)
      keys.push(`drain${count}${placement.key}`)
    }
  }
  printTable(
    `scale-out: ${n.toLocaleString("en-US")} no-op jobs, concurrency ${concurrency} per process, median of ${rounds} rounds (jobs/s committed)`,
    headers,
    systems.map((system) => [system.name, ...keys.map((key) => summaries.get(system.name)![key])])
  )
  const count = n.toLocaleString("en-US")
  return {
    scenario: "scale-out",
    unit: "jobs/s",
    higherIsBetter: true,
    headline: "drain4",
    ours,
    peers,
    ratios: ratios("drain4", ours, peers),
    quick: options.quick,
    rounds,
    summary: [
      { figure: `drain ${count} jobs, 4 processes, c=${concurrency} each, committed`, key: "drain4" },
      { figure: `drain ${count} jobs, 2 processes, committed`, key: "drain2" },
      ...(placements.some((p) => p.key === "Netns")
        ? [
            { figure: `drain ${count} jobs, 4 processes in network namespaces, committed`, key: "drain4Netns" },
            { figure: `drain ${count} jobs, 1 process in a network namespace, committed`, key: "drain1Netns" }
          ]
        : []),
      ...(placements.some((p) => p.key === "Delay")
        ? [{ figure: `drain ${count} jobs, 4 processes, netns + 0.5 ms one-way delay`, key: "drain4Delay" }]
        : [])
    ],
    notes
  }
}
