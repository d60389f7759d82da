/**
 * The statements of `TaskQueue` on `@effect/sql` (Postgres, a SQLite file, or SQLite `:memory:`; same code, two
 * dialects). The public module `SqlTaskQueue.ts` builds its layer from `make`.
 *
 * - Claims are one statement: `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING` on
 *   Postgres, `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING` on SQLite (one writer at a time), so two workers
 *   never hold a valid lease on the same task.
 * - Completions are batched and go through the one finish path (`finishPath.ts`): one transaction completes many
 *   tasks, each guarded by `id AND lease_id AND state = 'running'`, and appends their completion events (and NOTIFY)
 *   in that same transaction.
 * - Enqueue goes through the one task insert (`taskRows.makeInsertTasks`): one JSON parameter
 *   (`json_to_recordset` / `json_each`) instead of thousands of placeholders.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { settingsCacheTtl } from "../../QueueControl.js"
import { Storage } from "../../Storage.js"
import type * as Task from "../../Task.js"
import {
  type QueueStats,
  type RawEnqueue,
  type TaskError,
  TaskId,
  type TaskInfo,
  type TaskListFilter,
  TaskNotFound,
  type TaskPage,
  TaskQueue,
  type TaskState,
  type WorkerRegistration
} from "../../TaskQueue.js"
import { checkRequest, encodeCall } from "../request.js"
import { makeLedgerContext } from "./chordLedger.js"
import { byDialect } from "./dialect.js"
import { makeAppendLog } from "./completionLog.js"
import { makeFinishPath } from "./finishPath.js"
import * as PgListener from "./pgListener.js"
import { claimLimited, controlledQueues } from "./queueControl.js"
import {
  claimedColumns,
  decodeTaskError,
  type InsertRow,
  likeSubstring,
  makeInsertTasks,
  findByIdempotencyKey,
  type TaskRow,
  toClaimed,
  toDate,
  toInfo,
  toInsertRow,
  currentTraceContext
} from "./taskRows.js"
import { onEnqueued, tasksChannel } from "./wakes.js"
import { liveWorkers } from "./workerRows.js"
import * as Prepared from "./prepared.js"

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const wakeHub = yield* PubSub.sliding<string>(64)
  const statements = byDialect(storage.dialect, {
    pg: () => pgStatements(sql, storage.channelPrefix),
    sqlite: () => sqliteStatements(sql)
  })
  yield* statements.listenInProcess(wakeHub)
  const insertTasks = makeInsertTasks(sql, storage.dialect, storage.channelPrefix)
  const finishPath = makeFinishPath(
    sql,
    storage.dialect,
    storage.channelPrefix,
    makeLedgerContext(sql, storage.dialect, storage.channelPrefix)
  )
  const notifyQueues = statements.notifyQueues

  const chunk = 5000
  const enqueueRaw = (requests: ReadonlyArray<RawEnqueue>) =>
    Effect.gen(function* () {
      if (requests.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      // The enqueue's span context travels with the task (only when a tracer is installed: nothing reads it
      // otherwise), so the worker's `Worker.execute` span continues this trace.
      const traceContext = yield* currentTraceContext
      // Every request is checked before anything is written: one bad request fails the whole batch.
      const rows: Array<InsertRow> = []
      const repeats = new Map<string, RawEnqueue>()
      for (const request of requests) {
        const checked = checkRequest(request)
        if (Either.isLeft(checked)) return yield* checked.left
        const row = { ...toInsertRow({ ...request, payload: null }, now, traceContext), payload: checked.right }
        if (request.replace === true || request.debounceMs !== undefined) repeats.set(row.id, request)
        rows.push(row)
      }
      const insertAll = Effect.gen(function* () {
        const inserted = new Set<string>()
        // Chunked so a huge enqueue does not build one giant statement.
        for (let i = 0; i < rows.length; i += chunk) {
          for (const id of yield* insertTasks(rows.slice(i, i + chunk))) inserted.add(id)
        }
        const result: Array<string> = []
        for (const row of rows) {
          if (inserted.has(row.id as string)) {
            result.push(row.id as string)
            continue
          }
          // Lost to an existing task with the same idempotency key: return that task.
          const found = yield* findByIdempotencyKey(sql, row)
          if (found === undefined) {
            return yield* Effect.dieMessage(`enqueue: task ${row.id} was neither inserted nor found`)
          }
          result.push(found)
          const repeat = repeats.get(row.id)
          if (repeat !== undefined) yield* updateRepeated(found, row, repeat, now)
        }
        return result
      })
      // Postgres: up to one chunk is one statement (insert + NOTIFY), atomic without a transaction of its own (it
      // still joins the caller's). A task that lost to an existing idempotency key is looked up afterwards: that
      // task is committed (the conflicting insert waited for it). SQLite batches are short and local anyway.
      const ids = yield* statements.insertIsAtomic && rows.length <= chunk ? insertAll : sql.withTransaction(insertAll)
      yield* Effect.forEach(new Set(rows.map((row) => row.queue as string)), (queue) => PubSub.publish(wakeHub, queue))
      return ids.map((id) => TaskId.make(id))
    }).pipe(
      Effect.withSpan("TaskQueue.enqueueRaw", { captureStackTrace: false, attributes: { count: requests.length } })
    )

  // A repeated idempotency key with `replace` / `debounce`: only a task still pending changes (a claimed one is
  // running its payload already). Its workers are woken in case the run-at moved earlier.
  const updateRepeated = (id: string, row: InsertRow, request: RawEnqueue, now: number) =>
    Effect.gen(function* () {
      const runAt =
        request.replace === true
          ? sql`${row.run_at}`
          : sql`CASE WHEN run_at < ${row.run_at} THEN ${row.run_at} ELSE run_at END`
      const set =
        request.replace === true
          ? sql`payload = ${row.payload}, priority = ${row.priority}, run_at = ${runAt}, updated_at = ${now}`
          : sql`run_at = ${runAt}, updated_at = ${now}`
      const updated = yield* sql<{ queue: string }>`UPDATE baton_tasks SET ${set}
        WHERE id = ${id} AND state = 'pending' RETURNING queue`
      if (updated.length > 0) yield* notifyQueues(updated.map((r) => r.queue))
    })

  const enqueueMany = (calls: Iterable<Task.TaskCall>) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const requests = yield* Effect.forEach(calls, (call) => encodeCall(call.task, call.payload, call.options, now))
      return yield* enqueueRaw(requests)
    })

  const enqueue = <T extends Task.Any>(task: T, payload: Task.Payload<T>, options: Task.EnqueueOptions = {}) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const request = yield* encodeCall(task, payload, options, now)
      const ids = yield* enqueueRaw([request])
      return ids[0]!
    }).pipe(Effect.withSpan("TaskQueue.enqueue", { captureStackTrace: false, attributes: { task: task.name } }))

  const findRow = (taskId: string) =>
    sql<TaskRow>`SELECT * FROM baton_tasks WHERE id = ${taskId}`.pipe(
      Effect.flatMap((rows) =>
        rows[0] === undefined ? Effect.fail(new TaskNotFound({ taskId })) : Effect.succeed(rows[0])
      )
    )

  const get = (taskId: string) => Effect.map(findRow(taskId), toInfo).pipe(Effect.withSpan("TaskQueue.get"))

  // Chunks of 1,000 ids: far below either dialect's bound-parameter limit, one round trip each.
  const getMany = (taskIds: Iterable<string>) =>
    Effect.gen(function* () {
      const ids = [...new Set(taskIds)]
      const infos: Array<TaskInfo> = []
      for (let i = 0; i < ids.length; i += 1000) {
        const rows = yield* sql<TaskRow>`SELECT * FROM baton_tasks WHERE id IN ${sql.in(ids.slice(i, i + 1000))}`
        for (const row of rows) infos.push(toInfo(row))
      }
      return infos
    }).pipe(Effect.withSpan("TaskQueue.getMany"))

  const result = <T extends Task.Any>(task: T, taskId: string) =>
    Effect.gen(function* () {
      const row = yield* findRow(taskId)
      if (row.state !== "succeeded" || row.result === null) return Option.none()
      const decoded = yield* Schema.decodeUnknown(Schema.parseJson(task.success as Schema.Schema<unknown, unknown>))(
        row.result
      ).pipe(Effect.orDie)
      return Option.some(decoded as Task.Success<T>)
    })

  const cancel = (taskId: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const error = JSON.stringify({ kind: "cancelled", message: "cancelled", attempt: 0 })
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* finishPath.finish(
            sql`state = 'cancelled', lease_id = NULL, lease_expires_at = NULL, error = ${error},
                finished_at = ${now}, updated_at = ${now}`,
            sql`id = ${taskId} AND state IN ('pending', 'running')`,
            "cancelled",
            now
          )
          return rows.length > 0
        })
      )
    }).pipe(Effect.withSpan("TaskQueue.cancel"))

  // A manual retry of a task that ended badly. Chord body tasks are refused: their chord counted them and decided
  // (failed, no callback), so running them again could not change the outcome, only confuse it.
  const retry = (taskId: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<{ id: string; queue: string }>`UPDATE baton_tasks SET state = 'pending', attempts = 0,
        run_at = ${now}, lease_id = NULL, lease_expires_at = NULL, worker_id = NULL, result = NULL,
        finished_at = NULL, updated_at = ${now}
        WHERE id = ${taskId} AND state IN ('dead', 'failed') AND chord_id IS NULL RETURNING id, queue`
      if (rows.length === 0) return false
      yield* notifyQueues(rows.map((row) => row.queue))
      yield* PubSub.publish(wakeHub, rows[0]!.queue)
      return true
    }).pipe(Effect.withSpan("TaskQueue.retry", { attributes: { taskId } }))

  const counts = sql<{ state: TaskState; n: number }>`SELECT state, count(*) AS n FROM baton_tasks GROUP BY state`.pipe(
    Effect.map((rows) => {
      const out: Record<TaskState, number> = {
        pending: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        dead: 0,
        cancelled: 0
      }
      for (const row of rows) out[row.state] = Number(row.n)
      return out
    })
  )

  const emptyCounts = (): Record<TaskState, number> => ({
    pending: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    dead: 0,
    cancelled: 0
  })

  const list = (
    filter: TaskListFilter = {},
    page: { readonly limit?: number | undefined; readonly offset?: number | undefined } = {}
  ) =>
    Effect.gen(function* () {
      const limit = Math.min(1000, Math.max(1, Math.floor(page.limit ?? 50)))
      const offset = Math.max(0, Math.floor(page.offset ?? 0))
      const conditions = [
        filter.state === undefined ? undefined : sql`state = ${filter.state}`,
        filter.queue === undefined ? undefined : sql`queue = ${filter.queue}`,
        filter.name === undefined ? undefined : sql`name = ${filter.name}`,
        filter.runId === undefined ? undefined : sql`run_id = ${filter.runId}`,
        filter.chordId === undefined ? undefined : sql`chord_id = ${filter.chordId}`,
        filter.search === undefined
          ? undefined
          : sql`(id = ${filter.search} OR name LIKE ${likeSubstring(filter.search)} ESCAPE '\\')`
      ].filter((condition) => condition !== undefined)
      const where = conditions.length === 0 ? sql`1 = 1` : sql.and(conditions)
      const rows = yield* sql<
        Pick<
          TaskRow,
          | "id"
          | "name"
          | "queue"
          | "state"
          | "attempts"
          | "max_attempts"
          | "error"
          | "chord_id"
          | "run_id"
          | "created_at"
          | "updated_at"
          | "finished_at"
        >
      >`SELECT id, name, queue, state, attempts, max_attempts, error, chord_id, run_id, created_at, updated_at,
          finished_at FROM baton_tasks WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT ${limit} OFFSET ${offset}`
      const total = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks WHERE ${where}`
      return {
        total: Number(total[0]?.n ?? 0),
        items: rows.map((row) => ({
          id: TaskId.make(row.id),
          name: row.name,
          queue: row.queue,
          state: row.state,
          attempts: Number(row.attempts),
          maxAttempts: Number(row.max_attempts),
          error: row.error === null ? Option.none() : (decodeTaskError(row.error) as Option.Option<TaskError>),
          chordId: row.chord_id ?? undefined,
          runId: row.run_id ?? undefined,
          createdAt: new Date(Number(row.created_at)),
          updatedAt: new Date(Number(row.updated_at)),
          finishedAt: toDate(row.finished_at)
        }))
      } satisfies TaskPage
    }).pipe(Effect.withSpan("TaskQueue.list"))

  const queueStats = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const rows = yield* sql<{ queue: string; state: TaskState; n: number }>`SELECT queue, state, count(*) AS n
      FROM baton_tasks GROUP BY queue, state`
    const byQueue = new Map<string, Record<TaskState, number>>()
    for (const row of rows) {
      const counts = byQueue.get(row.queue) ?? emptyCounts()
      counts[row.state] = Number(row.n)
      byQueue.set(row.queue, counts)
    }
    // Per queue, the claim index (queue, priority, run_at WHERE pending) answers this without a scan.
    const oldest = yield* sql<{ queue: string; run_at: number }>`SELECT queue, min(run_at) AS run_at FROM baton_tasks
      WHERE state = 'pending' AND run_at <= ${now} GROUP BY queue`
    const oldestByQueue = new Map<string, { id: TaskId; name: string; runAt: Date }>()
    for (const { queue, run_at } of oldest) {
      const [task] = yield* sql<{ id: string; name: string }>`SELECT id, name FROM baton_tasks
        WHERE queue = ${queue} AND state = 'pending' AND run_at = ${run_at} ORDER BY id LIMIT 1`
      if (task !== undefined) {
        oldestByQueue.set(queue, { id: TaskId.make(task.id), name: task.name, runAt: new Date(Number(run_at)) })
      }
    }
    return [...byQueue.keys()].sort().map((queue): QueueStats => ({
      queue,
      counts: byQueue.get(queue)!,
      oldestWaiting: Option.fromNullable(oldestByQueue.get(queue))
    }))
  }).pipe(Effect.withSpan("TaskQueue.queueStats"))

  // Which of a worker's queues have a limit and are not paused, re-read at most once per `settingsCacheTtl`: a stale
  // answer only delays when a newly limited queue is claimed again (the ordinary claim skips it by itself).
  const limitedCache = new Map<string, { readonly at: number; readonly queues: ReadonlyArray<string> }>()
  const limitedTtlMs = Duration.toMillis(settingsCacheTtl)
  const limitedQueues = (queues: ReadonlyArray<string>, now: number) =>
    Effect.gen(function* () {
      const key = queues.join("\u0000")
      const cached = limitedCache.get(key)
      if (cached !== undefined && now - cached.at < limitedTtlMs && now >= cached.at) return cached.queues
      const rows = yield* controlledQueues(sql, queues)
      const limited = rows.filter((row) => Number(row.paused) === 0).map((row) => row.queue)
      if (limitedCache.size > 64) limitedCache.clear()
      limitedCache.set(key, { at: now, queues: limited })
      return limited
    })

  const claim = (options: {
    readonly queues: ReadonlyArray<string>
    readonly limit: number
    readonly leaseMs: number
    readonly workerId: string
    readonly leaseId?: string | undefined
  }) =>
    Effect.gen(function* () {
      if (options.limit <= 0 || options.queues.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const leaseId = options.leaseId ?? crypto.randomUUID()
      const expires = now + options.leaseMs
      const set = sql`state = 'running', attempts = attempts + 1, lease_id = ${leaseId},
        lease_expires_at = ${expires}, worker_id = ${options.workerId}, started_at = COALESCE(started_at, ${now}),
        updated_at = ${now}`
      // Queues with a setting (paused or limited) first, each in its own short transaction (`claimLimited`); then
      // the ordinary one-statement claim of the rest, which excludes every queue with a setting by itself.
      const rows: Array<TaskRow> = []
      for (const queue of yield* limitedQueues(options.queues, now)) {
        const remaining = options.limit - rows.length
        if (remaining <= 0) break
        rows.push(
          ...(yield* claimLimited(sql, queue, now, remaining, (n) => statements.claim(set, [queue], now, n, false)))
        )
      }
      if (rows.length < options.limit) {
        rows.push(...(yield* statements.claim(set, options.queues, now, options.limit - rows.length, true)))
      }
      // RETURNING does not preserve the subquery's order.
      return [...rows]
        .sort((a, b) => Number(b.priority) - Number(a.priority) || Number(a.run_at) - Number(b.run_at))
        .map(toClaimed)
    })

  const claimed = (leaseId: string) =>
    sql<TaskRow>`SELECT ${sql.literal(claimedColumns)} FROM baton_tasks
      WHERE lease_id = ${leaseId} AND state = 'running'`.pipe(
      Effect.map((rows) =>
        [...rows]
          .sort((a, b) => Number(b.priority) - Number(a.priority) || Number(a.run_at) - Number(b.run_at))
          .map(toClaimed)
      )
    )

  const heartbeat = (leases: ReadonlyArray<{ readonly id: string; readonly leaseId: string }>, leaseMs: number) =>
    Effect.gen(function* () {
      if (leases.length === 0) return new Set<string>()
      const now = yield* Clock.currentTimeMillis
      const leaseIds = [...new Set(leases.map((lease) => lease.leaseId))]
      const rows = yield* statements.heartbeat(leaseIds, now, leaseMs)
      return new Set(rows.map((row) => row.id))
    })

  type Completion = {
    readonly id: string
    readonly leaseId: string
    readonly result: unknown
    readonly chordId?: string | undefined
  }

  // In one transaction: the finish path (guarded UPDATE, log rows and NOTIFY, chord counters, dispatch).
  const succeedInTransaction = (completions: ReadonlyArray<Completion>, now: number) =>
    sql.withTransaction(finishPath.succeed(completions, now))

  const complete = (completions: ReadonlyArray<Completion>) =>
    Effect.gen(function* () {
      if (completions.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const done = new Set<string>()
      const { succeedPlain, succeedBodies } = finishPath
      // Postgres: one autocommitted call for chord body tasks (counting, and dispatching the chords it completes);
      // the transaction when a chord it decides needs the general path (it then wrote nothing).
      const succeedRest = (rest: ReadonlyArray<Completion>) =>
        Effect.flatMap(succeedBodies === undefined ? Effect.succeed(undefined) : succeedBodies(rest, now), (rows) =>
          rows === undefined ? succeedInTransaction(rest, now) : Effect.succeed(rows)
        )
      if (succeedPlain !== undefined && completions.every((c) => c.chordId === undefined)) {
        // No chord body task announced (Postgres): one autocommitted statement, which skips any chord body task after
        // all; those (and tasks whose lease was lost) go through the finish of body tasks below.
        for (const row of yield* succeedPlain(completions, now)) done.add(row.id)
        const rest = completions.filter((c) => !done.has(c.id))
        if (rest.length > 0) for (const row of yield* succeedRest(rest)) done.add(row.id)
      } else {
        for (const row of yield* succeedRest(completions)) done.add(row.id)
      }
      return completions.map((c) => done.has(c.id))
    })

  const fail = (id: string, leaseId: string, error: TaskError, disposition: ClaimedDisposition) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const errorText = JSON.stringify(error)
      if (disposition._tag === "Retry") {
        const rows = yield* sql<{ id: string }>`UPDATE baton_tasks SET state = 'pending', lease_id = NULL,
          lease_expires_at = NULL, run_at = ${disposition.runAt}, error = ${errorText}, updated_at = ${now}
          WHERE id = ${id} AND lease_id = ${leaseId} AND state = 'running' RETURNING id`
        return rows.length > 0
      }
      const state = disposition._tag === "Dead" ? "dead" : "failed"
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* finishPath.finish(
            sql`state = ${state}, lease_id = NULL, lease_expires_at = NULL, error = ${errorText},
                finished_at = ${now}, updated_at = ${now}`,
            sql`id = ${id} AND lease_id = ${leaseId} AND state = 'running'`,
            state,
            now
          )
          return rows.length > 0
        })
      )
    })

  const release = (id: string, leaseId: string, error: TaskError) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      // The attempt did not run to an outcome, so it is not counted.
      const rows = yield* sql<{ id: string }>`UPDATE baton_tasks SET state = 'pending', lease_id = NULL,
        lease_expires_at = NULL, attempts = attempts - 1, run_at = ${now}, error = ${JSON.stringify(error)},
        updated_at = ${now} WHERE id = ${id} AND lease_id = ${leaseId} AND state = 'running' RETURNING id`
      return rows.length > 0
    })

  const reclaimExpired = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    return yield* sql.withTransaction(
      Effect.gen(function* () {
        // Back to pending first (touches only task rows), then the dead ones (whose chord bookkeeping takes chord
        // row locks): the same lock order as completions, so the two cannot deadlock.
        const retryError = JSON.stringify({ kind: "lease_expired", message: "lease expired", attempt: 0 })
        const back = yield* sql<{ id: string; queue: string }>`UPDATE baton_tasks SET state = 'pending',
          lease_id = NULL, lease_expires_at = NULL, run_at = ${now}, error = ${retryError}, updated_at = ${now}
          WHERE state = 'running' AND lease_expires_at < ${now} AND attempts < max_attempts RETURNING id, queue`
        if (back.length > 0) yield* notifyQueues(back.map((row) => row.queue))
        const deadError = JSON.stringify({
          kind: "lease_expired",
          message: "lease expired; no attempts left",
          attempt: 0
        })
        const dead = yield* finishPath.finish(
          sql`state = 'dead', lease_id = NULL, lease_expires_at = NULL, error = ${deadError},
              finished_at = ${now}, updated_at = ${now}`,
          sql`state = 'running' AND lease_expires_at < ${now} AND attempts >= max_attempts`,
          "dead",
          now
        )
        return dead.length + back.length
      })
    )
  }).pipe(Effect.withSpan("TaskQueue.reclaimExpired"))

  // -- progress and live workers (migration 0010) ----------------------------------------------------------------

  const appendLog = makeAppendLog(sql, storage.dialect, storage.channelPrefix)
  const progress = (id: string, leaseId: string, value: number, message: string | undefined) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const fraction = Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0
      const text = message === undefined ? null : message.slice(0, maxProgressMessage)
      // The guarded update and its event in one transaction: an event exists only for progress that was stored, and
      // only while the attempt holding this lease is running (a late report after completion is refused).
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* sql<{
            id: string
            name: string
            queue: string
            namespace: string
            tags: string
            chord_id: string | null
            run_id: string | null
          }>`UPDATE baton_tasks SET progress = ${fraction}, progress_message = ${text}, progress_at = ${now}
            WHERE id = ${id} AND lease_id = ${leaseId} AND state = 'running'
            RETURNING id, name, queue, namespace, tags, chord_id, run_id`
          const row = rows[0]
          if (row === undefined) return false
          yield* appendLog([
            {
              kind: "task.progress",
              task_id: row.id,
              task_name: row.name,
              queue: row.queue,
              namespace: row.namespace,
              tags: row.tags,
              outcome: "running",
              chord_id: row.chord_id,
              run_id: row.run_id,
              at: now,
              progress: fraction,
              progress_message: text
            }
          ])
          return true
        })
      )
    }).pipe(Effect.withSpan("TaskQueue.progress", { captureStackTrace: false, attributes: { taskId: id } }))

  const registerWorker = (worker: WorkerRegistration) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const queues = JSON.stringify(worker.queues)
      // Housekeeping: rows of workers gone (no heartbeat) for an hour.
      yield* sql`DELETE FROM baton_workers WHERE expires_at < ${now - 3_600_000}`
      yield* sql`INSERT INTO baton_workers (id, host, pid, queues, concurrency, started_at, last_heartbeat, expires_at,
          tasks_in_hand)
        VALUES (${worker.id}, ${worker.host}, ${worker.pid}, ${queues}, ${worker.concurrency}, ${now}, ${now},
          ${now + worker.ttlMs}, 0)
        ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, queues = excluded.queues,
          concurrency = excluded.concurrency, last_heartbeat = excluded.last_heartbeat,
          expires_at = excluded.expires_at`
    }).pipe(Effect.withSpan("TaskQueue.registerWorker", { attributes: { workerId: worker.id } }))

  const heartbeatWorker = (id: string, tasksInHand: number, ttlMs: number) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const rows = yield* sql<{ id: string }>`UPDATE baton_workers SET last_heartbeat = ${now},
        expires_at = ${now + ttlMs}, tasks_in_hand = ${tasksInHand} WHERE id = ${id} RETURNING id`
      return rows.length > 0
    })

  const deregisterWorker = (id: string) => Effect.asVoid(sql`DELETE FROM baton_workers WHERE id = ${id}`)

  const workers = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    return yield* liveWorkers(sql, now)
  }).pipe(Effect.withSpan("TaskQueue.workers"))

  return TaskQueue.of({
    progress,
    registerWorker,
    heartbeatWorker,
    deregisterWorker,
    workers,
    enqueue,
    enqueueMany,
    enqueueRaw,
    get,
    getMany,
    result,
    cancel,
    retry,
    list,
    queueStats,
    counts,
    claim,
    claimed,
    heartbeat,
    complete,
    fail,
    release,
    reclaimExpired,
    // In-process enqueues, plus NOTIFY from other processes on Postgres (the shared LISTEN connection). Missed
    // notifications (connection down) are covered by the worker's polling.
    wakeups:
      storage.pg === undefined
        ? Stream.fromPubSub(wakeHub)
        : Stream.merge(Stream.fromPubSub(wakeHub), PgListener.payloads(storage.pg, tasksChannel(storage.channelPrefix)))
  })
})

/** Longest progress message stored (longer ones are cut). */
export const maxProgressMessage = 200

