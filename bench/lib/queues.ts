/**
 * The Postgres job queues compared in queue-throughput and queue-latency: Baton and its peers, each in its own
 * database, each driven by an agent process (bench/peers/<peer>.ts) with the same commands.
 */
import { type Agent, spawnAgent } from "./spawn.js"
import { ensureDatabase } from "./db.js"

export interface QueueSystem {
  /** Name in tables and JSON. */
  readonly name: string
  /** True for Baton. */
  readonly ours: boolean
  /** The agent module under bench/peers. */
  readonly peer: string
  readonly database: string
  /** Passed to the agent's `setup`. */
  readonly setup: Record<string, unknown>
  /** Passed to the agent's `startWorker` (besides concurrency). */
  readonly worker: Record<string, unknown>
  /** Counts the jobs not yet completed and committed (run by the runner on its own connection). */
  readonly remainingSql: string
  /** The settings, as printed in the results. */
  readonly settings: string
}

export const baton: QueueSystem = {
  name: "baton",
  ours: true,
  peer: "baton",
  database: "bench_baton",
  setup: { schema: "bench", layer: "queue" },
  worker: {},
  remainingSql: "SELECT count(*) AS n FROM bench.baton_tasks WHERE state <> 'succeeded'",
  settings: "SqlTaskQueue.layer on Storage.layerPg; Worker.run defaults (concurrency as stated)"
}

export const batonFull: QueueSystem = {
  ...baton,
  name: "baton (full layer)",
  // A schema of its own: its idle agents' subscribers (chord coordinator, completion stream) listen on their schema's
  // completions channel; sharing "bench" they read the log after every batch of the other Baton rows' drains (measured:
  // those drains ran 30–40% slower while these agents idled in the same schema).
  setup: { ...baton.setup, schema: "bench_full", layer: "full" },
  remainingSql: "SELECT count(*) AS n FROM bench_full.baton_tasks WHERE state <> 'succeeded'",
  settings:
    "Worker.run defaults in a process that provides all of Baton.layerPg (completion stream, chord coordinator, reconciler, checkpoints)"
}

/**
 * Baton with its claims and lease extensions committed synchronously: what the `synchronous_commit = off` of those
 * statements is worth (see `syncClaims` in bench/peers/baton.ts).
 */
export const batonSyncClaims: QueueSystem = {
  ...baton,
  name: "baton (sync claims)",
  setup: { ...baton.setup, syncClaims: true },
  settings:
    "as baton, but claims and lease extensions commit synchronously (their set_config('synchronous_commit', 'off', true) turned to 'on' in the agent's pg driver)"
}

export const graphile: QueueSystem = {
  name: "graphile-worker",
  ours: false,
  peer: "graphile",
  database: "bench_graphile",
  setup: {},
  worker: { variant: "default" },
  remainingSql: "SELECT count(*) AS n FROM graphile_worker._private_jobs",
  settings: "defaults (LISTEN/NOTIFY), logger silenced"
}

export const graphilePerf: QueueSystem = {
  ...graphile,
  name: "graphile-worker (perf)",
  worker: { variant: "perf" },
  settings: "localQueue.size 100, completeJobBatchDelay 250 (its documented performance options), logger silenced"
}

export const pgBoss: QueueSystem = {
  name: "pg-boss",
  ours: false,
  peer: "pgboss",
  database: "bench_pgboss",
  setup: {},
  worker: { variant: "throughput" },
  remainingSql: "SELECT count(*) AS n FROM pgboss.job WHERE name = 'noop' AND state <> 'completed'",
  settings:
    "useListenNotify, queue notify: true; work localConcurrency 1, batchSize 10, burstWhenBatchFull, polling 0.5 s"
}

