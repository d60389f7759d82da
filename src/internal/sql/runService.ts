/**
 * `RunService` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (one code path).
 *
 * `updateProgress` is one guarded `UPDATE`: it moves `completed_batches` only when the row is still `running`, the
 * move is forward, and the number of *completed* checkpoint rows among the batches it skips over equals the number of
 * batches it skips over. Checkpoints only ever move from pending to completed or failed, never back, so a stale read
 * can only refuse a move that would have been allowed, never allow one that must be refused. When the guard refuses,
 * the row is read again to name the reason.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Validate from "../validate.js"
import {
  checkpointScope,
  ProgressRefused,
  type Run,
  RunId,
  RunNotFound,
  RunService,
  type RunState,
  RunStateConflict
} from "../../RunService.js"

interface RunRow {
  readonly id: string
  readonly kind: string
  readonly state: RunState
  readonly completed_batches: number
  readonly total_batches: number
  readonly attempt: number
  readonly generation: number
  readonly error: string | null
  readonly metadata: string
  readonly created_at: number
  readonly updated_at: number
  readonly finished_at: number | null
}

const parseMetadata = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

const scopes = (runId: string, generation: number): ReadonlyArray<string> =>
  Array.from({ length: generation + 1 }, (_, g) => checkpointScope(runId, g))

const toRun = (row: RunRow): Run => ({
  id: RunId.make(row.id),
  kind: row.kind,
  state: row.state,
  completedBatches: Number(row.completed_batches),
  totalBatches: Number(row.total_batches),
  attempt: Number(row.attempt),
  checkpointScope: checkpointScope(row.id, Number(row.generation)),
  checkpointScopes: scopes(row.id, Number(row.generation)),
  error: row.error ?? undefined,
  metadata: parseMetadata(row.metadata),
  createdAt: new Date(Number(row.created_at)),
  updatedAt: new Date(Number(row.updated_at)),
  finishedAt: row.finished_at === null ? undefined : new Date(Number(row.finished_at))
})

/** Builds the service. Requires the `SqlClient` of a storage layer. */
export const make = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  const findRow = (runId: string) =>
    sql<RunRow>`SELECT * FROM baton_runs WHERE id = ${runId}`.pipe(
      Effect.flatMap((rows) =>
        rows[0] === undefined ? Effect.fail(new RunNotFound({ runId })) : Effect.succeed(rows[0])
      )
    )

  const createRun = Effect.fn("RunService.createRun")(function* (options: {
    readonly kind: string
    readonly totalBatches: number
    readonly id?: string | undefined
    readonly metadata?: unknown
  }) {
    if (!Number.isInteger(options.totalBatches) || options.totalBatches < 0) {
      return yield* Effect.dieMessage(`createRun: totalBatches must be a non-negative integer`)
    }
    // Programming errors, hence defects (ExtractionWorkflow checks its users' run ids with a typed error first).
    const problem =
      (options.id === undefined ? undefined : Validate.name("createRun: id", options.id)) ??
      Validate.name("createRun: kind", options.kind)
    if (problem !== undefined) return yield* Effect.die(new RangeError(problem))
    const now = yield* Clock.currentTimeMillis
    const id = options.id ?? crypto.randomUUID()
    const row = {
      id,
      kind: options.kind,
      state: "running",
      completed_batches: 0,
      total_batches: options.totalBatches,
      attempt: 1,
      generation: 0,
      error: null,
      metadata: JSON.stringify(options.metadata ?? null),
      created_at: now,
      updated_at: now,
      finished_at: null
    }
    return yield* sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`INSERT INTO baton_runs ${sql.insert(row)} ON CONFLICT (id) DO NOTHING`
        return toRun(yield* Effect.orDie(findRow(id)))
      })
    )
  })

  const getRun = (runId: string) => Effect.map(findRow(runId), toRun).pipe(Effect.withSpan("RunService.getRun"))

  const listRuns = (options?: {
    readonly states?: ReadonlyArray<RunState> | undefined
    readonly limit?: number | undefined
  }) => {
    const limit = Math.max(1, Math.min(options?.limit ?? 100, 10_000))
    const states = options?.states
    const where = states === undefined ? sql`1 = 1` : states.length === 0 ? sql`1 = 0` : sql`state IN ${sql.in(states)}`
    return sql<RunRow>`SELECT * FROM baton_runs WHERE ${where} ORDER BY created_at DESC, id LIMIT ${limit}`.pipe(
      Effect.map((rows) => rows.map(toRun)),
      Effect.withSpan("RunService.listRuns")
    )
  }

  // The first batch in [from, to) without a completed checkpoint, if any (to name it in the refusal).
  const firstUnconfirmed = (row: RunRow, from: number, to: number) =>
    sql<{ batch_index: number }>`SELECT DISTINCT batch_index FROM baton_checkpoints
      WHERE run_id IN ${sql.in(scopes(row.id, Number(row.generation)))} AND batch_index >= ${from}
        AND batch_index < ${to} AND status = 'completed'`.pipe(
      Effect.map((rows) => {
        const confirmed = new Set(rows.map((row) => Number(row.batch_index)))
        for (let i = from; i < to; i++) if (!confirmed.has(i)) return i
        return undefined
      })
    )

  const updateProgress = Effect.fn("RunService.updateProgress")(function* (
    runId: string,
    completed: number,
    total: number
  ) {
    const refuse = (reason: ProgressRefused["reason"], current: number, detail: string) =>
      new ProgressRefused({ runId, reason, current, requested: completed, detail })
    const before = yield* findRow(runId)
    const current = Number(before.completed_batches)
    if (!Number.isInteger(completed) || !Number.isInteger(total) || completed < 0 || completed > total) {
      return yield* refuse("out-of-range", current, `${completed} of ${total} is not a valid progress`)
    }
    if (before.state !== "running") {
      return yield* refuse("not-running", current, `the run is ${before.state}`)
    }
    if (completed < current) {
      return yield* refuse("backwards", current, `${current} batches are already confirmed`)
    }
    if (completed === current && total === Number(before.total_batches)) return toRun(before)
    const now = yield* Clock.currentTimeMillis
    // The generation is part of the guard: the scopes counted are exactly the row's scopes.
    const generation = Number(before.generation)
    const rows = yield* sql<RunRow>`UPDATE baton_runs SET completed_batches = ${completed},
        total_batches = ${total}, updated_at = ${now}
      WHERE id = ${runId} AND state = 'running' AND generation = ${generation} AND completed_batches <= ${completed}
        AND (SELECT count(DISTINCT c.batch_index) FROM baton_checkpoints c
             WHERE c.run_id IN ${sql.in(scopes(runId, generation))} AND c.status = 'completed'
               AND c.batch_index >= baton_runs.completed_batches AND c.batch_index < ${completed})
            = ${completed} - baton_runs.completed_batches
      RETURNING *`
    if (rows[0] !== undefined) return toRun(rows[0])
    // Refused: name the reason from a fresh read (another driver may have moved it meanwhile).
    const after = yield* findRow(runId)
    const now_ = Number(after.completed_batches)
    if (after.state !== "running") return yield* refuse("not-running", now_, `the run is ${after.state}`)
    if (completed < now_) return yield* refuse("backwards", now_, `${now_} batches are already confirmed`)
    const missing = yield* firstUnconfirmed(after, now_, completed)
    if (missing === undefined && completed === now_) return toRun(after)
    return yield* refuse(
      "unconfirmed-checkpoint",
      now_,
      missing === undefined
        ? `the checkpoints of batches ${now_}..${completed - 1} are not all completed`
        : `the checkpoint of batch ${missing} is not completed`
    )
  })

  const finish = Effect.fn("RunService.finish")(function* (
    runId: string,
    state: Exclude<RunState, "running">,
    error?: string | undefined
  ) {
    const now = yield* Clock.currentTimeMillis
    // A failed run can still be cancelled (given up on rather than resumed).
    const from: ReadonlyArray<RunState> = state === "cancelled" ? ["running", "failed"] : ["running"]
    const rows = yield* sql<RunRow>`UPDATE baton_runs SET state = ${state}, error = ${error ?? null},
        finished_at = ${now}, updated_at = ${now}
      WHERE id = ${runId} AND state IN ${sql.in(from)} RETURNING *`
    if (rows[0] !== undefined) return toRun(rows[0])
    const row = yield* findRow(runId)
    if (row.state === state) return toRun(row)
    return yield* new RunStateConflict({ runId, from: row.state, to: state })
  })

  const reopen = Effect.fn("RunService.reopen")(function* (runId: string) {
    const now = yield* Clock.currentTimeMillis
    // A failed run's failed checkpoint blocks for good, so its next attempt checkpoints under a new scope.
    const rows = yield* sql<RunRow>`UPDATE baton_runs SET state = 'running', error = NULL, finished_at = NULL,
        attempt = attempt + 1, updated_at = ${now},
        generation = CASE WHEN state = 'failed' THEN generation + 1 ELSE generation END
      WHERE id = ${runId} AND state IN ('running', 'failed') RETURNING *`
    if (rows[0] !== undefined) return toRun(rows[0])
    const row = yield* findRow(runId)
    return yield* new RunStateConflict({ runId, from: row.state, to: "running" })
  })

  return RunService.of({ createRun, getRun, listRuns, updateProgress, finish, reopen })
})
