/**
 * What each `baton` command does, given Baton's services. Output goes to stdout (results, progress) and stderr
 * (notices); the command definitions and option parsing are in `app.ts`.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { CheckpointCoordinator } from "../CheckpointCoordinator.js"
import { ReadModel } from "../ReadModel.js"
import * as ExtractionWorkflow from "../extraction/ExtractionWorkflow.js"
import { type Run, RunService, RunStateConflict } from "../RunService.js"
import { type InvalidInput, TaskQueue } from "../TaskQueue.js"
import * as Observability from "../Observability.js"
import * as Worker from "../Worker.js"
import * as DashboardServer from "../dashboard/server.js"
import type { Corpus } from "./corpus.js"
import * as Display from "./display.js"
import { exportBatches, exportDocuments, type Format, type Subject } from "./export.js"
import type { Services } from "./layers.js"
import * as BatchWorkflow from "../BatchWorkflow.js"
import * as Task from "../Task.js"

/** Writes to stdout, waiting for the pipe to drain when its buffer is full (a slow reader slows the writer). */
export const write = (text: string): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (process.stdout.write(text)) resume(Effect.void)
    else process.stdout.once("drain", () => resume(Effect.void))
  })
/** Writes a line to stdout. */
export const print = (line = ""): Effect.Effect<void> => write(line + "\n")
/** Writes a line to stderr. */
export const notice = (line: string): Effect.Effect<void> => Effect.sync(() => void process.stderr.write(line + "\n"))

/** In-process worker settings of `demo`, `run extract` and `resume`. */
export interface WorkerSettings {
  /** In-process workers (0: none; `baton worker` processes do the work). */
  readonly workers: number
  /** Handlers per worker. */
  readonly concurrency: number
  /** Task lease in seconds: a task whose worker died is retried after this. */
  readonly leaseSeconds: number
}

const leaseOptions = (leaseSeconds: number) => ({
  leaseDuration: Duration.seconds(leaseSeconds),
  // Reclaim other (dead) workers' expired leases about as often as a lease lasts, at most every 5 s.
  reclaimInterval: Duration.millis(Math.max(100, Math.min(5000, leaseSeconds * 1000)))
})

const startWorkers = (settings: WorkerSettings) =>
  Effect.forEach(
    Array.from({ length: settings.workers }, (_, i) => i),
    (i) =>
      Worker.run({
        tasks: ExtractionWorkflow.tasks,
        concurrency: settings.concurrency,
        workerId: `cli-${process.pid}-${i}`,
        shutdownGracePeriod: "5 seconds",
        ...leaseOptions(settings.leaseSeconds)
      }),
    { discard: true }
  )

const workersText = (settings: WorkerSettings) =>
  settings.workers === 0
    ? "none in this process (run `baton worker` elsewhere)"
    : `${settings.workers} in-process worker${settings.workers === 1 ? "" : "s"} × concurrency ${settings.concurrency}`

/** A short run id for the CLI, checked to be unused. */
export const freshRunId: Effect.Effect<string, never, RunService> = Effect.gen(function* () {
  const runs = yield* RunService
  while (true) {
    const id = crypto.randomUUID().slice(0, 8)
    const taken = yield* runs.getRun(id).pipe(
      Effect.as(true),
      Effect.catchTag("RunNotFound", () => Effect.succeed(false)),
      Effect.orDie
    )
    if (!taken) return id
  }
})

/**
 * Watches a run's progress until interrupted: a bar redrawn in place on a TTY, a line per confirmed batch otherwise.
 * Returns a finaliser that prints the last state.
 */
