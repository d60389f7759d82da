/**
 * What the dashboard shows, read from Baton's services and tables: runs with progress, rate and ETA; a run's batches
 * (checkpoints); chords; queue depth, throughput and the oldest waiting task; paged, filtered task lists; task detail.
 *
 * Every list is paged (`limit` at most 200) and filtered in the query, so a page costs the same with 100,000 tasks as
 * with 100. Reads only: the one action (retry a dead task) goes through `TaskQueue.retry`. Values are returned as
 * plain JSON-ready objects (epoch milliseconds for times); escaping is the page's job (it renders with textContent).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ExtractionWorkflow from "../../ExtractionWorkflow.js"
import { type Run, type RunNotFound, RunService, type RunState } from "../../RunService.js"
import { type TaskNotFound, TaskQueue, TaskState } from "../../TaskQueue.js"

/** Largest page a list request returns. */
export const maxLimit = 200

const chordStates = ["running", "completed", "failed", "cancelled"] as const
/** The states of a chord. */
export type ChordState = (typeof chordStates)[number]
/** True for a chord state. */
export const isChordState = (s: string): s is ChordState => (chordStates as ReadonlyArray<string>).includes(s)
/** True for a task state. */
export const isTaskState = (s: string): s is TaskState => (TaskState.literals as ReadonlyArray<string>).includes(s)
const runStates: ReadonlyArray<RunState> = ["running", "succeeded", "failed", "cancelled"]
/** True for a run state. */
export const isRunState = (s: string): s is RunState => (runStates as ReadonlyArray<string>).includes(s)

/** A page request. */
export interface Page {
  readonly limit: number
  readonly offset: number
}

/** Filters of the task list (every given field must match). */
export interface TaskFilter {
  readonly state?: TaskState | undefined
  readonly queue?: string | undefined
  /** Exact task name. */
  readonly name?: string | undefined
  /** Substring of the task name or the exact task id. */
  readonly search?: string | undefined
  readonly runId?: string | undefined
  readonly chordId?: string | undefined
}

const num = (value: unknown): number => Number(value)
const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value))
const parse = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}
// LIKE pattern for a substring, with the wildcards of the user's text escaped.
const likeSubstring = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

/** Exponential buckets (ms) of the time-to-callback histogram: ≤1, ≤2, ≤4, … ≤65536, and more. */
export const histogramBounds: ReadonlyArray<number> = Array.from({ length: 17 }, (_, i) => 2 ** i)

