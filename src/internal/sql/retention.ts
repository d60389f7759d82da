/**
 * The statements of `Retention`: bounded, batched deletes of finished rows.
 *
 * Each batch is one autocommitted `DELETE … WHERE id IN (SELECT … ORDER BY … LIMIT batch)` (on Postgres the inner
 * select takes `FOR UPDATE SKIP LOCKED`, so a pruner never waits on a row a worker holds), whose outer `WHERE`
 * repeats the "finished" condition: a row that changed meanwhile (a dead task retried) is re-checked by the delete
 * itself and kept. A pass deletes batches until one comes back short. Tasks are found through
 * `baton_tasks_finished (state, finished_at) WHERE finished_at IS NOT NULL` (migration 0009).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { CompletionBackend } from "../../CompletionBackend.js"
import { Reconciler } from "../../Reconciler.js"
import { defaults, type Options, type Policy, type PruneReport, Retention, stepName } from "../../Retention.js"
import { checkpointScope } from "../../RunService.js"
import { Storage } from "../../Storage.js"
import { byDialect } from "./dialect.js"

type PrunedState = "succeeded" | "cancelled" | "failed" | "dead"
const prunedStates: ReadonlyArray<PrunedState> = ["succeeded", "cancelled", "failed", "dead"]

/**
 * The exclusive upper bound of the "time" column for rows to delete under `policy`: older than `maxAge`, or not among
 * the newest `maxCount` (`nth(maxCount)`: the time of the row just past them, if any). None: nothing to delete.
 */
const boundOf = (
  policy: Policy,
  now: number,
  nth: (offset: number) => Effect.Effect<number | undefined, SqlError>
): Effect.Effect<Option.Option<number>, SqlError> =>
  Effect.gen(function* () {
    let bound: number | undefined
    if (policy.maxAge !== undefined) bound = now - Duration.toMillis(Duration.decode(policy.maxAge))
    if (policy.maxCount !== undefined) {
      const past = yield* nth(Math.max(0, Math.floor(policy.maxCount)))
      if (past !== undefined) bound = Math.max(bound ?? -Infinity, past + 1)
    }
    return bound === undefined ? Option.none() : Option.some(bound)
  })