type ClaimedDisposition = Parameters<TaskQueue["Type"]["fail"]>[3]

/** The task-queue statements that differ by dialect. */
interface QueueStatements {
  /** Wires in-process wake-ups of tasks enqueued by this process's other transactions (SQLite). */
  readonly listenInProcess: (hub: PubSub.PubSub<string>) => Effect.Effect<void, never, Scope.Scope>
  /** Signals "work on these queues" to other processes (Postgres NOTIFY, delivered at commit). */
  readonly notifyQueues: (queues: Iterable<string>) => Effect.Effect<void, SqlError>
  /** A chunk's insert is one statement, atomic without a transaction of its own (Postgres). */
  readonly insertIsAtomic: boolean
  /** Leases up to `limit` due tasks of `queues`: `UPDATE … SET set WHERE id IN (…) RETURNING claimedColumns`. */
  readonly claim: (
    set: Statement.Fragment,
    queues: ReadonlyArray<string>,
    now: number,
    limit: number,
    skipControlled: boolean
  ) => Effect.Effect<ReadonlyArray<TaskRow>, SqlError>
  /** Extends the leases still held; the ids extended. */
  readonly heartbeat: (
    leaseIds: ReadonlyArray<string>,
    now: number,
    leaseMs: number
  ) => Effect.Effect<ReadonlyArray<{ readonly id: string }>, SqlError>
}

