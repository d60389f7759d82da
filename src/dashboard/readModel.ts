/**
 * What the dashboard shows, read from Baton's services: runs with progress, rate and ETA; a run's batches
 * (checkpoints); chords; queue depth, throughput and the oldest waiting task; paged, filtered task lists; task detail.
 *
 * Lists come from the services (`TaskQueue.list` / `queueStats`, `ChordRegistry.list`, `RunService.listRuns`); what
 * they do not offer comes from the `ReadModel` service: a run's checkpoint history with timings (the in-memory
 * checkpoint coordinator forgets completed tokens by design, so a history is a property of the durable store),
 * throughput from the completions log, and the time-to-callback histogram. Every list is paged (`limit` at most 200)
 * and filtered in the query: nothing loads every task. Reads only: the one action (retry a dead task) is
 * `TaskQueue.retry`. Values are plain JSON-ready objects (epoch milliseconds for times); escaping is the page's job (it
 * uses textContent). Document counts of extraction runs are shown when the `ExtractionWorkflow` is provided too.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as BatchWorkflow from "../BatchWorkflow.js"
import { type ChordInfo, ChordRegistry, ChordState } from "../ChordRegistry.js"
import * as ExtractionWorkflow from "../extraction/ExtractionWorkflow.js"
import { taskSummaryJson } from "../internal/taskJson.js"
import { ReadModel } from "../ReadModel.js"
import { type Run, type RunNotFound, RunService, RunState } from "../RunService.js"
import { type TaskListFilter, type TaskNotFound, TaskQueue, TaskState } from "../TaskQueue.js"

/**
 * Largest page a list request returns.
 *
 * @category constants
 */
export const maxLimit = 200

/**
 * True for a chord state.
 *
 * @category guards
 */
export const isChordState = (s: string): s is ChordState => (ChordState.literals as ReadonlyArray<string>).includes(s)
/**
 * True for a task state.
 *
 * @category guards
 */
export const isTaskState = (s: string): s is TaskState => (TaskState.literals as ReadonlyArray<string>).includes(s)
/**
 * True for a run state.
 *
 * @category guards
 */
export const isRunState = (s: string): s is RunState => (RunState.literals as ReadonlyArray<string>).includes(s)

/**
 * A page request.
 *
 * @category models
 */
export interface Page {
  readonly limit: number
  readonly offset: number
}

/**
 * Exponential buckets (ms) of the time-to-callback histogram: ≤1, ≤2, ≤4, … ≤65536, and more.
 *
 * @category constants
 */
export const histogramBounds: ReadonlyArray<number> = Array.from({ length: 17 }, (_, i) => 2 ** i)

/**
 * Builds the dashboard's views over the services in context.
 *
 * @category constructors
 */
