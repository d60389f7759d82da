/**
 * The `baton` command line (@effect/cli): `demo`, `run extract`, `resume`, `worker`, `status`, `export`, `cancel`,
 * `dashboard`.
 *
 * Every command takes the storage options (`--db`, `--database-url`) and `--verbose`. `main(argv)` parses, runs the
 * command and turns every outcome into an exit code: 0 success, 1 failure (one line on stderr), 2 bad arguments,
 * 130 interrupted. It never fails; `src/bin.ts` runs it.
 */
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as path from "node:path"
import { StorageError } from "../Storage.js"
import * as ExtractionWorkflow from "../extraction/ExtractionWorkflow.js"
import * as Commands from "./commands.js"
import { defaultMaxBytes, demoCorpus, directoryCorpus } from "./corpus.js"
import { describeCause, ExitCode } from "./errors.js"
import { formats, subjects } from "./export.js"
import { chooseStorage, describeStorage, type Services, servicesLayer, storageLayer } from "./layers.js"

import { version } from "./version.js"

export { version }

const db = Options.text("db").pipe(
  Options.withDescription("SQLite database file (default: $BATON_DB, else .baton/baton.db)"),
  Options.optional
)
const databaseUrl = Options.text("database-url").pipe(
  Options.withDescription(
    "Postgres URL, postgres://user@host:port/db (default: $DATABASE_URL; schema: $BATON_PG_SCHEMA)"
  ),
  Options.optional
)
const verbose = Options.boolean("verbose").pipe(Options.withDescription("Log more, and show stack traces on errors"))
const storage = { db, databaseUrl, verbose }

const ranged = (name: string, fallback: number, description: string, min: number, max: number) =>
  Options.integer(name).pipe(
    Options.withDescription(description),
    Options.withDefault(fallback),
    Options.filterMap(
      (n) => (Number.isSafeInteger(n) && n >= min && n <= max ? Option.some(n) : Option.none()),
      max === Number.MAX_SAFE_INTEGER
        ? min === 0
          ? `--${name} must be 0 or more`
          : `--${name} must be at least ${min}`
        : `--${name} must be from ${min} to ${max}`
    )
  )

const positive = (name: string, fallback: number, description: string, max = Number.MAX_SAFE_INTEGER) =>
  ranged(name, fallback, description, 1, max)

const nonNegative = (name: string, fallback: number, description: string, max = Number.MAX_SAFE_INTEGER) =>
  ranged(name, fallback, description, 0, max)

const batchSize = positive(
  "batch-size",
  ExtractionWorkflow.defaultBatchSize,
  "Documents per batch (one chord each)",
  100_000
)
const workers = nonNegative("workers", 1, "In-process workers; 0 leaves the work to `baton worker` processes", 64)
const concurrency = positive("concurrency", 8, "Tasks each worker runs at once", 1000)
const lease = positive(
  "lease",
  30,
  "Seconds a worker holds a task; a dead worker's tasks are retried after this",
  86_400
)
const runIdOption = Options.text("run-id").pipe(
  Options.withDescription("Use this run id (running an existing id continues that run)"),
  Options.optional
)
const maxBytes = positive("max-bytes", defaultMaxBytes, "Skip documents larger than this")

// The demo reads the node_modules of the current directory, or of Baton's own package when there is none here.
const demoRoot = (): string => {
  const here = process.cwd()
  if (fs.existsSync(path.join(here, "node_modules"))) return here
  return path.resolve(import.meta.dirname, "../..")
}

interface StorageOptions {
  readonly db: Option.Option<string>
  readonly databaseUrl: Option.Option<string>
  readonly verbose: boolean
}

/** The global logging options (`--log-level`, `--log-format`), taken out of argv before @effect/cli parses it. */
export interface LogSettings {
  /** Explicit `--log-level`; otherwise Debug with `--verbose`, else Warning. */
  readonly level: LogLevel.LogLevel | undefined
  readonly format: "text" | "json"
}

const logLevels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  warn: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

class LogOptionError extends Error {}