const pgStatements = (sql: SqlClient.SqlClient, channelPrefix: string): QueueStatements => {
  const channel = tasksChannel(channelPrefix)
  // Claims and lease extensions commit without waiting for the WAL flush (Postgres `synchronous_commit = off`
  // for that one statement's transaction). Losing one in a server crash is harmless: the task is simply still
  // pending (or its lease shorter), and execution is at-least-once anyway. It never weakens a completion: a
  // completion's synchronous commit flushes the WAL up to itself, including the claim before it. This takes a
  // commit's fsync off the claim path, which is what bounds a worker's claim rate.
  const asyncCommit = sql`set_config('synchronous_commit', 'off', true) IS NOT NULL`
  // Queues with a setting (baton_queues has a row only for those) are claimed by `claimLimited`; usually empty.
  const notControlled = sql` AND queue NOT IN (SELECT queue FROM baton_queues)`
  const empty = sql``
  return {
    listenInProcess: () => Effect.void,
    notifyQueues: (queues) =>
      Effect.forEach(new Set(queues), (queue) => sql`SELECT pg_notify(${channel}, ${queue})`, { discard: true }),
    insertIsAtomic: true,
    claim: (set, queues, now, limit, skipControlled) =>
      Prepared.run(
        sql,
        sql<TaskRow>`UPDATE baton_tasks SET ${set} WHERE id IN (
          SELECT id FROM baton_tasks WHERE state = 'pending' AND queue IN ${sql.in(queues)}
            AND run_at <= ${now}${skipControlled ? notControlled : empty}
          ORDER BY priority DESC, run_at LIMIT ${limit} FOR UPDATE SKIP LOCKED
        ) AND ${asyncCommit} RETURNING ${sql.literal(claimedColumns)}`
      ),
    // SKIP LOCKED, so a heartbeat never waits on (or deadlocks with) a completion batch holding some of the same
    // rows; a row being completed needs no extension.
    heartbeat: (leaseIds, now, leaseMs) =>
      Prepared.run(
        sql,
        sql<{ id: string }>`UPDATE baton_tasks SET lease_expires_at = ${now + leaseMs},
          updated_at = ${now} WHERE id IN (
            SELECT id FROM baton_tasks WHERE state = 'running' AND lease_id = ANY(${[...leaseIds]}::text[])
            ORDER BY id FOR UPDATE SKIP LOCKED
          ) AND ${asyncCommit} RETURNING id`
      )
  }
}

