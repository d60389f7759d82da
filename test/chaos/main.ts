/**
 * `npm run chaos -- [options]`: see runner.ts and docs/reliability.md.
 */
import { type ChaosOptions, defaults, runChaos } from "./runner.js"

const usage = `usage: npm run chaos -- [options]
  --duration <s>           seconds of faults (default ${defaults.durationSec})
  --workers <W>            baton worker processes (default ${defaults.workers})
  --chords <C>             chords (default ${defaults.chords})
  --bodies <B>             body tasks per chord (default ${defaults.bodies})
  --seed <n>               seed of the plan and of the faults (default: random, printed)
  --database-url <url>     Postgres (default $DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test)
  --sqlite <file>          a SQLite file instead of Postgres (kills only)
  --no-restart             do not restart Postgres
  --restart-cmd <cmd>      how to restart Postgres (default: pg_ctlcluster for the URL's port, from pg_lsclusters)
  --force-restart          restart even if other clients are connected to the server
  --producers <P>          producer processes; every other one is SIGKILLed after creating its chords (default ${defaults.producers})
  --runs <R>               extraction runs (default ${defaults.runs})
  --docs <n>               documents per run (default ${defaults.docs})
  --batch-size <n>         documents per batch (default ${defaults.batchSize})
  --kill-every <ms>        mean interval between worker kills (default ${defaults.killEveryMs})
  --listen-kill-every <ms> mean interval between LISTEN connection kills (default ${defaults.listenKillEveryMs})
  --lease <s>              task lease of the workers (default ${defaults.leaseSec})
  --concurrency <n>        tasks per worker at once (default ${defaults.concurrency})
  --drain-timeout <s>      how long to wait for everything to finish after the faults (default ${defaults.drainTimeoutSec})
  --keep                   keep the Postgres schema even when the run passes
  --verbose                echo every child process's output`

const fail = (message: string): never => {
  console.error(`chaos: ${message}\n${usage}`)
  process.exit(2)
}

const parse = (argv: ReadonlyArray<string>): ChaosOptions => {
  const options: Record<string, unknown> = {
    ...defaults,
    seed: Math.floor(Math.random() * 2 ** 31),
    databaseUrl: process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test",
    sqlite: undefined,
    restartCmd: undefined
  }
  const numeric: Record<string, string> = {
    "--duration": "durationSec",
    "--workers": "workers",
    "--chords": "chords",
    "--bodies": "bodies",
    "--seed": "seed",
    "--producers": "producers",
    "--runs": "runs",
    "--docs": "docs",
    "--batch-size": "batchSize",
    "--kill-every": "killEveryMs",
    "--listen-kill-every": "listenKillEveryMs",
    "--lease": "leaseSec",
    "--concurrency": "concurrency",
    "--drain-timeout": "drainTimeoutSec"
  }
  const minimum: Record<string, number> = { workers: 1, bodies: 1, producers: 1, docs: 1, batchSize: 1, leaseSec: 1 }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg]
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`)
    if (flag in numeric) {
      const key = numeric[flag]!
      const n = Number(value())
      if (!Number.isSafeInteger(n) || n < (minimum[key] ?? 0)) fail(`${flag} must be an integer ≥ ${minimum[key] ?? 0}`)
      options[key] = n
    } else if (flag === "--database-url") options.databaseUrl = value()
    else if (flag === "--sqlite") options.sqlite = value()
    else if (flag === "--restart-cmd") options.restartCmd = value()
    else if (flag === "--no-restart") options.restart = false
    else if (flag === "--force-restart") options.forceRestart = true
    else if (flag === "--keep") options.keep = true
    else if (flag === "--verbose") options.verbose = true
    else if (flag === "--help" || flag === "-h") {
      console.log(usage)
      process.exit(0)
    } else fail(`unknown option ${flag}`)
  }
  return options as unknown as ChaosOptions
}

runChaos(parse(process.argv.slice(2))).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`chaos: ${(error as Error)?.stack ?? String(error)}`)
    process.exit(1)
  }
)
