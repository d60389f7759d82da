/**
 * The operator commands: `baton tasks list|show|retry|cancel`, `baton queues list|pause|resume`, `baton prune`,
 * `baton migrate [--sql]`. Each has a data function (what `--json` prints; the shapes are stable: dates as ISO 8601
 * strings, absent values as `null`) and a text rendering. A refused action (retry of a task that is not dead or
 * failed, cancel of a finished task) fails with `ActionRefused`: exit code 1.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { QueueControl } from "../QueueControl.js"
import { Retention } from "../Retention.js"
import * as Storage from "../Storage.js"
import { taskSummaryJson } from "../internal/taskJson.js"
import { type TaskInfo, type TaskNotFound, TaskQueue, type TaskState, type TaskSummary } from "../TaskQueue.js"
import { print } from "./commands.js"

/** An action the database refused (the task is in a state the action does not apply to). */
export class ActionRefused extends Data.TaggedError("ActionRefused")<{ readonly message: string }> {}

// A missing task: one clear line and exit code 1.
const found = <A, E, R>(id: string, effect: Effect.Effect<A, E | TaskNotFound, R>) =>
  Effect.catchIf(
    effect,
    (error): error is TaskNotFound => (error as { _tag?: unknown })._tag === "TaskNotFound",
    () => Effect.fail(new ActionRefused({ message: `no task with id ${id}` }))
  )

const iso = (date: Date | undefined) => (date === undefined ? null : date.toISOString())

/** A task as `tasks list --json` prints it. */
export const summaryJson = (task: TaskSummary) => taskSummaryJson("iso", task)

/** A task as `tasks show --json` prints it. */
export const infoJson = (task: TaskInfo) => ({
  id: task.id,
  name: task.name,
  queue: task.queue,
  namespace: task.namespace,
  tags: task.tags,
  state: task.state,
  priority: task.priority,
  attempts: task.attempts,
  maxAttempts: task.maxAttempts,
  payload: task.payload ?? null,
  result: Option.getOrNull(task.result),
  error: Option.getOrNull(task.error),
  idempotencyKey: task.idempotencyKey ?? null,
  chordId: task.chordId ?? null,
  runId: task.runId ?? null,
  runAt: iso(task.runAt),
  createdAt: iso(task.createdAt),
  updatedAt: iso(task.updatedAt),
  startedAt: iso(task.startedAt),
  finishedAt: iso(task.finishedAt)
})

/** Filters of `tasks list`. */
export interface ListOptions {
  readonly state?: TaskState | undefined
  readonly name?: string | undefined
  readonly queue?: string | undefined
  readonly limit: number
}

/** `tasks list` data: `{ total, items }`, newest first. */
export const listTasks = (options: ListOptions) =>
  Effect.gen(function* () {
    const page = yield* (yield* TaskQueue).list(
      { state: options.state, name: options.name, queue: options.queue },
      { limit: options.limit }
    )
    return { total: page.total, items: page.items.map(summaryJson) }
  })

/** `tasks show` data. */
export const showTask = (id: string) =>
  found(
    id,
    Effect.map(
      Effect.flatMap(TaskQueue, (queue) => queue.get(id)),
      infoJson
    )
  )

/** `tasks retry`: `{ id, retried: true }`, or `ActionRefused` / `TaskNotFound`. */
export const retryTask = (id: string) => found(id, retryFound(id))

const retryFound = (id: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    const task = yield* queue.get(id)
    if (!(yield* queue.retry(id))) {
      return yield* new ActionRefused({
        message: `task ${id} is ${task.state}${task.chordId === undefined ? "" : " (a chord body task)"}: only a dead or failed task outside a chord can be retried`
      })
    }
    return { id, retried: true }
  })

/** `tasks cancel`: `{ id, cancelled: true }`, or `ActionRefused` / `TaskNotFound`. */
export const cancelTask = (id: string) => found(id, cancelFound(id))

const cancelFound = (id: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    const task = yield* queue.get(id)
    if (!(yield* queue.cancel(id))) {
      return yield* new ActionRefused({
        message: `task ${id} is ${task.state}: only a pending or running task can be cancelled`
      })
    }
    return { id, cancelled: true }
  })