const notControlled = (sql: SqlClient.SqlClient) => sql` AND queue NOT IN (SELECT queue FROM baton_queues)`

const sqliteStatements = (sql: SqlClient.SqlClient): QueueStatements => ({
  listenInProcess: (hub) =>
    // Tasks enqueued inside this process's transactions by others (a chord callback dispatched by a completion).
    Effect.asVoid(
      Effect.acquireRelease(
        Effect.sync(() =>
          onEnqueued(sql, (queues) => {
            for (const queue of new Set(queues)) hub.unsafeOffer(queue)
          })
        ),
        (unregister) => Effect.sync(unregister)
      )
    ),
  // Other processes on the same file poll.
  notifyQueues: () => Effect.void,
  insertIsAtomic: false,
  // One writer at a time: no row locks to skip.
  claim: (set, queues, now, limit, skipControlled) => sql<TaskRow>`UPDATE baton_tasks SET ${set} WHERE id IN (
      SELECT id FROM baton_tasks WHERE state = 'pending' AND queue IN ${sql.in(queues)}
        AND run_at <= ${now}${skipControlled ? notControlled(sql) : sql``}
      ORDER BY priority DESC, run_at LIMIT ${limit}
    ) RETURNING ${sql.literal(claimedColumns)}`,
  heartbeat: (leaseIds, now, leaseMs) => sql<{ id: string }>`UPDATE baton_tasks SET lease_expires_at = ${now + leaseMs},
      updated_at = ${now} WHERE state = 'running' AND lease_id IN ${sql.in(leaseIds)} AND 1 = 1
      RETURNING id`
})
