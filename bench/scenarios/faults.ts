/**
 * faults: a dropped connection costs no finished work (issue 16). The drain of N one-millisecond tasks by one worker
 * process at concurrency 10 on Postgres (bench/lib/faultWorker.ts), timed from the worker's start until no task is
 * left unfinished, without and with a killer that terminates every connection of that process
 * (`pg_terminate_backend` on its application_name) every 500 ms. Reported: both drain times (median over rounds),
 * their ratio (target: within 3x), and the histogram of `attempts` over the tasks (1 everywhere = nothing redone).
 * Each run gets a fresh schema in database bench_faults. Baton only (no peer runs this).
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { connect, ensureDatabase } from "../lib/db.js"
import { printTable, type ScenarioResult } from "../lib/report.js"
import { median, round } from "../lib/stats.js"
import type { ScenarioOptions } from "./types.js"

const root = path.resolve(import.meta.dirname, "../..")

interface Drain {
  readonly ms: number
  readonly kills: number
  readonly attempts: Record<string, number>
}

const drain = async (url: string, schema: string, tasks: number, kill: boolean): Promise<Drain> => {
  const appName = `baton-faults-${process.pid}`
  const admin = await connect(url)
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.join(root, "bench/lib/faultWorker.ts"), url, schema, appName, String(tasks)],
    { cwd: root, env: process.env, stdio: ["pipe", "pipe", "pipe"] }
  )
  let output = ""
  let exited: number | string | undefined
  child.on("exit", (code, signal) => {
    exited = code ?? signal ?? -1
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  try {
    await new Promise<void>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout! })
      lines.on("line", (line) => {
        if (process.env.BENCH_VERBOSE === "1") console.error(line)
        if (line === "ready") resolve()
      })
      child.on("exit", (code) => reject(new Error(`fault worker exited with ${code}: ${output.slice(-2000)}`)))
    })
    let kills = 0
    let killing = kill
    const killer = (async () => {
      while (killing) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        if (!killing) break
        const { rows } = await admin.query<{ n: string }>(
          "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name LIKE $1",
          [`${appName}%`]
        )
        kills += Number(rows[0]?.n ?? 0)
      }
    })()
    const started = performance.now()
    child.stdin!.write("go\n")
    const deadline = started + 300_000
    for (;;) {
      const { rows } = await admin.query<{ n: string }>(
        `SELECT count(*) AS n FROM ${schema}.baton_tasks WHERE state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')`
      )
      if (Number(rows[0]?.n) === 0) break
      if (exited !== undefined) throw new Error(`fault worker exited with ${exited}: ${output.slice(-2000)}`)
      if (performance.now() > deadline) throw new Error(`drain timed out at ${rows[0]?.n} unfinished`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    const ms = performance.now() - started
    killing = false
    await killer
    const { rows } = await admin.query<{ attempts: number; n: string }>(
      `SELECT attempts, count(*) AS n FROM ${schema}.baton_tasks GROUP BY attempts ORDER BY attempts`
    )
    return { ms, kills, attempts: Object.fromEntries(rows.map((row) => [String(row.attempts), Number(row.n)])) }
  } finally {
    child.kill("SIGKILL")
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined)
    await admin.end()
  }
}

export const run = async (
  options: ScenarioOptions
): Promise<Omit<ScenarioResult, "node" | "postgres" | "when" | "machine">> => {
  const tasks = options.quick ? 1_000 : 3_000
  const url = await ensureDatabase("bench_faults")
  const calm: Array<Drain> = []
  const faulty: Array<Drain> = []
  for (let r = 0; r < options.rounds; r++) {
    // The order swaps each round.
    for (const kill of r % 2 === 0 ? [false, true] : [true, false]) {
      const result = await drain(url, `faults_${process.pid}_${r}_${kill ? "kill" : "calm"}`, tasks, kill)
      ;(kill ? faulty : calm).push(result)
      options.log(
        `  round ${r + 1} ${kill ? "kills 2/s" : "no kills"}: ${round(result.ms)} ms, ${result.kills} backends terminated, attempts ${JSON.stringify(result.attempts)}`
      )
    }
  }
  const histogram = (drains: ReadonlyArray<Drain>) => {
    const out: Record<string, number> = {}
    for (const d of drains) for (const [k, v] of Object.entries(d.attempts)) out[k] = (out[k] ?? 0) + v
    return out
  }
  const calmMs = round(median(calm.map((d) => d.ms)))
  const killedMs = round(median(faulty.map((d) => d.ms)))
  const ours = {
    drainMs: calmMs,
    drainWithKillsMs: killedMs,
    ratio: round(killedMs / calmMs),
    backendsTerminated: faulty.reduce((n, d) => n + d.kills, 0),
    attemptsWithoutKills: histogram(calm),
    attemptsWithKills: histogram(faulty),
    settings: `Postgres, own database bench_faults, a fresh schema per drain; ${tasks} one-millisecond tasks (maxAttempts 10) enqueued before the worker starts; one worker process, Worker.run concurrency 10, other options default; killer: pg_terminate_backend on the worker's application_name every 500 ms`
  }
  printTable(
    `faults: drain of ${tasks} one-millisecond tasks, one worker at concurrency 10 (ms, median of ${options.rounds} rounds)`,
    ["variant", "drain ms", "ratio", "attempts histogram"],
    [
      ["no kills", calmMs, 1, JSON.stringify(ours.attemptsWithoutKills)],
      ["kills 2/s", killedMs, ours.ratio, JSON.stringify(ours.attemptsWithKills)]
    ]
  )
  return {
    scenario: "faults",
    unit: "ms",
    higherIsBetter: false,
    headline: "ratio",
    ours,
    peers: {},
    ratios: {},
    quick: options.quick,
    rounds: options.rounds,
    summary: [
      { figure: `drain of ${tasks} tasks, no kills`, key: "drainMs" },
      { figure: `drain of ${tasks} tasks, backends killed twice a second`, key: "drainWithKillsMs" },
      { figure: "with kills / without (target ≤ 3)", key: "ratio" }
    ],
    notes: [
      "drain = the worker's start ('go') until no task is pending or running, polled every 5 ms from a connection the killer spares",
      "attempts histogram: baton_tasks.attempts over every task of the variant's rounds (claims per task; 1 = run once)",
      "a failed group commit, failure record, heartbeat or claim is retried on a fresh connection while the leases are held (src/internal/worker/retry.ts)"
    ]
  }
}