const watchProgress = (runId: string, tty: boolean) =>
  Effect.gen(function* () {
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    let start: { readonly documents: number; readonly at: number } | undefined
    let lastBatches = -1
    let lastBar = ""
    const render = (final: boolean) =>
      Effect.gen(function* () {
        const progress = yield* Effect.option(workflow.progress(runId))
        if (Option.isNone(progress)) return
        const now = yield* Clock.currentTimeMillis
        const snapshot: Display.ProgressSnapshot = {
          completedBatches: progress.value.run.completedBatches,
          totalBatches: progress.value.run.totalBatches,
          documentsDone: progress.value.documentsDone,
          totalDocuments: progress.value.metadata.totalDocuments
        }
        if (start === undefined) start = { documents: snapshot.documentsDone, at: now }
        const { etaMs, rate } = Display.rateAndEta(snapshot, start.documents, now - start.at)
        if (tty) {
          const bar = Display.progressBar(snapshot, rate, etaMs)
          if (bar !== lastBar || final) yield* write(`\r\x1b[2K${bar}${final ? "\n" : ""}`)
          lastBar = bar
        } else if (snapshot.completedBatches > lastBatches) {
          // One line per confirmed batch, also for batches confirmed between two polls (batches are full but the
          // last, so the document count of batch k is exact).
          const batchSize = progress.value.metadata.batchSize
          const from = lastBatches < 0 ? snapshot.completedBatches : lastBatches + 1
          for (let k = Math.max(1, from); k <= snapshot.completedBatches; k++) {
            const documentsDone =
              k === snapshot.completedBatches
                ? snapshot.documentsDone
                : Math.min(k * batchSize, snapshot.totalDocuments)
            yield* print(Display.progressLine({ ...snapshot, completedBatches: k, documentsDone }, rate, etaMs))
          }
        }
        lastBatches = Math.max(lastBatches, snapshot.completedBatches)
      })
    const fiber = yield* Effect.forkScoped(
      Effect.forever(Effect.zipRight(render(false), Effect.sleep(tty ? "100 millis" : "200 millis")))
    )
    return Effect.zipRight(Fiber.interrupt(fiber), render(true))
  })

/** Runs (or resumes) an extraction with in-process workers and a progress display, then prints the summary table. */
export const execute = (options: {
  readonly runId: string
  /** A new run's input; `undefined` resumes `runId`. */
  readonly input: ExtractionWorkflow.RunInput | undefined
  readonly workers: WorkerSettings
  readonly header: ReadonlyArray<readonly [string, string]>
  readonly title: string
  readonly skipped?: number | undefined
}): Effect.Effect<void, ExtractionWorkflow.WorkflowError | InvalidInput, Services | Scope.Scope> =>
  Effect.gen(function* () {
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    const tty = process.stdout.isTTY === true
    yield* print(options.title)
    for (const [key, value] of [...options.header, ["workers", workersText(options.workers)] as const]) {
      yield* print(`  ${key.padEnd(9)} ${value}`)
    }
    yield* print()
    yield* startWorkers(options.workers)
    const started = yield* Clock.currentTimeMillis
    const before = yield* Effect.option(workflow.progress(options.runId))
    const documentsBefore = Option.match(before, { onNone: () => 0, onSome: (p) => p.documentsDone })
    const stopWatching = yield* watchProgress(options.runId, tty)
    const result = yield* (
      options.input === undefined ? workflow.resume(options.runId) : workflow.run(options.input)
    ).pipe(
      Effect.onExit(() => stopWatching),
      Effect.onInterrupt(() =>
        notice(`\ninterrupted: run ${options.runId} stopped cleanly; continue with: baton resume ${options.runId}`)
      )
    )
    const elapsed = (yield* Clock.currentTimeMillis) - started
    yield* print()
    yield* print(
      Display.summaryTable({
        runId: result.runId,
        state: "succeeded",
        batches: result.batches,
        summary: result.summary,
        elapsedMs: elapsed,
        documentsThisProcess: result.documents - documentsBefore,
        skipped: options.skipped
      })
    )
    yield* print()
    yield* print(`Results: baton export ${result.runId} --format csv --out ${result.runId}.csv`)
  })

/** `baton demo` / `baton run extract`: a new run over a corpus. */
export const runCorpus = (options: {
  readonly corpus: Corpus
  readonly description: string
  readonly title: string
  readonly storage: string
  readonly batchSize: number
  readonly runId: Option.Option<string>
  readonly workers: WorkerSettings
}): Effect.Effect<void, ExtractionWorkflow.WorkflowError | InvalidInput, Services | Scope.Scope> =>
  Effect.gen(function* () {
    const runId = Option.isSome(options.runId) ? options.runId.value : yield* freshRunId
    const documents = options.corpus.documents
    const batches = Math.ceil(documents.length / options.batchSize)
    yield* execute({
      runId,
      input: { documents, batchSize: options.batchSize, runId, source: options.description },
      workers: options.workers,
      title: options.title,
      skipped: options.corpus.skipped,
      header: [
        ["storage", options.storage],
        [
          "corpus",
          `${documents.length} documents from ${options.description}` +
            (options.corpus.skipped > 0 ? ` (${options.corpus.skipped} skipped: too large or binary)` : "")
        ],
        ["run", `${runId} · ${batches} batch${batches === 1 ? "" : "es"} of up to ${options.batchSize}`]
      ]
    })
  })