export const make = Effect.gen(function* () {
  const readModel = yield* ReadModel
  const runs = yield* RunService
  const queue = yield* TaskQueue
  // Optional: an application that embeds the dashboard need not run the reference workflow.
  const workflow = yield* Effect.serviceOption(ExtractionWorkflow.ExtractionWorkflow)
  const chords = yield* ChordRegistry

  // Batches per second over the run's completed checkpoints (first created → last completed), and the ETA.
  const rateOf = (run: Run) =>
    Effect.gen(function* () {
      const stats = yield* readModel.checkpointStats(run.checkpointScopes)
      const n = stats.completed
      const first = stats.firstCreatedAt?.getTime()
      const last = stats.lastCompletedAt?.getTime()
      const elapsed = first !== undefined && last !== undefined ? last - first : 0
      const batchesPerSecond = n > 0 && elapsed > 0 ? (n * 1000) / elapsed : null
      const remaining = run.totalBatches - run.completedBatches
      const etaMs =
        run.state !== "running" ? null : batchesPerSecond === null ? null : (remaining / batchesPerSecond) * 1000
      return { batchesPerSecond, etaMs }
    })

  /**
   * Per run: its unfinished tasks and whether it is stalled — running, with tasks pending or running, and no live
   * worker serving any of their queues (nothing will make progress until one starts).
   */
  const liveness = (list: ReadonlyArray<Run>) =>
    Effect.gen(function* () {
      const running = list.filter((run) => run.state === "running").map((run) => run.id as string)
      const result = new Map<string, { pending: number; running: number; stalled: boolean }>()
      if (running.length === 0) return result
      const work = yield* readModel.runWork(running)
      if (work.length === 0) return result
      const served = new Set((yield* readModel.workers).flatMap((worker) => worker.queues))
      const byRun = new Map<string, { pending: number; running: number; served: boolean }>()
      for (const row of work) {
        const entry = byRun.get(row.runId) ?? { pending: 0, running: 0, served: false }
        entry.pending += row.pending
        entry.running += row.running
        entry.served ||= served.has(row.queue)
        byRun.set(row.runId, entry)
      }
      for (const [runId, entry] of byRun) {
        result.set(runId, { pending: entry.pending, running: entry.running, stalled: !entry.served })
      }
      return result
    })

  const runJson = (run: Run, live?: { pending: number; running: number; stalled: boolean } | undefined) =>
    Effect.gen(function* () {
      const { batchesPerSecond, etaMs } = yield* rateOf(run)
      const documents =
        run.kind === ExtractionWorkflow.kind && Option.isSome(workflow)
          ? Option.match(yield* Effect.option(workflow.value.progress(run.id)), {
              onNone: () => null,
              onSome: (p) => ({ done: p.documentsDone, total: p.metadata.totalDocuments })
            })
          : // Any other kind built on BatchWorkflow: items in confirmed batches.
            Option.getOrNull(BatchWorkflow.itemsOf(run))
      return {
        id: run.id as string,
        kind: run.kind,
        state: run.state,
        completedBatches: run.completedBatches,
        totalBatches: run.totalBatches,
        documents,
        attempt: run.attempt,
        checkpointScope: run.checkpointScope,
        error: run.error ?? null,
        batchesPerSecond,
        etaMs,
        createdAt: run.createdAt.getTime(),
        updatedAt: run.updatedAt.getTime(),
        finishedAt: run.finishedAt?.getTime() ?? null,
        // Unfinished tasks of a running run, and "stalled": work waiting and no live worker for its queues.
        tasksPending: live?.pending ?? 0,
        tasksRunning: live?.running ?? 0,
        stalled: live?.stalled ?? false
      }
    })

  /** Runs, newest first, with progress, rate and ETA. */
  const listRuns = (options: { readonly state?: RunState | undefined; readonly limit: number }) =>
    Effect.flatMap(
      runs.listRuns({ states: options.state === undefined ? undefined : [options.state], limit: options.limit }),
      (list) => Effect.flatMap(liveness(list), (live) => Effect.forEach(list, (run) => runJson(run, live.get(run.id))))
    ).pipe(Effect.withSpan("Dashboard.listRuns"))

  /** One run and a page of its batches (checkpoints in every scope, batch order), with the batch's chord. */
  const runDetail = (runId: string, page: Page) =>
    Effect.gen(function* () {
      const run = yield* runs.getRun(runId)
      const json = yield* runJson(run, (yield* liveness([run])).get(run.id))
      const page_ = yield* readModel.checkpoints(run.checkpointScopes, page)
      // The extraction workflow keys each batch's chord `extract:<scope>:<batch>` (see ExtractionWorkflow).
      const keyOf = (scope: string, batchIndex: number) => `extract:${scope}:${batchIndex}`
      const chordRows = yield* readModel.chordsByKey(page_.items.map((item) => keyOf(item.scope, item.batchIndex)))
      const chordOf = new Map(
        chordRows.map((row) => [row.idempotencyKey, { id: row.chordId as string, state: row.state }])
      )
      return {
        run: json,
        batches: {
          total: page_.total,
          items: page_.items.map((item) => ({
            scope: item.scope,
            batchIndex: item.batchIndex,
            status: item.state,
            error: item.error,
            createdAt: item.createdAt.getTime(),
            completedAt: item.completedAt?.getTime() ?? null,
            durationMs: item.completedAt === undefined ? null : item.completedAt.getTime() - item.createdAt.getTime(),
            chord: chordOf.get(keyOf(item.scope, item.batchIndex)) ?? null
          }))
        }
      }
    }).pipe(Effect.withSpan("Dashboard.runDetail"))

  const chordJson = (info: ChordInfo) => ({
    id: info.chordId as string,
    state: info.state,
    expected: info.expected,
    succeeded: info.succeeded,
    failed: info.failed,
    cancelled: info.cancelled,
    callbackName: info.callbackName,
    callbackTaskId: (info.callbackTaskId as string | undefined) ?? null,
    errorTaskId: (info.errorTaskId as string | undefined) ?? null,
    failure: Option.getOrNull(info.failure),
    healed: info.healed,
    idempotencyKey: info.idempotencyKey ?? null,
    createdAt: info.createdAt.getTime(),
    lastBodyAt: info.lastBodyAt?.getTime() ?? null,
    dispatchedAt: info.dispatchedAt?.getTime() ?? null,
    // What the `baton_chord_dispatch_latency_ms` metric measures: last body completion → callback enqueued.
    timeToCallbackMs:
      info.state === "completed" && info.dispatchedAt !== undefined && info.lastBodyAt !== undefined
        ? info.dispatchedAt.getTime() - info.lastBodyAt.getTime()
        : null,
    // Creation → dispatched.
    totalMs: info.dispatchedAt === undefined ? null : info.dispatchedAt.getTime() - info.createdAt.getTime()
  })

  /** Chords (newest first, optionally in one state), counts by state, and the time-to-callback histogram. */
  const listChords = (options: { readonly state?: ChordState | undefined } & Page) =>
    Effect.gen(function* () {
      const page = yield* chords.list(options)
      // Histogram over the latest 1,000 dispatched chords.
      const latencies = yield* readModel.chordLatencies(1000)
      const buckets = [...histogramBounds.map((le) => ({ le, count: 0 })), { le: null as number | null, count: 0 }]
      for (const value of latencies) {
        buckets.find((b) => b.le === null || value <= b.le)!.count++
      }
      return {
        counts: page.counts,
        total: page.total,
        items: page.items.map(chordJson),
        histogram: { samples: latencies.length, buckets }
      }
    }).pipe(Effect.withSpan("Dashboard.listChords"))

  /** One chord. */
  const chordDetail = (chordId: string) =>
    chords.get(chordId).pipe(
      Effect.map((info) => Option.some(chordJson(info))),
      Effect.catchTag("ChordNotFound", () => Effect.succeed(Option.none()))
    )

  /** Depth by queue and state, throughput over the last minute and five, the oldest waiting task per queue. */
  const queues = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const stats = yield* queue.queueStats
    // Throughput: task completions in the completions log (indexed by time), per queue and outcome.
    const throughputRows = yield* readModel.completionCounts({
      since: new Date(now - 300_000),
      recentSince: new Date(now - 60_000)
    })
    const throughput = new Map<
      string,
      { lastMinute: Record<string, number>; lastFiveMinutes: Record<string, number> }
    >()
    for (const row of throughputRows) {
      const key = row.queue ?? "default"
      const entry = throughput.get(key) ?? { lastMinute: {}, lastFiveMinutes: {} }
      entry.lastMinute[row.outcome] = row.recent
      entry.lastFiveMinutes[row.outcome] = row.total
      throughput.set(key, entry)
    }
    const byQueue = new Map(stats.map((s) => [s.queue, s]))
    const names = [...new Set([...byQueue.keys(), ...throughput.keys()])].sort()
    const zero = Object.fromEntries(TaskState.literals.map((state) => [state, 0]))
    const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0)
    const items = names.map((name) => {
      const stat = byQueue.get(name)
      const t = throughput.get(name) ?? { lastMinute: {}, lastFiveMinutes: {} }
      const oldest = stat === undefined ? Option.none() : stat.oldestWaiting
      return {
        queue: name,
        depth: stat?.counts ?? zero,
        throughput: { lastMinute: t.lastMinute, lastFiveMinutes: t.lastFiveMinutes, perSecond: sum(t.lastMinute) / 60 },
        oldestWaiting: Option.match(oldest, {
          onNone: () => null,
          onSome: (o) => ({ id: o.id as string, name: o.name, waitingMs: now - o.runAt.getTime() })
        })
      }
    })
    return { at: now, totals: yield* queue.counts, queues: items }
  }).pipe(Effect.withSpan("Dashboard.queues"))

  /** A page of tasks (newest first) matching the filter, and how many match. */
  const listTasks = (filter: TaskListFilter, page: Page) =>
    Effect.map(queue.list(filter, page), (result) => ({
      total: result.total,
      limit: page.limit,
      offset: page.offset,
      items: result.items.map((task) => taskSummaryJson("epoch", task))
    })).pipe(Effect.withSpan("Dashboard.listTasks"))

  /** Everything about one task: payload, result, attempts, its last error, its chord. */
  const taskDetail = (taskId: string) =>
    Effect.gen(function* () {
      const info = yield* queue.get(taskId)
      return {
        id: info.id as string,
        name: info.name,
        queue: info.queue,
        namespace: info.namespace,
        tags: info.tags,
        state: info.state,
        priority: info.priority,
        attempts: info.attempts,
        maxAttempts: info.maxAttempts,
        payload: info.payload ?? null,
        result: Option.getOrNull(info.result),
        error: Option.getOrNull(info.error),
        idempotencyKey: info.idempotencyKey ?? null,
        chordId: info.chordId ?? null,
        runId: info.runId ?? null,
        runAt: info.runAt.getTime(),
        createdAt: info.createdAt.getTime(),
        updatedAt: info.updatedAt.getTime(),
        startedAt: info.startedAt?.getTime() ?? null,
        finishedAt: info.finishedAt?.getTime() ?? null,
        progress:
          info.progress === undefined
            ? null
            : { value: info.progress.value, message: info.progress.message ?? null, at: info.progress.at.getTime() },
        retryable: (info.state === "dead" || info.state === "failed") && info.chordId === undefined
      }
    }).pipe(Effect.withSpan("Dashboard.taskDetail"))

  /** The live workers: id, host, pid, queues, tasks in hand, heartbeats. */
  const workers = Effect.map(readModel.workers, (list) => ({
    items: list.map((worker) => ({
      id: worker.id,
      host: worker.host,
      pid: worker.pid,
      queues: worker.queues,
      concurrency: worker.concurrency,
      tasksInHand: worker.tasksInHand,
      startedAt: worker.startedAt.getTime(),
      lastHeartbeat: worker.lastHeartbeat.getTime(),
      expiresAt: worker.expiresAt.getTime()
    }))
  })).pipe(Effect.withSpan("Dashboard.workers"))

  /** Retries a dead or failed task (see `TaskQueue.retry`). */
  const retryTask = (taskId: string) => queue.retry(taskId)

  return { listRuns, runDetail, listChords, chordDetail, queues, listTasks, taskDetail, retryTask, workers } as const
})

/**
 * The dashboard's views.
 *
 * @category models
 */
export type Views = Effect.Effect.Success<typeof make>
/**
 * Errors a read can fail with.
 *
 * @category models
 */
export type ReadError = SqlError | RunNotFound | TaskNotFound
