/**
 * What the chaos run verifies, from the database alone:
 * - every planned chord exists once; its callback (or, for a chord with a body that fails on purpose, its onError
 *   task) was enqueued exactly once — never both, never twice — and ran at least once (its task succeeded, and its
 *   handler wrote a `chaos_exec` row); no chord is still running;
 * - every body result is present: a completed chord has B body tasks, each succeeded with n², and its callback got
 *   them in body order (and summed them); a failed chord's onError names the body that failed on purpose;
 * - every extraction run succeeded with exactly the reference's rows, and its progress never passed its last
 *   completed checkpoint (checked again and again while the run goes on: `progressViolations`).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { chordKey, type Plan } from "./plan.js"
import { readRunRows, type RunRows } from "./reference.js"

export interface Findings {
  readonly chords: number
  readonly callbacks: number
  readonly duplicates: number
  readonly lost: number
  readonly stuck: number
  readonly runs: number
  readonly mismatched: number
  /** One line per violation. */
  readonly violations: ReadonlyArray<string>
  /** Task rows by state (every task of the run's storage). */
  readonly tasks: Readonly<Record<string, number>>
  /** Body task executions beyond one per task (attempts that were retried or ran twice). */
  readonly attempts: number
}

const terminal = new Set(["succeeded", "failed", "dead", "cancelled"])

/** Runs whose progress is ahead of their completed checkpoints or saved batches right now (one statement). */
export const progressAhead = (token: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ id: string; done: number; confirmed: number; saved: number }>`SELECT r.id,
        r.completed_batches AS done,
        (SELECT count(DISTINCT c.batch_index) FROM baton_checkpoints c
          WHERE (c.run_id = r.id OR substr(c.run_id, 1, length(r.id) + 1) = r.id || '#')
            AND c.status = 'completed' AND c.batch_index < r.completed_batches) AS confirmed,
        (SELECT count(*) FROM baton_extract_batches b
          WHERE b.run_id = r.id AND b.batch_index < r.completed_batches) AS saved
      FROM baton_runs r WHERE r.id LIKE ${`${token}-r%`}`
    return rows
      .filter((row) => Number(row.confirmed) < Number(row.done) || Number(row.saved) < Number(row.done))
      .map(
        (row) =>
          `run ${row.id}: progress ${row.done} batches, but ${row.confirmed} completed checkpoints and ${row.saved} saved batches below it`
      )
  })