/** `baton resume <runId>`. */
export const resume = (options: {
  readonly runId: string
  readonly storage: string
  readonly workers: WorkerSettings
}): Effect.Effect<void, ExtractionWorkflow.WorkflowError | InvalidInput, Services | Scope.Scope> =>
  Effect.gen(function* () {
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    const progress = yield* workflow.progress(options.runId)
    const run = progress.run
    if (run.state === "cancelled") {
      return yield* new RunStateConflict({ runId: run.id, from: run.state, to: "running" })
    }
    yield* execute({
      runId: options.runId,
      input: undefined,
      workers: options.workers,
      title: `Resuming run ${run.id}`,
      header: [
        ["storage", options.storage],
        ["source", progress.metadata.source ?? "—"],
        [
          "state",
          `${run.state}, ${run.completedBatches}/${run.totalBatches} batches confirmed` +
            (run.error !== undefined ? ` (last error: ${run.error})` : "")
        ]
      ]
    })
  })

/** The `--tasks` module of `baton worker` cannot be loaded or exports no task. */
export class TaskModuleError extends Data.TaggedError("TaskModuleError")<{ readonly message: string }> {}

const isTask = Task.isTask

let typeScriptRegistered = false

/** A TypeScript `--tasks` module is loaded through tsx (a dev dependency of the app), registered once. */
const registerTypeScript = (file: string) =>
  Effect.tryPromise({
    try: async () => {
      if (typeScriptRegistered) return
      const tsx = (await import("tsx/esm/api" as string)) as { register: () => unknown }
      tsx.register()
      typeScriptRegistered = true
    },
    catch: () =>
      new TaskModuleError({
        message: `--tasks: loading ${file} (TypeScript) needs tsx: npm install --save-dev tsx (or pass the compiled .js module)`
      })
  })

/**
 * The Task definitions a module exports (each export that is a Task, or an array of Tasks; `default` too), for
 * `baton worker --tasks <module>`. Their handlers may use Baton's services (SqlClient, TaskQueue, ChordRegistry, ...)
 * and nothing else. A name exported twice by different definitions, or one of the workflow's names, is refused.
 */
export const loadTaskModule = (file: string): Effect.Effect<ReadonlyArray<Task.AnyTask>, TaskModuleError> =>
  Effect.gen(function* () {
    const resolved = path.resolve(file)
    if (!fs.existsSync(resolved)) return yield* new TaskModuleError({ message: `--tasks: no such file: ${file}` })
    if (/\.[cm]?ts$/.test(resolved)) yield* registerTypeScript(file)
    const module = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(resolved).href) as Promise<Record<string, unknown>>,
      catch: (cause) =>
        new TaskModuleError({ message: `--tasks: cannot load ${file}: ${(cause as Error)?.message ?? String(cause)}` })
    })
    const found = new Map<string, Task.AnyTask>()
    const reserved = new Set<string>(ExtractionWorkflow.tasks.map((task) => task.name))
    for (const value of Object.values(module)) {
      for (const candidate of Array.isArray(value) ? value : [value]) {
        if (!isTask(candidate)) continue
        if (reserved.has(candidate.name)) {
          return yield* new TaskModuleError({
            message: `--tasks: ${file} defines "${candidate.name}", a name the workflow's tasks use`
          })
        }
        const existing = found.get(candidate.name)
        if (existing !== undefined && existing !== candidate) {
          return yield* new TaskModuleError({
            message: `--tasks: ${file} exports two different tasks named "${candidate.name}"`
          })
        }
        found.set(candidate.name, candidate)
      }
    }
    if (found.size === 0) return yield* new TaskModuleError({ message: `--tasks: ${file} exports no Task definition` })
    return [...found.values()]
  })