/** `queues list` data: every queue with tasks or settings, sorted by name. */
export const listQueues = Effect.gen(function* () {
  const stats = yield* (yield* TaskQueue).queueStats
  const settings = yield* (yield* QueueControl).list
  const names = [...new Set([...stats.map((s) => s.queue), ...settings.map((s) => s.queue)])].sort()
  const empty = { pending: 0, running: 0, succeeded: 0, failed: 0, dead: 0, cancelled: 0 }
  return names.map((queue) => {
    const stat = stats.find((s) => s.queue === queue)
    const setting = settings.find((s) => s.queue === queue)
    const oldest = stat === undefined ? Option.none() : stat.oldestWaiting
    return {
      queue,
      counts: stat?.counts ?? empty,
      oldestWaiting: Option.match(oldest, {
        onNone: () => null,
        onSome: (task) => ({ id: task.id, name: task.name, runAt: task.runAt.toISOString() })
      }),
      paused: setting?.paused ?? false,
      rateLimit: setting?.rateLimit ?? null,
      concurrencyLimit: setting?.concurrencyLimit ?? null
    }
  })
})

/** `queues pause` / `queues resume`: `{ queue, paused }`. */
export const setPaused = (queue: string, paused: boolean) =>
  Effect.gen(function* () {
    const control = yield* QueueControl
    yield* paused ? control.pause(queue) : control.resume(queue)
    return { queue, paused: (yield* control.get(queue)).paused }
  })

/** `prune`: what it deleted (`Retention.PruneReport`). */
export const prune = Effect.flatMap(Retention, (retention) => retention.prune)

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

const out = (json: boolean, value: unknown, text: () => string) => print(json ? JSON.stringify(value, null, 2) : text())

/** Prints `tasks list`. */
export const printTasks = (json: boolean, options: ListOptions) =>
  Effect.flatMap(listTasks(options), (page) =>
    out(json, page, () =>
      page.items.length === 0
        ? "no tasks match"
        : `${table(
            ["ID", "NAME", "QUEUE", "STATE", "ATTEMPTS", "UPDATED"],
            page.items.map((t) => [t.id, t.name, t.queue, t.state, `${t.attempts}/${t.maxAttempts}`, t.updatedAt ?? ""])
          )}\n${page.items.length} of ${page.total}`
    )
  )

/** Prints `tasks show`. */
export const printTask = (json: boolean, id: string) =>
  Effect.flatMap(showTask(id), (task) =>
    out(json, task, () =>
      Object.entries(task)
        .map(([key, value]) => `${key.padEnd(15)} ${typeof value === "string" ? value : JSON.stringify(value)}`)
        .join("\n")
    )
  )

/** Prints `tasks retry` / `tasks cancel`. */
export const printAction = <E, R>(json: boolean, action: Effect.Effect<{ readonly id: string }, E, R>, verb: string) =>
  Effect.flatMap(action, (result) => out(json, result, () => `${verb} task ${result.id}`))

/** Prints `queues list`. */
export const printQueues = (json: boolean) =>
  Effect.flatMap(listQueues, (queues) =>
    out(json, queues, () =>
      queues.length === 0
        ? "no queues"
        : table(
            ["QUEUE", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "DEAD", "STATUS", "LIMITS"],
            queues.map((q) => [
              q.queue,
              String(q.counts.pending),
              String(q.counts.running),
              String(q.counts.succeeded),
              String(q.counts.failed),
              String(q.counts.dead),
              q.paused ? "paused" : "active",
              [
                q.rateLimit === null ? undefined : `${q.rateLimit.limit}/${q.rateLimit.intervalMs}ms`,
                q.concurrencyLimit === null ? undefined : `max ${q.concurrencyLimit} running`
              ]
                .filter((x) => x !== undefined)
                .join(", ") || "—"
            ])
          )
    )
  )

/** Prints `queues pause` / `queues resume`. */
export const printPaused = (json: boolean, queue: string, paused: boolean) =>
  Effect.flatMap(setPaused(queue, paused), (result) =>
    out(json, result, () => `queue ${result.queue} ${result.paused ? "paused" : "resumed"}`)
  )

/** Prints `prune`. */
export const printPrune = (json: boolean) =>
  Effect.flatMap(prune, (report) =>
    out(
      json,
      report,
      () =>
        `pruned tasks: ${report.tasks.succeeded} succeeded, ${report.tasks.cancelled} cancelled, ` +
        `${report.tasks.failed} failed, ${report.tasks.dead} dead; chords: ${report.chords}; runs: ${report.runs}; ` +
        `completion events: ${report.completions}`
    )
  )

/** `migrate`: the storage layer applied every migration; prints where things stand. */
export const printMigrated = (json: boolean, storageText: string) =>
  Effect.gen(function* () {
    const storage = yield* Storage.Storage
    const names = Storage.migrationNames(storage.dialect)
    yield* out(
      json,
      { dialect: storage.dialect, migrations: names, current: names[names.length - 1] },
      () => `${storageText}: migrations current (${names.length}, latest ${names[names.length - 1]})`
    )
  })

/** `migrate --sql`: the Postgres migrations as a SQL script (no database needed). */
export const printMigrationSql = Effect.flatMap(Storage.pgMigrationSql, (text) => print(text.trimEnd()))