/**
 * Takes `--log-level LEVEL` and `--log-format text|json` (also `--opt=value`) out of argv wherever they stand —
 * before or after the subcommand — so they are global options of every command.
 */
export const extractLogSettings = (
  argv: ReadonlyArray<string>
): { readonly argv: ReadonlyArray<string>; readonly settings: LogSettings } => {
  const rest: Array<string> = []
  let level: LogLevel.LogLevel | undefined
  let format: "text" | "json" = "text"
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const match = /^--(log-level|log-format)(?:=(.*))?$/.exec(arg)
    if (match === null || i < 2) {
      rest.push(arg)
      continue
    }
    const value = match[2] ?? argv[++i]
    if (value === undefined) throw new LogOptionError(`--${match[1]} needs a value`)
    if (match[1] === "log-level") {
      level = logLevels[value.toLowerCase()]
      if (level === undefined)
        throw new LogOptionError(`--log-level must be one of ${Object.keys(logLevels).join(", ")} (got "${value}")`)
    } else if (value === "text" || value === "json") {
      format = value
    } else {
      throw new LogOptionError(`--log-format must be text or json (got "${value}")`)
    }
  }
  return { argv: rest, settings: { level, format } }
}

const currentLogSettings = FiberRef.unsafeMake<LogSettings>({ level: undefined, format: "text" })

// Logs go to stderr (stdout carries results: `baton export | ...` must not receive log lines).
const stderrLogger = (format: LogSettings["format"]) => {
  const formatter = format === "json" ? Logger.jsonLogger : Logger.logfmtLogger
  return Logger.make<unknown, void>((entry) => {
    process.stderr.write(formatter.log(entry) + "\n")
  })
}

/** Read-only commands refuse a SQLite file that does not exist (instead of creating an empty database). */
const requireExistingDb = (choice: ReturnType<typeof chooseStorage>) =>
  choice._tag === "Sqlite" && choice.filename !== ":memory:" && !fs.existsSync(choice.filename)
    ? Effect.fail(
        new StorageError({
          message: `no database at ${choice.filename} (give --db FILE or --database-url URL; nothing was created)`
        })
      )
    : Effect.void

/** Runs a command body with Baton's services on the chosen storage (scoped: workers stop before storage closes). */
const withServices = <A, E>(
  options: StorageOptions,
  body: (storage: string) => Effect.Effect<A, E, Services | Scope.Scope>,
  access: "read-only" | "read-write" = "read-write"
) => {
  const choice = chooseStorage(options)
  return Effect.flatMap(FiberRef.get(currentLogSettings), (settings) =>
    Effect.zipRight(
      access === "read-only" ? requireExistingDb(choice) : Effect.void,
      Effect.scoped(body(describeStorage(choice))).pipe(Effect.provide(servicesLayer(storageLayer(choice))))
    ).pipe(
      Logger.withMinimumLogLevel(settings.level ?? (options.verbose ? LogLevel.Debug : LogLevel.Warning)),
      Effect.provide(Logger.replace(Logger.defaultLogger, stderrLogger(settings.format)))
    )
  )
}

const demo = Command.make(
  "demo",
  {
    ...storage,
    batchSize,
    workers,
    concurrency,
    lease,
    runId: runIdOption,
    limit: Options.integer("limit").pipe(Options.withDescription("Only the first N READMEs"), Options.optional)
  },
  (options) =>
    withServices(options, (storageText) =>
      Effect.gen(function* () {
        const corpus = yield* demoCorpus({ cwd: demoRoot(), limit: Option.getOrUndefined(options.limit) })
        yield* Commands.runCorpus({
          corpus,
          description: "the Markdown READMEs of the packages in node_modules",
          title: "Baton demo: structure and statistics of every package README in node_modules",
          storage: storageText,
          batchSize: options.batchSize,
          runId: options.runId,
          workers: { workers: options.workers, concurrency: options.concurrency, leaseSeconds: options.lease }
        })
      })
    )
).pipe(Command.withDescription("Extract the READMEs in node_modules with in-process workers (SQLite by default)"))