/** `baton worker`: runs a worker until interrupted (Ctrl-C), then stops gracefully. */
export const worker = (options: {
  readonly concurrency: number
  readonly leaseSeconds: number
  readonly queues: Option.Option<ReadonlyArray<string>>
  readonly tasks?: Option.Option<string> | undefined
  /** Serve `/healthz` and `/metrics` on this port and host. */
  readonly metrics?: Option.Option<{ readonly port: number; readonly host: string }> | undefined
  readonly storage: string
}): Effect.Effect<void, TaskModuleError | InvalidInput | Observability.ObservabilityError, Services | Scope.Scope> =>
  Effect.gen(function* () {
    const file = options.tasks === undefined ? undefined : Option.getOrUndefined(options.tasks)
    const extra = file === undefined ? [] : yield* loadTaskModule(file)
    const tasks: ReadonlyArray<Task.AnyTask> = [...ExtractionWorkflow.tasks, ...extra]
    const queues =
      Option.getOrUndefined(options.queues) ??
      [...new Set(tasks.map((task) => task.defaults.queue ?? "default"))].sort()
    // Finalizers run in reverse order: "stopping", then the worker's graceful shutdown, then "stopped". (Worker.run is
    // not called in an acquireRelease: fibers forked in its uninterruptible acquire could never be interrupted.)
    let started: Worker.WorkerHandle | undefined
    yield* Effect.addFinalizer(() =>
      started === undefined
        ? Effect.void
        : Effect.flatMap(started.processed, (n) =>
            notice(`worker ${started!.workerId} stopped: ${n} task outcomes recorded`)
          )
    )
    // Handlers of `--tasks` may use Baton's services, which are in this context (the cast only widens the type).
    const handle = yield* Worker.run({
      tasks: tasks as ReadonlyArray<Task.Task<string, unknown, unknown, unknown, unknown, unknown, unknown, Services>>,
      concurrency: options.concurrency,
      queues,
      shutdownGracePeriod: "10 seconds",
      ...leaseOptions(options.leaseSeconds)
    })
    started = handle
    const metrics = options.metrics === undefined ? undefined : Option.getOrUndefined(options.metrics)
    if (metrics !== undefined) {
      const served = yield* Observability.serve(metrics)
      yield* print(`worker ${handle.workerId}: health on ${served.url}healthz, metrics on ${served.url}metrics`)
    }
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(handle.inFlight, (n) =>
        notice(`worker ${handle.workerId} stopping: letting ${n} in-flight task${n === 1 ? "" : "s"} finish…`)
      )
    )
    yield* print(
      `worker ${handle.workerId} on ${options.storage}: queues ${queues.join(",")}, ` +
        `concurrency ${options.concurrency}` +
        (file === undefined ? "" : `, ${extra.length} more task${extra.length === 1 ? "" : "s"} from ${file}`) +
        "; Ctrl-C to stop"
    )
    return yield* Effect.never
  })

