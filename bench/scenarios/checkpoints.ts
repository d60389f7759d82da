/**
 * checkpoints: a workflow of N sequential durable checkpointed steps (N = 2,000; 200 with --quick), per system:
 * - Baton (`SqlCheckpointCoordinator`: create → complete → await, and with `asyncCreate`) and the physical limit (bare
 *   single-row INSERT + UPDATE autocommit pairs on one connection: a durable checkpoint is two commits), measured
 *   interleaved in one agent (bench/peers/baton-checkpoints.ts, bench/lib/checkpointsDurable.ts);
 * - DBOS Transact 5.3: one workflow of N sequential no-op steps (bench/peers/dbos.ts);
 * - @effect/workflow 0.19: one workflow of sequential no-op activities on its SQL-backed engine
 *   (`ClusterWorkflowEngine` on `SingleRunner`, bench/peers/effect-workflow.ts).
 * Each system is a long-lived agent process in its own database; each round runs every system once, one after the
 * other, the order rotating between rounds. Medians over the rounds.
 */
import { bareSettings, oursSettings, type Variant } from "../lib/checkpointsDurable.js"
import { ensureDatabase } from "../lib/db.js"
import { printTable, ratios, type ScenarioResult } from "../lib/report.js"
import { type Agent, closeAgents, selectSystems, startSystemAgents } from "../lib/spawn.js"
import { median, round } from "../lib/stats.js"
import type { ScenarioOptions } from "./types.js"

interface System {
  readonly name: string
  readonly peer: string
  readonly database: string
  /** Steps per round (a rate is measured; see the notes where it differs from N). */
  readonly steps: (n: number) => number
}

const systems: ReadonlyArray<System> = [
  { name: "baton", peer: "baton-checkpoints", database: "bench_checkpoints", steps: (n) => n },
  { name: "dbos", peer: "dbos", database: "bench_dbos", steps: (n) => n },
  // ~15 ms an activity here: 2,000 a round would take 30 s. Its rate does not depend on the workflow's length
  // (67/s at 200 and at 1,000 activities in one probe), so it runs a quarter of N.
  { name: "effect-workflow", peer: "effect-workflow", database: "bench_effect_workflow", steps: (n) => n / 4 }
]

/**
 * Baton's variants measured here (the other two — completion inside a transaction, bare commits carrying ours'
 * completion statement — are diagnostics of bench/checkpoints-durable.ts, run on its own).
 */
const batonVariants: ReadonlyArray<Variant> = ["ours", "ours-async-create", "bare-commit"]

const peerSettings: Record<string, string> = {
  ...bareSettings,
  dbos: "DBOS Transact 5.3: one workflow of N sequential no-op steps (registerWorkflow / registerStep, defaults), own system database",
  "effect-workflow":
    "@effect/workflow 0.19 + @effect/cluster 0.60: one workflow of N/4 sequential no-op activities (Activity.make), ClusterWorkflowEngine.layer on SingleRunner.layer() (SqlMessageStorage, sql runner storage, ShardingConfig defaults), PgClient.layer, own database"
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const n = options.quick ? 60 : 2000
  const selected = selectSystems(systems, options.systems)
  const agents = new Map<string, Agent>()
  const perRound: Array<Record<string, number>> = []
  try {
    // Warm-up not recorded (Baton's setup warms up itself).
    await startSystemAgents(selected, agents, options.log, async (system, agent) => {
      const variants = system.name === "baton" ? batonVariants : undefined
      await agent.call("setup", { url: await ensureDatabase(system.database), variants }, 120_000)
      if (system.name !== "baton") await agent.call("steps", { n: Math.min(system.steps(n), 50) })
    })
    for (let r = 0; r < options.rounds; r++) {
      const row: Record<string, number> = {}
      for (let i = 0; i < selected.length; i++) {
        const system = selected[(i + r) % selected.length]!
        const agent = agents.get(system.name)!
        if (system.name === "baton") {
          const rates = await agent.call<Partial<Record<Variant, number>>>("round", { n })
          for (const [variant, rate] of Object.entries(rates)) row[variant] = rate
        } else {
          row[system.name] = (await agent.call<{ perSecond: number }>("steps", { n: system.steps(n) })).perSecond
        }
      }
      perRound.push(row)
      options.log(
        `  round ${r + 1}: ${Object.entries(row)
          .map(([k, v]) => `${k} ${Math.round(v)}/s`)
          .join(", ")}`
      )
    }
  } finally {
    await closeAgents(agents.values())
  }
  const figure = (key: string) => ({
    checkpointsPerSecond: round(median(perRound.map((row) => row[key]!))),
    rounds: perRound.map((row) => round(row[key]!))
  })
  const ours: Record<string, unknown> = {
    ...figure("ours"),
    asyncCreate: figure("ours-async-create"),
    settings: oursSettings
  }
  const peerNames = ["bare-commit", ...selected.filter((s) => s.name !== "baton").map((s) => s.name)]
  const peers = Object.fromEntries(peerNames.map((name) => [name, { ...figure(name), settings: peerSettings[name] }]))
  const bare = peers["bare-commit"]!.checkpointsPerSecond
  printTable(
    `checkpoints: ${n} sequential durable checkpoints / steps, median of ${options.rounds} rounds (per second)`,
    ["system", "per second", "× bare-commit"],
    [
      ["baton (create; complete; await)", ours.checkpointsPerSecond],
      ["baton, asyncCreate", (ours.asyncCreate as { checkpointsPerSecond: number }).checkpointsPerSecond],
      ...peerNames.map((name) => [name, peers[name]!.checkpointsPerSecond])
    ].map(([name, rate]) => [name, rate, round((rate as number) / bare)])
  )
  return {
    scenario: "checkpoints",
    unit: "checkpoints/s",
    higherIsBetter: true,
    headline: "checkpointsPerSecond",
    ours,
    peers,
    ratios: ratios("checkpointsPerSecond", ours, peers),
    quick: options.quick,
    rounds: options.rounds,
    summary: [{ figure: `${n} sequential durable checkpoints / steps`, key: "checkpointsPerSecond" }],
    notes: [
      `Baton and the bare-commit rows: ${n} of each per round, interleaved in blocks of 20 in rotating order in one agent (bench/lib/checkpointsDurable.ts); DBOS: one workflow of ${n} steps per round; @effect/workflow: one workflow of ${n / 4} activities per round`,
      "bare-commit is the physical limit: two autocommit commits per checkpoint on one connection",
      "asyncCreate: Baton's SqlCheckpointCoordinator.layerWith({ asyncCreate: true }) (the creation commits with synchronous_commit off); the completion-in-a-transaction and bare-commit-with-event diagnostics are in bench/checkpoints-durable.ts",
      "every system runs in its own agent process and database; the order of the systems rotates each round"
    ]
  }
}