/** Chords no longer running, and runs succeeded (for progress lines and the drain). */
export const progressCounts = (token: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [chords] = yield* sql<{ total: number; done: number }>`SELECT count(*) AS total,
      count(CASE WHEN state <> 'running' THEN 1 END) AS done
      FROM baton_chords WHERE idempotency_key LIKE ${`chaos:${token}-%`}`
    const [runs] = yield* sql<{ done: number }>`SELECT count(*) AS done FROM baton_runs
      WHERE id LIKE ${`${token}-r%`} AND state = 'succeeded'`
    const [open] = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_tasks
      WHERE state IN ('pending', 'running') AND (chord_id IN (SELECT id FROM baton_chords
        WHERE idempotency_key LIKE ${`chaos:${token}-%`}) OR (name IN ('chaos.callback', 'chaos.on-error')
        AND payload LIKE ${`%"${token}-c%`}))`
    const states = yield* sql<{ state: string; n: number }>`SELECT state, count(*) AS n FROM baton_tasks GROUP BY state`
    return {
      chords: Number(chords?.total ?? 0),
      chordsDone: Number(chords?.done ?? 0),
      runsDone: Number(runs?.done ?? 0),
      openTasks: Number(open?.n ?? 0),
      tasks: Object.fromEntries(states.map((row) => [row.state, Number(row.n)]))
    }
  })

/** The final verdict. */
export const check = (plan: Plan, reference: RunRows, progressViolations: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const token = plan.token
    const violations: Array<string> = []
    let duplicates = 0
    let lost = 0
    let stuck = 0
    let callbacks = 0

    const chordRows = yield* sql<{
      id: string
      idempotency_key: string
      state: string
      callback_task_id: string | null
      error_task_id: string | null
    }>`SELECT id, idempotency_key, state, callback_task_id, error_task_id FROM baton_chords
      WHERE idempotency_key LIKE ${`chaos:${token}-%`}`
    const bodyRows = yield* sql<{
      chord_id: string
      chord_index: number
      state: string
      result: string | null
      attempts: number
    }>`SELECT t.chord_id, t.chord_index, t.state, t.result, t.attempts FROM baton_tasks t
      WHERE t.chord_id IN (SELECT id FROM baton_chords WHERE idempotency_key LIKE ${`chaos:${token}-%`})`
    const dispatchedRows = yield* sql<{
      id: string
      name: string
      state: string
      payload: string
      result: string | null
    }>`SELECT id, name, state, payload, result FROM baton_tasks
      WHERE name IN ('chaos.callback', 'chaos.on-error') AND payload LIKE ${`%"${token}-c%`}`
    const execRows = yield* sql<{ kind: string; chord: string; n: number }>`SELECT kind, chord, count(*) AS n
      FROM chaos_exec WHERE chord LIKE ${`${token}-c%`} GROUP BY kind, chord`
    const states = yield* sql<{ state: string; n: number }>`SELECT state, count(*) AS n FROM baton_tasks GROUP BY state`

    const chordsByKey = new Map<string, Array<(typeof chordRows)[number]>>()
    for (const row of chordRows) {
      const list = chordsByKey.get(row.idempotency_key) ?? []
      list.push(row)
      chordsByKey.set(row.idempotency_key, list)
    }
    const bodiesByChord = new Map<string, Array<(typeof bodyRows)[number]>>()
    let attempts = 0
    for (const row of bodyRows) {
      const list = bodiesByChord.get(row.chord_id) ?? []
      list.push(row)
      bodiesByChord.set(row.chord_id, list)
      attempts += Math.max(0, Number(row.attempts) - 1)
    }
    const dispatchedByChord = new Map<
      string,
      Array<(typeof dispatchedRows)[number] & { parsed: { results?: unknown } }>
    >()
    for (const row of dispatchedRows) {
      const parsed = JSON.parse(row.payload) as { chord?: unknown; results?: unknown }
      if (typeof parsed.chord !== "string") continue
      const list = dispatchedByChord.get(parsed.chord) ?? []
      list.push({ ...row, parsed })
      dispatchedByChord.set(parsed.chord, list)
    }
    const execs = new Map<string, number>()
    for (const row of execRows) execs.set(`${row.kind}:${row.chord}`, Number(row.n))

    for (const planned of plan.chords) {
      const rows = chordsByKey.get(chordKey(planned)) ?? []
      const where = `chord ${planned.key}`
      if (rows.length === 0) {
        lost++
        violations.push(`${where}: never created`)
        continue
      }
      if (rows.length > 1) {
        duplicates += rows.length - 1
        violations.push(`${where}: ${rows.length} chord rows for one idempotency key`)
      }
      const chord = rows[0]!
      if (chord.state === "running") {
        stuck++
        violations.push(`${where}: still running at the end`)
        continue
      }
      const expectFailure = planned.failing >= 0
      const expectedState = expectFailure ? "failed" : "completed"
      const expectedName = expectFailure ? "chaos.on-error" : "chaos.callback"
      if (chord.state !== expectedState) {
        lost++
        violations.push(`${where}: ended ${chord.state}, expected ${expectedState}`)
        continue
      }
      const dispatched = dispatchedByChord.get(planned.key) ?? []
      const right = dispatched.filter((task) => task.name === expectedName)
      const wrong = dispatched.filter((task) => task.name !== expectedName)
      if (wrong.length > 0) {
        duplicates += wrong.length
        violations.push(`${where}: ${wrong.length} ${wrong[0]!.name} task(s) enqueued besides its ${expectedName}`)
      }
      if (right.length > 1) {
        duplicates += right.length - 1
        violations.push(`${where}: ${expectedName} enqueued ${right.length} times`)
      }
      if (right.length === 0) {
        lost++
        violations.push(`${where}: ${chord.state} but no ${expectedName} task was enqueued`)
        continue
      }
      const task = right[0]!
      const linked = expectFailure ? chord.error_task_id : chord.callback_task_id
      if (linked !== task.id && right.length === 1) {
        lost++
        violations.push(`${where}: the chord row points at ${linked}, the enqueued ${expectedName} is ${task.id}`)
      }
      if (!terminal.has(task.state)) {
        stuck++
        violations.push(`${where}: its ${expectedName} task is still ${task.state}`)
        continue
      }
      const ran = execs.get(`${expectFailure ? "on-error" : "callback"}:${planned.key}`) ?? 0
      if (task.state !== "succeeded" || ran === 0) {
        lost++
        violations.push(`${where}: its ${expectedName} ended ${task.state} (handler ran ${ran} times)`)
        continue
      }
      const bodies = (bodiesByChord.get(chord.id) ?? []).sort((a, b) => Number(a.chord_index) - Number(b.chord_index))
      if (bodies.length !== planned.bodies.length) {
        if (bodies.length > planned.bodies.length) duplicates += bodies.length - planned.bodies.length
        else lost++
        violations.push(`${where}: ${bodies.length} body tasks, planned ${planned.bodies.length}`)
        continue
      }
      if (expectFailure) {
        const index = (JSON.parse(task.result ?? "{}") as { index?: number }).index
        const failing = bodies[planned.failing]!
        if (index !== planned.failing || failing.state !== "dead") {
          lost++
          violations.push(
            `${where}: onError reports body ${index}, planned ${planned.failing} (which ended ${failing.state})`
          )
          continue
        }
      } else {
        const expected = planned.bodies.map((body) => body.n * body.n)
        const results = bodies.map((body) => (body.state === "succeeded" ? JSON.parse(body.result ?? "null") : null))
        const given = task.parsed.results as ReadonlyArray<number>
        const sum = (JSON.parse(task.result ?? "{}") as { sum?: number }).sum
        if (
          JSON.stringify(results) !== JSON.stringify(expected) ||
          JSON.stringify(given) !== JSON.stringify(expected) ||
          sum !== expected.reduce((a, b) => a + b, 0)
        ) {
          lost++
          violations.push(`${where}: body results ${JSON.stringify(results)}, callback got ${JSON.stringify(given)}`)
          continue
        }
      }
      // Counted only when enqueued exactly once (a duplicate was reported above).
      if (right.length === 1 && wrong.length === 0) callbacks++
    }

    let mismatched = 0
    const [runStates] = [
      yield* sql<{ id: string; state: string; error: string | null }>`SELECT id, state, error FROM baton_runs
        WHERE id LIKE ${`${token}-r%`}`
    ]
    const runState = new Map(runStates.map((row) => [row.id, row]))
    const aheadRuns = new Set(progressViolations.map((line) => line.split(":")[0]!.replace(/^run /, "")))
    for (const runId of plan.runs) {
      const state = runState.get(runId)
      if (state === undefined || state.state !== "succeeded") {
        mismatched++
        violations.push(`run ${runId}: ${state === undefined ? "never started" : `${state.state} (${state.error})`}`)
        continue
      }
      const rows = yield* readRunRows(runId)
      const sameDocs = JSON.stringify(rows.documents) === JSON.stringify(reference.documents)
      const sameBatches = JSON.stringify(rows.batches) === JSON.stringify(reference.batches)
      if (!sameDocs || !sameBatches || aheadRuns.has(runId)) {
        mismatched++
        if (!sameDocs) {
          violations.push(
            `run ${runId}: ${rows.documents.length} documents differ from the reference's ${reference.documents.length}`
          )
        }
        if (!sameBatches) violations.push(`run ${runId}: batch summaries differ from the reference's`)
        if (aheadRuns.has(runId)) violations.push(`run ${runId}: progress was seen ahead of its checkpoints`)
      }
    }
    for (const line of progressViolations) violations.push(line)

    return {
      chords: plan.chords.length,
      callbacks,
      duplicates,
      lost,
      stuck,
      runs: plan.runs.length,
      mismatched,
      violations,
      tasks: Object.fromEntries(states.map((row) => [row.state, Number(row.n)])),
      attempts
    } satisfies Findings
  })