/** Builds the read model over the services in context. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const runs = yield* RunService
  const queue = yield* TaskQueue
  const workflow = yield* ExtractionWorkflow.ExtractionWorkflow

  // Batches per second over the run's completed checkpoints (first created → last completed), and the ETA.
  const rateOf = (run: Run) =>
    Effect.gen(function* () {
      const rows = yield* sql<{ n: number; first: number | null; last: number | null }>`
        SELECT count(*) AS n, min(created_at) AS first, max(completed_at) AS last FROM baton_checkpoints
        WHERE run_id IN ${sql.in(run.checkpointScopes)} AND status = 'completed'`
      const row = rows[0]
      const n = num(row?.n ?? 0)
      const first = numOrNull(row?.first)
      const last = numOrNull(row?.last)
      const elapsed = first !== null && last !== null ? last - first : 0
      const batchesPerSecond = n > 0 && elapsed > 0 ? (n * 1000) / elapsed : null
      const remaining = run.totalBatches - run.completedBatches
      const etaMs =
        run.state !== "running" ? null : batchesPerSecond === null ? null : (remaining / batchesPerSecond) * 1000
      return { batchesPerSecond, etaMs }
    })

  const runJson = (run: Run) =>
    Effect.gen(function* () {
      const { batchesPerSecond, etaMs } = yield* rateOf(run)
      const documents =
        run.kind === ExtractionWorkflow.kind
          ? Option.match(yield* Effect.option(workflow.progress(run.id)), {
              onNone: () => null,
              onSome: (p) => ({ done: p.documentsDone, total: p.metadata.totalDocuments })
            })
          : null
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
        finishedAt: run.finishedAt?.getTime() ?? null
      }
    })

  /** Runs, newest first, with progress, rate and ETA. */
  const listRuns = (options: { readonly state?: RunState | undefined; readonly limit: number }) =>
    Effect.flatMap(
      runs.listRuns({ states: options.state === undefined ? undefined : [options.state], limit: options.limit }),
      (list) => Effect.forEach(list, runJson)
    ).pipe(Effect.withSpan("Dashboard.listRuns"))

  /** One run and a page of its batches (checkpoints in every scope, batch order), with the batch's chord. */
  const runDetail = (runId: string, page: Page) =>
    Effect.gen(function* () {
      const run = yield* runs.getRun(runId)
      const json = yield* runJson(run)
      const scopes = run.checkpointScopes
      const rows = yield* sql<{
        run_id: string
        batch_index: number
        status: string
        error: string | null
        created_at: number
        completed_at: number | null
      }>`SELECT run_id, batch_index, status, error, created_at, completed_at FROM baton_checkpoints
         WHERE run_id IN ${sql.in(scopes)} ORDER BY batch_index, created_at LIMIT ${page.limit} OFFSET ${page.offset}`
      const total = yield* sql<{
        n: number
      }>`SELECT count(*) AS n FROM baton_checkpoints WHERE run_id IN ${sql.in(scopes)}`
      // The extraction workflow keys each batch's chord `extract:<scope>:<batch>` (see ExtractionWorkflow).
      const keys = rows.map((row) => `extract:${row.run_id}:${num(row.batch_index)}`)
      const chordRows =
        keys.length === 0
          ? []
          : yield* sql<{ id: string; idempotency_key: string; state: string }>`SELECT id, idempotency_key, state
              FROM baton_chords WHERE idempotency_key IN ${sql.in(keys)}`
      const chordOf = new Map(chordRows.map((row) => [row.idempotency_key, { id: row.id, state: row.state }]))
      return {
        run: json,
        batches: {
          total: num(total[0]?.n ?? 0),
          items: rows.map((row) => ({
            scope: row.run_id,
            batchIndex: num(row.batch_index),
            status: row.status,
            error: parse(row.error),
            createdAt: num(row.created_at),
            completedAt: numOrNull(row.completed_at),
            durationMs: row.completed_at === null ? null : num(row.completed_at) - num(row.created_at),
            chord: chordOf.get(`extract:${row.run_id}:${num(row.batch_index)}`) ?? null
          }))
        }
      }
    }).pipe(Effect.withSpan("Dashboard.runDetail"))

  const chordColumns = sql.literal(
    "id, state, expected, succeeded, failed, cancelled, callback_name, callback_task_id, error_task_id, failure, " +
      "healed, idempotency_key, created_at, last_body_at, dispatched_at"
  )
  interface ChordRow {
    readonly id: string
    readonly state: string
    readonly expected: number
    readonly succeeded: number
    readonly failed: number
    readonly cancelled: number
    readonly callback_name: string
    readonly callback_task_id: string | null
    readonly error_task_id: string | null
    readonly failure: string | null
    readonly healed: number | boolean
    readonly idempotency_key: string | null
    readonly created_at: number
    readonly last_body_at: number | null
    readonly dispatched_at: number | null
  }
  const chordJson = (row: ChordRow) => ({
    id: row.id,
    state: row.state,
    expected: num(row.expected),
    succeeded: num(row.succeeded),
    failed: num(row.failed),
    cancelled: num(row.cancelled),
    callbackName: row.callback_name,
    callbackTaskId: row.callback_task_id,
    errorTaskId: row.error_task_id,
    failure: parse(row.failure),
    healed: Boolean(num(row.healed)),
    idempotencyKey: row.idempotency_key,
    createdAt: num(row.created_at),
    lastBodyAt: numOrNull(row.last_body_at),
    dispatchedAt: numOrNull(row.dispatched_at),
    // What the `baton_chord_dispatch_latency_ms` metric measures: last body completion → callback enqueued.
    timeToCallbackMs:
      row.state === "completed" && row.dispatched_at !== null && row.last_body_at !== null
        ? num(row.dispatched_at) - num(row.last_body_at)
        : null,
    // Creation → callback enqueued.
    totalMs: row.dispatched_at === null ? null : num(row.dispatched_at) - num(row.created_at)
  })

  /** Chords (newest first, optionally in one state), counts by state, and the time-to-callback histogram. */
  const listChords = (options: { readonly state?: ChordState | undefined } & Page) =>
    Effect.gen(function* () {
      const where = options.state === undefined ? sql`1 = 1` : sql`state = ${options.state}`
      const rows = yield* sql<ChordRow>`SELECT ${chordColumns} FROM baton_chords WHERE ${where}
        ORDER BY created_at DESC, id DESC LIMIT ${options.limit} OFFSET ${options.offset}`
      const countRows = yield* sql<{ state: string; n: number }>`SELECT state, count(*) AS n FROM baton_chords
        GROUP BY state`
      const counts: Record<string, number> = Object.fromEntries(chordStates.map((s) => [s, 0]))
      for (const row of countRows) counts[row.state] = num(row.n)
      // Histogram over the latest 1,000 dispatched chords.
      const latencies = yield* sql<{ ms: number }>`SELECT dispatched_at - last_body_at AS ms FROM baton_chords
        WHERE state = 'completed' AND dispatched_at IS NOT NULL AND last_body_at IS NOT NULL
        ORDER BY dispatched_at DESC LIMIT 1000`
      const buckets = [...histogramBounds.map((le) => ({ le, count: 0 })), { le: null as number | null, count: 0 }]
      for (const { ms } of latencies) {
        const value = num(ms)
        const bucket = buckets.find((b) => b.le === null || value <= b.le)!
        bucket.count++
      }
      return {
        counts,
        total: options.state === undefined ? Object.values(counts).reduce((a, b) => a + b, 0) : counts[options.state]!,
        items: rows.map(chordJson),
        histogram: { samples: latencies.length, buckets }
      }
    }).pipe(Effect.withSpan("Dashboard.listChords"))

  /** One chord, with its failing task's error when it failed. */
  const chordDetail = (chordId: string) =>
    Effect.gen(function* () {
      const rows = yield* sql<ChordRow>`SELECT ${chordColumns} FROM baton_chords WHERE id = ${chordId}`
      const row = rows[0]
      if (row === undefined) return Option.none()
      return Option.some(chordJson(row))
    })

  /** Depth by queue and state, throughput over the last minute and five, the oldest waiting task per queue. */
  const queues = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const depthRows = yield* sql<{ queue: string; state: string; n: number }>`SELECT queue, state, count(*) AS n
      FROM baton_tasks GROUP BY queue, state`
    const byQueue = new Map<string, Record<string, number>>()
    for (const row of depthRows) {
      const entry = byQueue.get(row.queue) ?? Object.fromEntries(TaskState.literals.map((state) => [state, 0] as const))
      entry[row.state] = num(row.n)
      byQueue.set(row.queue, entry)
    }
    const oldestRows = yield* sql<{ queue: string; run_at: number }>`SELECT queue, min(run_at) AS run_at
      FROM baton_tasks WHERE state = 'pending' AND run_at <= ${now} GROUP BY queue`
    const oldest = new Map<string, number>()
    for (const row of oldestRows) oldest.set(row.queue, num(row.run_at))
    const throughputRows = yield* sql<{ queue: string | null; outcome: string; recent: number; n: number }>`
      SELECT queue, outcome, sum(CASE WHEN at >= ${now - 60_000} THEN 1 ELSE 0 END) AS recent, count(*) AS n
      FROM baton_completions WHERE kind = 'task' AND at >= ${now - 300_000} GROUP BY queue, outcome`
    const throughput = new Map<
      string,
      { lastMinute: Record<string, number>; lastFiveMinutes: Record<string, number> }
    >()
    for (const row of throughputRows) {
      const key = row.queue ?? "default"
      const entry = throughput.get(key) ?? { lastMinute: {}, lastFiveMinutes: {} }
      entry.lastMinute[row.outcome] = num(row.recent)
      entry.lastFiveMinutes[row.outcome] = num(row.n)
      throughput.set(key, entry)
    }
    const names = [...new Set([...byQueue.keys(), ...throughput.keys()])].sort()
    const items = yield* Effect.forEach(names, (name) =>
      Effect.gen(function* () {
        const runAt = oldest.get(name)
        let oldestTask: { id: string; name: string; waitingMs: number } | null = null
        if (runAt !== undefined) {
          const task = yield* sql<{ id: string; name: string }>`SELECT id, name FROM baton_tasks
            WHERE queue = ${name} AND state = 'pending' AND run_at = ${runAt} LIMIT 1`
          if (task[0] !== undefined) oldestTask = { id: task[0].id, name: task[0].name, waitingMs: now - runAt }
        }
        const t = throughput.get(name) ?? { lastMinute: {}, lastFiveMinutes: {} }
        const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0)
        return {
          queue: name,
          depth: byQueue.get(name) ?? Object.fromEntries(TaskState.literals.map((state) => [state, 0])),
          throughput: {
            lastMinute: t.lastMinute,
            lastFiveMinutes: t.lastFiveMinutes,
            perSecond: sum(t.lastMinute) / 60
          },
          oldestWaiting: oldestTask
        }
      })
    )
    return { at: now, totals: yield* queue.counts, queues: items }
  }).pipe(Effect.withSpan("Dashboard.queues"))

  interface TaskListRow {
    readonly id: string
    readonly name: string
    readonly queue: string
    readonly state: string
    readonly attempts: number
    readonly max_attempts: number
    readonly error: string | null
    readonly chord_id: string | null
    readonly run_id: string | null
    readonly created_at: number
    readonly updated_at: number
    readonly finished_at: number | null
  }

  /** A page of tasks (newest first) matching the filter, and how many match. */
  const listTasks = (filter: TaskFilter, page: Page) =>
    Effect.gen(function* () {
      const conditions = [
        filter.state === undefined ? undefined : sql`state = ${filter.state}`,
        filter.queue === undefined ? undefined : sql`queue = ${filter.queue}`,
        filter.name === undefined ? undefined : sql`name = ${filter.name}`,
        filter.runId === undefined ? undefined : sql`run_id = ${filter.runId}`,
        filter.chordId === undefined ? undefined : sql`chord_id = ${filter.chordId}`,
        filter.search === undefined
          ? undefined
          : sql`(id = ${filter.search} OR name LIKE ${likeSubstring(filter.search)} ESCAPE '\\')`
      ].filter((c) => c !== undefined)
      const where = conditions.length === 0 ? sql`1 = 1` : sql.and(conditions)
      const rows = yield* sql<TaskListRow>`SELECT id, name, queue, state, attempts, max_attempts, error, chord_id,
          run_id, created_at, updated_at, finished_at
        FROM baton_tasks WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT ${page.limit} OFFSET ${page.offset}`
      const total = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE ${where}`
      return {
        total: num(total[0]?.n ?? 0),
        limit: page.limit,
        offset: page.offset,
        items: rows.map((row) => ({
          id: row.id,
          name: row.name,
          queue: row.queue,
          state: row.state,
          attempts: num(row.attempts),
          maxAttempts: num(row.max_attempts),
          error: parse(row.error),
          chordId: row.chord_id,
          runId: row.run_id,
          createdAt: num(row.created_at),
          updatedAt: num(row.updated_at),
          finishedAt: numOrNull(row.finished_at)
        }))
      }
    }).pipe(Effect.withSpan("Dashboard.listTasks"))

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
        retryable: (info.state === "dead" || info.state === "failed") && info.chordId === undefined
      }
    }).pipe(Effect.withSpan("Dashboard.taskDetail"))

  /** Retries a dead or failed task (see `TaskQueue.retry`). */
  const retryTask = (taskId: string) => queue.retry(taskId)

  return { listRuns, runDetail, listChords, chordDetail, queues, listTasks, taskDetail, retryTask } as const
})

/** The read model. */
export type ReadModel = Effect.Effect.Success<typeof make>
/** Errors a read can fail with. */
export type ReadError = SqlError | RunNotFound | TaskNotFound