/** The data behind `baton status`. */
export const statusReport = (limit: number) =>
  Effect.gen(function* () {
    const runs = yield* RunService
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    const checkpoints = yield* CheckpointCoordinator
    const queue = yield* TaskQueue
    const readModel = yield* ReadModel
    const list = yield* runs.listRuns({ limit })
    const documents = (run: Run) =>
      run.kind === ExtractionWorkflow.kind
        ? Effect.map(Effect.option(workflow.progress(run.id)), (p) =>
            Option.match(p, {
              onNone: () => ({}),
              onSome: (p) => ({ documentsDone: p.documentsDone, totalDocuments: p.metadata.totalDocuments })
            })
          )
        : // Any other kind built on BatchWorkflow: items in confirmed batches.
          Effect.succeed(
            Option.match(BatchWorkflow.itemsOf(run), {
              onNone: () => ({}),
              onSome: (items) => ({ itemsDone: items.done, totalItems: items.total })
            })
          )
    const runsJson = yield* Effect.forEach(list, (run) =>
      Effect.map(documents(run), (docs) => ({
        id: run.id,
        kind: run.kind,
        state: run.state,
        completedBatches: run.completedBatches,
        totalBatches: run.totalBatches,
        ...docs,
        attempt: run.attempt,
        error: run.error ?? null,
        createdAt: run.createdAt.toISOString(),
        updatedAt: run.updatedAt.toISOString(),
        finishedAt: run.finishedAt?.toISOString() ?? null
      }))
    )
    const pendingCheckpoints = yield* Effect.forEach(
      list.filter((run) => run.state === "running"),
      (run) =>
        Effect.map(checkpoints.getPendingCheckpoints(run.checkpointScope), (tokens) =>
          tokens.map((token) => ({
            runId: run.id,
            batchIndex: token.batchIndex,
            checkpointId: token.id,
            scope: token.runId
          }))
        )
    ).pipe(Effect.map((lists) => lists.flat()))
    const chords: Record<string, number> = { ...(yield* readModel.chordCounts) }
    const tasks = yield* queue.counts
    const now = yield* Clock.currentTimeMillis
    const workers = (yield* readModel.workers).map((worker) => ({
      id: worker.id,
      host: worker.host,
      pid: worker.pid,
      queues: worker.queues,
      tasksInHand: worker.tasksInHand,
      startedAt: worker.startedAt.toISOString(),
      lastHeartbeat: worker.lastHeartbeat.toISOString(),
      lastHeartbeatAgoMs: now - worker.lastHeartbeat.getTime()
    }))
    // Running tasks with their reported progress (the newest 20).
    const runningPage = yield* queue.list({ state: "running" }, { limit: 20 })
    const running = yield* Effect.forEach(runningPage.items, (summary) =>
      Effect.map(Effect.option(queue.get(summary.id)), (info) => {
        const progress = Option.flatMap(info, (i) => Option.fromNullable(i.progress))
        return {
          id: summary.id as string,
          name: summary.name,
          queue: summary.queue,
          runId: summary.runId ?? null,
          progress: Option.match(progress, {
            onNone: () => null,
            onSome: (p) => ({ value: p.value, message: p.message ?? null, at: p.at.toISOString() })
          })
        }
      })
    )
    // A running run with unfinished tasks and no live worker for their queues makes no progress: "stalled".
    const runIds = list.filter((run) => run.state === "running").map((run) => run.id as string)
    const work = yield* readModel.runWork(runIds)
    const served = new Set(workers.flatMap((worker) => worker.queues))
    const stalled = new Set(
      runIds.filter((id) => {
        const rows = work.filter((row) => row.runId === id)
        return rows.length > 0 && !rows.some((row) => served.has(row.queue))
      })
    )
    return {
      runs: runsJson.map((run) => ({ ...run, stalled: stalled.has(run.id) })),
      pendingCheckpoints,
      chords,
      tasks: { ...tasks },
      runningTasks: running,
      workers
    }
  })

/** `baton status [--json]`. */
export const status = (options: { readonly json: boolean; readonly limit: number; readonly storage: string }) =>
  Effect.gen(function* () {
    const report = yield* statusReport(options.limit)
    if (options.json) return yield* print(JSON.stringify(report, null, 2))
    yield* print(`Baton status · ${options.storage}`)
    yield* print()
    if (report.runs.length === 0) yield* print("RUNS  none yet (try: baton demo)")
    else {
      const header = ["RUN", "KIND", "STATE", "BATCHES", "DOCUMENTS", "ATTEMPT", "UPDATED"]
      const rows = report.runs.map((run) => [
        run.id,
        run.kind,
        run.stalled ? "stalled (no live worker)" : run.state,
        `${run.completedBatches}/${run.totalBatches}`,
        "documentsDone" in run ? `${run.documentsDone}/${run.totalDocuments}` : "—",
        String(run.attempt),
        run.updatedAt.replace("T", " ").slice(0, 19)
      ])
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
      const line = (cells: ReadonlyArray<string>) =>
        cells
          .map((cell, i) => cell.padEnd(widths[i]!))
          .join("  ")
          .trimEnd()
      yield* print(line(header))
      for (const row of rows) yield* print(line(row))
      for (const run of report.runs) if (run.error !== null) yield* print(`  ${run.id}: ${run.error}`)
    }
    yield* print()
    yield* print(
      report.pendingCheckpoints.length === 0
        ? "PENDING CHECKPOINTS  none"
        : `PENDING CHECKPOINTS  ${report.pendingCheckpoints.map((c) => `run ${c.runId} batch ${c.batchIndex}`).join(", ")}`
    )
    yield* print(
      `CHORDS  ${Object.entries(report.chords)
        .map(([state, n]) => `${state} ${n}`)
        .join(" · ")}`
    )
    yield* print(
      `TASKS   ${Object.entries(report.tasks)
        .map(([state, n]) => `${state} ${n}`)
        .join(" · ")}`
    )
    for (const task of report.runningTasks) {
      if (task.progress === null) continue
      const percent = `${Math.round(task.progress.value * 100)}%`
      yield* print(
        `  running ${task.id} ${task.name}: ${percent}${task.progress.message === null ? "" : ` ${task.progress.message}`}`
      )
    }
    yield* print()
    if (report.workers.length === 0) yield* print("WORKERS none alive")
    else {
      yield* print(`WORKERS ${report.workers.length} alive`)
      for (const worker of report.workers) {
        yield* print(
          `  ${worker.id}  ${worker.host} pid ${worker.pid}  queues ${worker.queues.join(",")}  ` +
            `${worker.tasksInHand} task${worker.tasksInHand === 1 ? "" : "s"} in hand  ` +
            `heartbeat ${(worker.lastHeartbeatAgoMs / 1000).toFixed(1)} s ago`
        )
      }
    }
  })

