/**
 * The chaos run (`npm run chaos`): real OS processes against one database, faults injected while they work, and a
 * verdict read from the database afterwards.
 *
 * Processes: W `baton worker --tasks test/chaos/tasks.ts` processes (the real CLI), P producers (test/chaos/
 * producer.ts) that create the plan's C chords of B body tasks, and one driver per extraction run (`baton run extract
 * … --workers 0`, then `baton resume …` after each kill). Faults, for `--duration` seconds:
 * - a random ready worker SIGKILLed every `--kill-every` ms (± half), and a new one started;
 * - every other producer SIGKILLed as soon as it printed that its chords are created;
 * - each driver SIGKILLed after a random 1–6 s, again and again, and resumed;
 * - Postgres: this run's LISTEN connections terminated (`pg_terminate_backend`, only backends whose application_name
 *   is this run's) every `--listen-kill-every` ms; and the server restarted once, half-way (not with --no-restart).
 * Then the faults stop, everything drains, and `checks.ts` decides. The last line printed is
 * `chaos: chords=C callbacks=C duplicates=0 lost=0 stuck=0 runs=R mismatched=0`; the exit code is 0 only if nothing
 * was violated.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { exec, execFileSync } from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { writeCorpus } from "../fixtures/workflow-corpus.js"
import { check, type Findings, progressAhead, progressCounts } from "./checks.js"
import { makePlan, rng } from "./plan.js"
import { baton, killAll, type Proc, root, script } from "./processes.js"
import { referenceRun } from "./reference.js"
import { type ChaosStorage, cliStorage, storageLayer } from "./storage.js"

export interface ChaosOptions {
  readonly durationSec: number
  readonly workers: number
  readonly chords: number
  readonly bodies: number
  readonly seed: number
  readonly databaseUrl: string
  readonly sqlite: string | undefined
  readonly restart: boolean
  readonly restartCmd: string | undefined
  readonly forceRestart: boolean
  readonly producers: number
  readonly runs: number
  readonly docs: number
  readonly batchSize: number
  readonly killEveryMs: number
  readonly listenKillEveryMs: number
  readonly leaseSec: number
  readonly concurrency: number
  readonly maxSlowMs: number
  readonly drainTimeoutSec: number
  readonly keep: boolean
  readonly verbose: boolean
}

export const defaults: Omit<ChaosOptions, "seed" | "databaseUrl" | "sqlite" | "restartCmd"> = {
  durationSec: 60,
  workers: 4,
  chords: 120,
  bodies: 8,
  restart: true,
  forceRestart: false,
  producers: 4,
  runs: 2,
  docs: 40,
  batchSize: 4,
  killEveryMs: 400,
  listenKillEveryMs: 2000,
  leaseSec: 2,
  concurrency: 4,
  maxSlowMs: 1500,
  drainTimeoutSec: 180,
  keep: false,
  verbose: false
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The restart command for the cluster serving `url`'s port, from `pg_lsclusters` (Debian's postgresql-common). */
export const defaultRestartCommand = (url: string): string => {
  const port = new URL(url).port || "5432"
  let listing: string
  try {
    listing = execFileSync("pg_lsclusters", ["--no-header"], { encoding: "utf8" })
  } catch (error) {
    throw new Error(
      `cannot list clusters with pg_lsclusters (${(error as Error).message}); pass --restart-cmd or --no-restart`
    )
  }
  for (const line of listing.split("\n")) {
    const [version, name, clusterPort] = line.trim().split(/\s+/)
    if (clusterPort === port && version !== undefined && name !== undefined) {
      return `pg_ctlcluster --skip-systemctl-redirect ${version} ${name} restart`
    }
  }
  throw new Error(`no local cluster listens on port ${port} (pg_lsclusters); pass --restart-cmd or --no-restart`)
}