const extract = Command.make(
  "extract",
  {
    ...storage,
    dir: Args.text({ name: "dir" }).pipe(Args.withDescription("Directory of .md / .html / .txt files")),
    batchSize,
    workers,
    concurrency,
    lease,
    runId: runIdOption,
    maxBytes
  },
  (options) =>
    withServices(options, (storageText) =>
      Effect.gen(function* () {
        const corpus = yield* directoryCorpus({ dir: options.dir, maxBytes: options.maxBytes })
        yield* Commands.runCorpus({
          corpus,
          description: path.resolve(options.dir),
          title: `Extracting ${path.resolve(options.dir)}`,
          storage: storageText,
          batchSize: options.batchSize,
          runId: options.runId,
          workers: { workers: options.workers, concurrency: options.concurrency, leaseSeconds: options.lease }
        })
      })
    )
).pipe(Command.withDescription("Extract every text, Markdown and HTML file under a directory"))

const run = Command.make("run").pipe(
  Command.withDescription("Start a workflow run"),
  Command.withSubcommands([extract])
)

const resume = Command.make(
  "resume",
  { ...storage, runId: Args.text({ name: "runId" }), workers, concurrency, lease },
  (options) =>
    withServices(options, (storageText) =>
      Commands.resume({
        runId: options.runId,
        storage: storageText,
        workers: { workers: options.workers, concurrency: options.concurrency, leaseSeconds: options.lease }
      })
    )
).pipe(Command.withDescription("Continue a run after its last confirmed batch"))

const worker = Command.make(
  "worker",
  {
    ...storage,
    concurrency,
    lease,
    queues: Options.text("queues").pipe(
      Options.withDescription("Comma-separated queues to take tasks from (default: the workflow's queues)"),
      Options.map((text) =>
        text
          .split(",")
          .map((queue) => queue.trim())
          .filter((queue) => queue.length > 0)
      ),
      Options.optional
    ),
    tasks: Options.text("tasks").pipe(
      Options.withDescription(
        "A module (.ts or .js) whose exported Task definitions this worker runs besides the workflow's"
      ),
      Options.optional
    ),
    metricsPort: Options.integer("metrics-port").pipe(
      Options.withDescription("Serve /healthz and /metrics (Prometheus) on this port (0: any free port)"),
      Options.filterMap(
        (n) => (n >= 0 && n <= 65535 ? Option.some(n) : Option.none()),
        "--metrics-port must be 0 to 65535"
      ),
      Options.optional
    ),
    metricsHost: Options.text("metrics-host").pipe(
      Options.withDescription("Interface for --metrics-port (default 127.0.0.1; 0.0.0.0 for a remote scraper)"),
      Options.withDefault("127.0.0.1")
    )
  },
  (options) =>
    // A --tasks module that cannot be loaded is refused before the storage opens.
    Effect.zipRight(
      Option.match(options.tasks, { onNone: () => Effect.void, onSome: Commands.loadTaskModule }),
      withServices(options, (storageText) =>
        Commands.worker({
          concurrency: options.concurrency,
          leaseSeconds: options.lease,
          queues: options.queues,
          tasks: options.tasks,
          metrics: Option.map(options.metricsPort, (port) => ({ port, host: options.metricsHost })),
          storage: storageText
        })
      )
    )
).pipe(Command.withDescription("Run a worker process until Ctrl-C (in-flight tasks finish or are handed back)"))

const status = Command.make(
  "status",
  {
    ...storage,
    json: Options.boolean("json").pipe(Options.withDescription("Machine-readable output")),
    limit: positive("limit", 20, "Runs to show, newest first")
  },
  (options) =>
    withServices(
      options,
      (storageText) => Commands.status({ json: options.json, limit: options.limit, storage: storageText }),
      "read-only"
    )
).pipe(Command.withDescription("Runs with progress, pending checkpoints, chords and tasks by state"))