/** `baton export <runId>`. */
export const exportRun = (options: {
  readonly runId: string
  readonly format: Format
  readonly what: Subject
  readonly out: Option.Option<string>
}) =>
  Effect.gen(function* () {
    const runs = yield* RunService
    const workflow = yield* ExtractionWorkflow.ExtractionWorkflow
    yield* runs.getRun(options.runId)
    const rows =
      options.what === "documents" ? yield* workflow.documents(options.runId) : yield* workflow.batches(options.runId)
    const text =
      options.what === "documents"
        ? exportDocuments(rows as ReadonlyArray<ExtractionWorkflow.SavedDocument>, options.format)
        : exportBatches(rows as ReadonlyArray<ExtractionWorkflow.SavedBatch>, options.format)
    if (Option.isNone(options.out)) return yield* write(text)
    const file = options.out.value
    yield* Effect.try({
      try: () => fs.writeFileSync(file, text),
      catch: (cause) => new ExportError({ message: `cannot write ${file}: ${(cause as Error).message}` })
    })
    yield* notice(`wrote ${rows.length} ${options.what} of run ${options.runId} to ${file} (${options.format})`)
  })

/** Writing the export file failed. */
export class ExportError extends Data.TaggedError("ExportError")<{ readonly message: string }> {}

/** `baton cancel <runId>`: the run becomes cancelled and its running chords are cancelled. */
export const cancel = (runId: string) =>
  Effect.gen(function* () {
    const { chordsCancelled: cancelled, run } = yield* BatchWorkflow.cancelRun(runId)
    yield* print(
      `run ${run.id} cancelled at ${run.completedBatches}/${run.totalBatches} batches` +
        (cancelled > 0 ? `; ${cancelled} chord${cancelled === 1 ? "" : "s"} in flight cancelled` : "")
    )
  })

/** `baton dashboard`: serves the web dashboard until interrupted (Ctrl-C / SIGTERM), then closes it. */
export const dashboard = (options: {
  readonly port: number
  readonly host: string
  readonly allowActions: boolean
  readonly storage: string
}) =>
  Effect.gen(function* () {
    const token = process.env.BATON_DASHBOARD_TOKEN
    const running = yield* DashboardServer.serve({
      port: options.port,
      host: options.host,
      allowActions: options.allowActions,
      token: token === undefined || token === "" ? undefined : token,
      storage: options.storage
    })
    yield* Effect.addFinalizer(() => notice("baton dashboard stopped"))
    const mode = [
      options.allowActions ? "actions allowed" : "read-only",
      token ? "BATON_DASHBOARD_TOKEN required" : "no token"
    ].join(", ")
    yield* print(`baton dashboard on ${running.url} (${mode}; ${options.storage}); Ctrl-C to stop`)
    return yield* Effect.never
  })