export const pgBossPerf: QueueSystem = {
  ...pgBoss,
  name: "pg-boss (perf)",
  worker: { variant: "perf" },
  settings:
    "useListenNotify, queue notify: true; work localConcurrency 10, batchSize 100, burstWhenBatchFull, polling 0.5 s (its throughput options: parallel workers, large batches, continuous fetching while batches come back full)"
}

/**
 * For "baton (sync claims)": fails unless every given agent rewrote some statements to commit synchronously (the
 * switch in bench/peers/baton.ts matches the claim statement's text; a change there must not go unnoticed).
 */
export const assertSyncClaims = async (system: QueueSystem, agents: ReadonlyArray<Agent>): Promise<void> => {
  if (system.setup.syncClaims !== true) return
  for (const agent of agents) {
    const rewrites = await agent.call<number>("syncClaimsRewrites")
    if (rewrites === 0) {
      throw new Error(
        `${system.name}: no claim statement carried set_config('synchronous_commit', 'off', true); update the switch in bench/peers/baton.ts`
      )
    }
  }
}

/** Where agent `i` (from 0) runs and how it reaches the database (scale-out's network namespaces). */
export interface Placement {
  /** The command the agent's Node runs under (see `spawnAgent`). */
  readonly wrap?: (i: number) => ReadonlyArray<string>
  /** The database URL agent `i` is given instead of the runner's. */
  readonly url?: (url: string, i: number) => string
}

/** Spawns `count` agents for a system and runs `setup` on each. */
export const startAgents = async (
  system: QueueSystem,
  count: number,
  placement: Placement = {}
): Promise<ReadonlyArray<Agent>> => {
  const url = await ensureDatabase(system.database)
  const agents = Array.from({ length: count }, (_, i) =>
    spawnAgent(system.peer, {}, `${system.name}#${i + 1}`, placement.wrap?.(i) ?? [])
  )
  try {
    // One at a time: migrations of some peers race when two processes install the schema at once.
    for (const [i, agent] of agents.entries()) {
      await agent.call("setup", { url: placement.url?.(url, i) ?? url, ...system.setup }, 120_000)
    }
  } catch (error) {
    await Promise.all(agents.map((agent) => agent.close()))
    throw error
  }
  return agents
}

/** Sums the `progress` events of several agents; resolves when the sum reaches `target`. */
export const waitForHandled = (agents: ReadonlyArray<Agent>, target: number, timeoutMs = 180_000): Promise<number> =>
  new Promise((resolve, reject) => {
    const counts = agents.map(() => 0)
    const offs: Array<() => void> = []
    const timer = setTimeout(() => {
      for (const off of offs) off()
      reject(new Error(`timed out: handled ${counts.reduce((a, b) => a + b, 0)} of ${target}`))
    }, timeoutMs)
    agents.forEach((agent, i) => {
      offs.push(
        agent.on("progress", (data: { handled: number }) => {
          counts[i] = data.handled
          if (counts.reduce((a, b) => a + b, 0) >= target) {
            clearTimeout(timer)
            for (const off of offs) off()
            resolve(performance.now())
          }
        })
      )
    })
  })

/**
 * Splits per-system summaries into the JSON's `ours` (Baton with default settings; other Baton configurations go
 * under `ours.variants`) and `peers`.
 */
export const collect = (
  systems: ReadonlyArray<QueueSystem>,
  summarize: (system: QueueSystem) => Record<string, unknown>
) => {
  const summaries = new Map<string, Record<string, unknown>>()
  for (const system of systems) summaries.set(system.name, summarize(system))
  const mine = systems.filter((system) => system.ours)
  const ours: Record<string, unknown> = { ...summaries.get(mine[0]!.name)! }
  if (mine.length > 1) {
    ours.variants = Object.fromEntries(mine.slice(1).map((system) => [system.name, summaries.get(system.name)!]))
  }
  const peers: Record<string, Record<string, unknown>> = {}
  for (const system of systems) if (!system.ours) peers[system.name] = summaries.get(system.name)!
  return { ours, peers, summaries }
}