/** Runs the chaos and returns the process exit code. */
export const runChaos = async (options: ChaosOptions): Promise<number> => {
  const started = Date.now()
  const elapsed = () => ((Date.now() - started) / 1000).toFixed(1)
  const say = (line: string) => console.log(`chaos +${elapsed()}s: ${line}`)
  const token = crypto.randomBytes(4).toString("hex")
  const isPg = options.sqlite === undefined
  const storage: ChaosStorage = isPg
    ? {
        kind: "pg",
        url: options.databaseUrl,
        // The bt_<pid>_<base-36 time>_ shape the test suite's stale-schema cleanup understands.
        schema: `bt_${process.pid}_${Date.now().toString(36)}_chaos`,
        appName: `chaos-${token}`
      }
    : { kind: "sqlite", filename: path.resolve(options.sqlite!) }
  const restartCmd =
    isPg && options.restart ? (options.restartCmd ?? defaultRestartCommand(options.databaseUrl)) : undefined
  const cli = cliStorage(storage)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "baton-chaos-"))
  const corpus = writeCorpus(path.join(tmp, "corpus"), options.docs)
  const tasksFile = path.join(root, "test/chaos/tasks.ts")
  const random = rng(options.seed ^ 0x5eed)
  const plan = makePlan({
    token,
    seed: options.seed,
    chords: options.chords,
    bodies: options.bodies,
    runs: options.runs,
    maxSlowMs: options.maxSlowMs
  })
  const planFile = path.join(tmp, "plan.json")
  fs.writeFileSync(planFile, JSON.stringify(plan))
  const failing = plan.chords.filter((chord) => chord.failing >= 0).length
  const slow = plan.chords.reduce((n, chord) => n + chord.bodies.filter((body) => body.slowMs > 0).length, 0)

  say(
    `seed ${options.seed} · ${isPg ? `Postgres ${new URL(options.databaseUrl).host} schema ${(storage as { schema: string }).schema}` : `SQLite ${storage.kind === "sqlite" ? storage.filename : ""}`}`
  )
  say(
    `plan: ${options.chords} chords × ${options.bodies} bodies (${failing} with a body that fails on purpose, ` +
      `${slow} slow bodies), ${options.runs} extraction runs of ${options.docs} documents in batches of ${options.batchSize}; ` +
      `${options.workers} workers, ${options.producers} producers, ${options.durationSec}s of faults` +
      (restartCmd !== undefined ? `, one restart: ${restartCmd}` : isPg ? ", no restart" : "")
  )

  const db = ManagedRuntime.make(storageLayer(storage, "runner"))
  const query = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) => db.runPromise(effect)
  const cleanup = async (passed: boolean) => {
    killAll()
    if (isPg && passed && !options.keep) {
      await query(
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql`DROP SCHEMA ${sql(storage.kind === "pg" ? storage.schema : "")} CASCADE`
        )
      ).catch(() => undefined)
    }
    await db.dispose().catch(() => undefined)
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  const onSignal = () => {
    killAll()
    process.exit(130)
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)

  try {
    await query(
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql`CREATE TABLE IF NOT EXISTS chaos_exec (kind text NOT NULL, chord text NOT NULL,
          task_id text NOT NULL, attempt integer NOT NULL, pid integer NOT NULL, at bigint NOT NULL)`
      )
    )
    const reference = await referenceRun(corpus, options.batchSize)
    say(`reference run: ${reference.documents.length} documents in ${reference.batches.length} batches, uninterrupted`)

    // -- state -------------------------------------------------------------------------------------------------------
    let chaosOver = false
    let stopping = false
    const stats = {
      workerKills: 0,
      workerStarts: 0,
      workerCrashes: [] as Array<string>,
      workersRefused: 0,
      producerKills: 0,
      producerStarts: 0,
      producerErrors: [] as Array<string>,
      driverKills: 0,
      driverStarts: 0,
      driverErrors: [] as Array<string>,
      listenKills: 0,
      restarts: 0,
      restartMs: 0,
      restartSkipped: undefined as string | undefined,
      checksRun: 0
    }
    const progressViolations = new Set<string>()
    const workers = new Set<Proc>()
    const ready = new Set<Proc>()
    const upOnce = new WeakSet<Proc>()
    const echo = options.verbose
      ? (name: string) => (line: string) => console.log(`  [${name}] ${line}`)
      : () => undefined

    // -- workers -----------------------------------------------------------------------------------------------------
    let workerNo = 0
    const spawnWorker = () => {
      const name = `worker-${workerNo++}`
      const proc = baton(
        name,
        [
          "worker",
          ...cli.args,
          "--tasks",
          tasksFile,
          "--concurrency",
          String(options.concurrency),
          "--lease",
          String(options.leaseSec)
        ],
        cli.env,
        echo(name)
      )
      stats.workerStarts++
      workers.add(proc)
      void proc.waitFor("Ctrl-C to stop").then((up) => {
        if (up) upOnce.add(proc)
        if (up && !proc.done()) ready.add(proc)
      })
      void proc.exited.then((code) => {
        workers.delete(proc)
        ready.delete(proc)
        if (!proc.killed.value && !stopping) {
          const last = proc.lines.filter((line) => line.trim() !== "").at(-1) ?? ""
          if (!ready.has(proc) && !upOnce.has(proc) && /^baton: cannot connect to Postgres/.test(last)) {
            // Started while the server was down: the CLI refuses to start without its database (exit 1, one line).
            stats.workersRefused++
            say(`${name} could not connect while starting (${last}); starting another`)
          } else {
            stats.workerCrashes.push(`${name} exited on its own (${code}):\n${proc.lines.slice(-40).join("\n")}`)
            say(`VIOLATION ${name} exited on its own (${code}):\n${proc.lines.slice(-40).join("\n")}`)
          }
        }
        if (!stopping) spawnWorker()
      })
    }
    for (let i = 0; i < options.workers; i++) spawnWorker()
    // The faults start once the first workers run (a process takes seconds to start on a loaded machine).
    const readyDeadline = Date.now() + 120_000
    while (ready.size < options.workers && Date.now() < readyDeadline) await sleep(100)
    say(`${ready.size} workers ready; faults start`)
    const windowStart = Date.now()

    const killLoop = (async () => {
      while (!chaosOver) {
        await sleep(options.killEveryMs * (0.5 + random()))
        if (chaosOver) break
        // One ready worker is always spared, so that work goes on during the faults (a new process takes seconds to
        // start on a loaded machine: killing the last one would mostly measure start-up time).
        const candidates = [...ready]
        if (candidates.length < 2) continue
        const victim = candidates[Math.floor(random() * candidates.length)]!
        ready.delete(victim)
        victim.kill("SIGKILL")
        stats.workerKills++
      }
    })()

    // -- producers ---------------------------------------------------------------------------------------------------
    const runProducer = async (i: number) => {
      const from = Math.floor((i * options.chords) / options.producers)
      const to = Math.floor(((i + 1) * options.chords) / options.producers)
      const doomed = i % 2 === 1
      for (let attempt = 0; attempt < 20; attempt++) {
        const name = `producer-${i}${attempt > 0 ? `.${attempt}` : ""}`
        const proc = script(
          name,
          "producer.ts",
          [planFile, String(from), String(to)],
          {
            CHAOS_STORAGE: JSON.stringify(storage)
          },
          echo(name)
        )
        stats.producerStarts++
        const created = await proc.waitFor("created ")
        if (created && doomed) {
          proc.kill("SIGKILL")
          stats.producerKills++
          await proc.exited
          return
        }
        const code = await proc.exited
        if (code === 0) return
        stats.producerErrors.push(`${name} exited ${code}:\n${proc.lines.slice(-60).join("\n")}`)
        say(`VIOLATION ${name} exited ${code}:\n${proc.lines.slice(-60).join("\n")}`)
      }
    }
    const window = options.durationSec * 1000
    const producers = Array.from({ length: options.producers }, (_, i) =>
      sleep((i * window * 0.6) / options.producers).then(() => runProducer(i))
    )

    // -- extraction drivers ------------------------------------------------------------------------------------------
    const runExists = (runId: string) =>
      query(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ id: string }>`SELECT id FROM baton_runs WHERE id = ${runId}`)
      ).then(
        (rows) => rows.length > 0,
        () => false
      )
    const drive = async (runId: string) => {
      for (let attempt = 0; attempt < 200; attempt++) {
        const exists = await runExists(runId)
        const args = exists
          ? ["resume", runId, ...cli.args, "--workers", "0", "--lease", String(options.leaseSec)]
          : [
              "run",
              "extract",
              corpus,
              ...cli.args,
              "--run-id",
              runId,
              "--batch-size",
              String(options.batchSize)
            ].concat(["--workers", "0", "--lease", String(options.leaseSec)])
        const name = `driver-${runId.split("-").at(-1)}.${attempt}`
        const proc = baton(name, args, cli.env, echo(name))
        stats.driverStarts++
        // Killed at a random point after it started working (its header printed; start-up itself takes seconds on a
        // loaded machine), every start but the first has one chance in four to be left alone.
        let timer: ReturnType<typeof setTimeout> | undefined
        if (!chaosOver && (attempt === 0 || random() < 0.75)) {
          void proc.waitFor("  workers ").then((up) => {
            if (!up || chaosOver) return
            timer = setTimeout(
              () => {
                if (!chaosOver && !proc.done()) {
                  proc.kill("SIGKILL")
                  stats.driverKills++
                }
              },
              200 + random() * 4000
            )
          })
        }
        const code = await proc.exited
        if (timer !== undefined) clearTimeout(timer)
        if (code === 0) return
        if (proc.killed.value) continue
        stats.driverErrors.push(
          `${name} exited ${code}: ${proc.lines.filter((l) => l.startsWith("baton:")).join(" | ")}`
        )
        say(`${name} exited ${code}: ${proc.lines.slice(-2).join(" | ")}`)
        await sleep(500)
      }
    }
    const drivers = plan.runs.map((runId, r) =>
      sleep((r * window * 0.5) / Math.max(1, options.runs)).then(() => drive(runId))
    )

    // -- Postgres faults ---------------------------------------------------------------------------------------------
    const listenLoop =
      isPg && storage.kind === "pg"
        ? (async () => {
            while (!chaosOver) {
              await sleep(options.listenKillEveryMs * (0.5 + random()))
              if (chaosOver) break
              const rows = await query(
                Effect.flatMap(
                  SqlClient.SqlClient,
                  (sql) => sql<{ pid: number }>`SELECT pid FROM pg_stat_activity
                    WHERE application_name LIKE ${`${storage.appName}%-listener`} AND pid <> pg_backend_pid()
                      AND pg_terminate_backend(pid)`
                )
              ).catch(() => [])
              stats.listenKills += rows.length
            }
          })()
        : Promise.resolve()

    const restart =
      restartCmd !== undefined && storage.kind === "pg"
        ? (async () => {
            await sleep(window / 2)
            if (!options.forceRestart) {
              // Never bounce a server other clients are using: only this run's sessions may be connected.
              const others = await query(
                Effect.flatMap(
                  SqlClient.SqlClient,
                  (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity
                    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                      AND application_name NOT LIKE ${`${storage.appName}%`}`
                )
              ).then(
                (rows) => Number(rows[0]?.n ?? 0),
                () => 0
              )
              if (others > 0) {
                stats.restartSkipped = `${others} other session(s) connected to the server (--force-restart overrides)`
                say(`restart SKIPPED: ${stats.restartSkipped}`)
                return
              }
            }
            say(`restarting Postgres: ${restartCmd}`)
            const t0 = Date.now()
            await new Promise<void>((resolve, reject) =>
              exec(restartCmd, (error, _stdout, stderr) =>
                error ? reject(new Error(`restart command failed: ${stderr || error.message}`)) : resolve()
              )
            )
            stats.restarts++
            stats.restartMs = Date.now() - t0
            say(`Postgres restarted in ${stats.restartMs} ms`)
          })()
        : Promise.resolve()

    // -- watching ----------------------------------------------------------------------------------------------------
    let watching = true
    const watcher = (async () => {
      while (watching) {
        const ahead = await query(progressAhead(token)).catch(() => [])
        stats.checksRun++
        for (const line of ahead) {
          if (!progressViolations.has(line)) say(`VIOLATION ${line}`)
          progressViolations.add(line)
        }
        await sleep(250)
      }
    })()
    const reporter = (async () => {
      while (watching) {
        await sleep(5000)
        if (!watching) break
        const counts = await query(progressCounts(token)).catch(() => undefined)
        say(
          `workers ${workers.size} (${ready.size} ready) · kills: workers ${stats.workerKills}, producers ${stats.producerKills}, ` +
            `drivers ${stats.driverKills}${isPg ? `, listen ${stats.listenKills}, restarts ${stats.restarts}` : ""}` +
            (counts === undefined
              ? " · database unreachable"
              : ` · chords done ${counts.chordsDone}/${options.chords} · runs done ${counts.runsDone}/${options.runs} · ` +
                `tasks succeeded ${counts.tasks.succeeded ?? 0}`)
        )
      }
    })()

    await sleep(Math.max(0, windowStart + window - Date.now()))
    chaosOver = true
    say("faults stop; draining")
    await Promise.all([killLoop, listenLoop, restart])
    const drainDeadline = Date.now() + options.drainTimeoutSec * 1000
    const untilDeadline = <A>(promise: Promise<A>) =>
      Promise.race([promise, sleep(Math.max(0, drainDeadline - Date.now())).then(() => undefined)])
    await untilDeadline(Promise.all([...producers, ...drivers]))
    while (Date.now() < drainDeadline) {
      const counts = await query(progressCounts(token)).catch(() => undefined)
      if (
        counts !== undefined &&
        counts.chordsDone === options.chords &&
        counts.runsDone === options.runs &&
        counts.openTasks === 0
      )
        break
      await sleep(500)
    }
    watching = false
    await Promise.all([watcher, reporter])
    stopping = true
    const stopped = [...workers].map((proc) => {
      proc.kill("SIGTERM")
      return Promise.race([proc.exited, sleep(15_000).then(() => proc.kill("SIGKILL"))])
    })
    await Promise.all(stopped)
    killAll()

    const findings: Findings = await query(check(plan, reference, [...progressViolations]))
    const extraViolations = [
      ...stats.workerCrashes.map((line) => `worker crash: ${line}`),
      ...stats.producerErrors.map((line) => `producer error: ${line}`)
    ]
    const seconds = ((Date.now() - started) / 1000).toFixed(1)
    const taskTotal = Object.values(findings.tasks).reduce((a, b) => a + b, 0)
    console.log("")
    console.log(`chaos summary (seed ${options.seed}, ${seconds}s in all, ${options.durationSec}s of faults)`)
    console.log(
      `  kills      workers ${stats.workerKills} (${stats.workerStarts} started) · producers ${stats.producerKills} ` +
        `of ${options.producers} · extraction drivers ${stats.driverKills} (${stats.driverStarts} started)`
    )
    if (stats.workersRefused > 0) {
      console.log(`  start-up   ${stats.workersRefused} worker(s) started while the server was down exited at once`)
    }
    if (isPg) {
      console.log(
        `  postgres   LISTEN connections terminated ${stats.listenKills} · restarts ${stats.restarts}` +
          (stats.restarts > 0 ? ` (${stats.restartMs} ms)` : "") +
          (stats.restartSkipped !== undefined ? ` (skipped: ${stats.restartSkipped})` : "")
      )
    }
    console.log(
      `  tasks      ${taskTotal} (${Object.entries(findings.tasks)
        .map(([state, n]) => `${state} ${n}`)
        .join(", ")}) · body attempts beyond the first ${findings.attempts}`
    )
    console.log(`  progress   checked ${stats.checksRun} times while running`)
    if (stats.driverErrors.length > 0) {
      console.log(`  drivers    ${stats.driverErrors.length} exited with an error and were resumed:`)
      for (const line of stats.driverErrors.slice(0, 10)) console.log(`    ${line}`)
    }
    const violations = [...findings.violations, ...extraViolations]
    if (violations.length > 0) {
      console.log(`  VIOLATIONS (${violations.length}):`)
      for (const line of violations.slice(0, 50)) console.log(`    ${line}`)
      if (isPg) console.log(`  schema kept for inspection: ${(storage as { schema: string }).schema}`)
    }
    console.log(
      `chaos: chords=${findings.chords} callbacks=${findings.callbacks} duplicates=${findings.duplicates} ` +
        `lost=${findings.lost} stuck=${findings.stuck} runs=${findings.runs} mismatched=${findings.mismatched}`
    )
    const passed = violations.length === 0
    await cleanup(passed)
    return passed ? 0 : 1
  } catch (error) {
    console.error(`chaos: error: ${(error as Error)?.stack ?? String(error)}`)
    await cleanup(false)
    return 1
  } finally {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }
}