const exportCommand = Command.make(
  "export",
  {
    ...storage,
    runId: Args.text({ name: "runId" }),
    format: Options.choice("format", formats).pipe(Options.withDefault("jsonl" as const)),
    what: Options.choice("what", subjects).pipe(
      Options.withDescription("Per-document extracts or per-batch summaries"),
      Options.withDefault("documents" as const)
    ),
    out: Options.file("out").pipe(Options.withDescription("Write to this file instead of stdout"), Options.optional)
  },
  (options) =>
    withServices(
      options,
      () => Commands.exportRun({ runId: options.runId, format: options.format, what: options.what, out: options.out }),
      "read-only"
    )
).pipe(Command.withDescription("Write a run's results as JSON Lines or CSV"))

const cancel = Command.make("cancel", { ...storage, runId: Args.text({ name: "runId" }) }, (options) =>
  withServices(options, () => Commands.cancel(options.runId))
).pipe(Command.withDescription("Cancel a run (it cannot be resumed afterwards)"))

const dashboard = Command.make(
  "dashboard",
  {
    ...storage,
    port: Options.integer("port").pipe(
      Options.withDescription("TCP port (0: any free port; the URL printed on start has the real one)"),
      Options.withDefault(4400),
      Options.filterMap((n) => (n >= 0 && n <= 65535 ? Option.some(n) : Option.none()), "--port must be 0 to 65535")
    ),
    host: Options.text("host").pipe(
      Options.withDescription("Interface to bind (default 127.0.0.1: this machine only)"),
      Options.withDefault("127.0.0.1")
    ),
    allowActions: Options.boolean("allow-actions").pipe(
      Options.withDescription("Allow actions (retry a dead task); read-only otherwise")
    )
  },
  (options) =>
    withServices(
      options,
      (storageText) =>
        Commands.dashboard({
          port: options.port,
          host: options.host,
          allowActions: options.allowActions,
          storage: storageText
        }),
      "read-only"
    )
).pipe(Command.withDescription("Serve a live web dashboard of runs, checkpoints, chords and queues until Ctrl-C"))

const root = Command.make("baton").pipe(
  Command.withDescription("Effect-TS workflow runtime: durable tasks, checkpoints, chords, completion streams"),
  Command.withSubcommands([demo, run, resume, worker, status, exportCommand, cancel, dashboard])
)

const cli = Command.run(root, { name: "baton", version })

// @effect/cli prints parse errors through Console.error as a paragraph plus a blank line: make it one prefixed line.
const oneLineErrors = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Console.consoleWith((console) =>
    Effect.withConsole(effect, {
      ...console,
      error: (...args: ReadonlyArray<unknown>) =>
        Effect.sync(() => {
          const text = args
            .map(String)
            .join(" ")
            .replace(/\s*\n\s*/g, " ")
            .trim()
          if (text !== "") process.stderr.write(`baton: ${text}\n`)
        })
    })
  )

/** Parses `argv` (`[node, script, ...args]`), runs the command, prints any error as one line, returns the exit code. */
export const main = (argv: ReadonlyArray<string>): Effect.Effect<number, never, CliApp.CliApp.Environment> => {
  const verboseFlag = argv.includes("--verbose")
  let parsed: ReturnType<typeof extractLogSettings>
  try {
    parsed = extractLogSettings(argv)
  } catch (error) {
    return Effect.sync(() => {
      process.stderr.write(`baton: ${(error as Error).message}\n`)
      return ExitCode.usage
    })
  }
  return oneLineErrors(cli(parsed.argv)).pipe(
    Effect.locally(currentLogSettings, parsed.settings),
    Effect.exit,
    Effect.flatMap((exit) => {
      if (Exit.isSuccess(exit)) return Effect.succeed(ExitCode.ok)
      if (Cause.isInterruptedOnly(exit.cause)) return Effect.interrupt
      const { code, line } = describeCause(exit.cause)
      return Effect.sync(() => {
        if (line !== undefined) process.stderr.write(`baton: ${line}\n`)
        if (verboseFlag && code !== ExitCode.usage) process.stderr.write(Cause.pretty(exit.cause) + "\n")
        return code
      })
    })
  )
}