/** Builds the service (and registers its Reconciler step when a `Reconciler` is in context, for the scope's life). */
export const make = (options: Options = {}) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const storage = yield* Storage
    const completions = yield* Effect.serviceOption(CompletionBackend)
    const batch = Math.max(1, Math.floor(options.batchSize ?? defaults.batchSize))
    const taskPolicy = (state: PrunedState): Policy => options.tasks?.[state] ?? defaults.tasks[state]
    const chordPolicy: Policy = options.chords ?? defaults.chords
    const runPolicy: Policy = options.runs ?? defaults.runs
    const skipLocked = byDialect(storage.dialect, {
      pg: () => sql` FOR UPDATE SKIP LOCKED`,
      sqlite: () => sql``
    })

    // Deletes batch after batch until one is short; the number deleted.
    const drain = (deleteBatch: Effect.Effect<number, SqlError>) =>
      Effect.gen(function* () {
        let total = 0
        while (true) {
          const n = yield* deleteBatch
          total += n
          if (n < batch) return total
        }
      })

    const nthValue = (query: Statement.Statement<{ readonly t: number | string | null }>) =>
      Effect.map(query, (rows) => (rows[0]?.t == null ? undefined : Number(rows[0].t)))

    const pruneTasks = (state: PrunedState, now: number) =>
      Effect.gen(function* () {
        const bound = yield* boundOf(taskPolicy(state), now, (offset) =>
          nthValue(sql`SELECT finished_at AS t FROM baton_tasks WHERE state = ${state} AND finished_at IS NOT NULL
            ORDER BY finished_at DESC LIMIT 1 OFFSET ${offset}`)
        )
        if (Option.isNone(bound)) return 0
        const finished = sql`state = ${state} AND finished_at IS NOT NULL AND finished_at < ${bound.value}`
        // A body task of a chord still running is kept: its chord may still look at it.
        return yield* drain(
          Effect.map(
            sql<{ id: string }>`DELETE FROM baton_tasks WHERE id IN (
              SELECT id FROM baton_tasks t WHERE ${finished} AND (t.chord_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM baton_chords c WHERE c.id = t.chord_id AND c.state = 'running'))
              ORDER BY finished_at LIMIT ${batch}${skipLocked}
            ) AND ${finished} RETURNING id`,
            (rows) => rows.length
          )
        )
      })

    const chordTime = sql`COALESCE(dispatched_at, last_body_at, created_at)`
    const pruneChords = (now: number) =>
      Effect.gen(function* () {
        const bound = yield* boundOf(chordPolicy, now, (offset) =>
          nthValue(sql`SELECT ${chordTime} AS t FROM baton_chords WHERE state <> 'running' AND body_open = 0
            ORDER BY ${chordTime} DESC LIMIT 1 OFFSET ${offset}`)
        )
        if (Option.isNone(bound)) return 0
        const settled = sql`state <> 'running' AND body_open = 0 AND ${chordTime} < ${bound.value}`
        return yield* drain(
          Effect.map(
            sql<{ id: string }>`DELETE FROM baton_chords WHERE id IN (
              SELECT id FROM baton_chords WHERE ${settled} ORDER BY ${chordTime} LIMIT ${batch}${skipLocked}
            ) AND ${settled} RETURNING id`,
            (rows) => rows.length
          )
        )
      })

    const pruneRuns = (now: number) =>
      Effect.gen(function* () {
        const bound = yield* boundOf(runPolicy, now, (offset) =>
          nthValue(sql`SELECT finished_at AS t FROM baton_runs WHERE state <> 'running' AND finished_at IS NOT NULL
            ORDER BY finished_at DESC LIMIT 1 OFFSET ${offset}`)
        )
        if (Option.isNone(bound)) return 0
        const finished = sql`state <> 'running' AND finished_at IS NOT NULL AND finished_at < ${bound.value}`
        // A run and its checkpoints go in one transaction (a run's checkpoints are bounded by its batches).
        return yield* drain(
          sql.withTransaction(
            Effect.gen(function* () {
              const runs = yield* sql<{ id: string; generation: number }>`DELETE FROM baton_runs WHERE id IN (
                  SELECT id FROM baton_runs WHERE ${finished} ORDER BY finished_at LIMIT ${batch}${skipLocked}
                ) AND ${finished} RETURNING id, generation`
              const scopes = runs.flatMap((run) =>
                Array.from({ length: Number(run.generation) + 1 }, (_, g) => checkpointScope(run.id, g))
              )
              for (let i = 0; i < scopes.length; i += 500) {
                yield* sql`DELETE FROM baton_checkpoints WHERE run_id IN ${sql.in(scopes.slice(i, i + 500))}`
              }
              return runs.length
            })
          )
        )
      })

    const prune: Effect.Effect<PruneReport, SqlError> = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const tasks = { succeeded: 0, cancelled: 0, failed: 0, dead: 0 }
      for (const state of prunedStates) tasks[state] = yield* pruneTasks(state, now)
      const chords = yield* pruneChords(now)
      const runs = yield* pruneRuns(now)
      const log = Option.isSome(completions) ? yield* completions.value.prune : 0
      return { tasks, chords, runs, completions: log }
    }).pipe(Effect.withSpan("Retention.prune"))

    const reconciler = yield* Effect.serviceOption(Reconciler)
    if (Option.isSome(reconciler)) {
      yield* reconciler.value.register({
        name: stepName,
        run: Effect.map(prune, (report) =>
          Object.values(report.tasks).reduce((a, b) => a + b, report.chords + report.runs)
        ),
        interval: options.interval ?? defaults.interval
      })
    }
    return Retention.of({ prune })
  })
