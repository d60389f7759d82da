/**
 * The chaos suite's tasks. `baton worker --tasks test/chaos/tasks.ts` runs them (besides the workflow's), and the
 * producers enqueue them as chords:
 * - `chaos.body`: squares `n`, after `slowMs` (slow bodies outlive several heartbeats); `fail: true` fails every
 *   attempt with a typed error, so the task ends dead and its chord fails (the onError path);
 * - `chaos.callback`: the chord callback; sums the results, and records that it ran (`chaos_exec`);
 * - `chaos.on-error`: the chord's error callback; records that it ran, with the failing body's index.
 * The `chaos_exec` rows are written by the handlers themselves, so "the callback ran" is checked apart from the task
 * row that says it succeeded. The runner creates the table before any worker starts.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as ChordRegistry from "../../src/ChordRegistry.js"
import * as Task from "../../src/Task.js"

/** The failure a `fail: true` body raises on every attempt. */
export class ChaosBoom extends Schema.TaggedError<ChaosBoom>()("ChaosBoom", {
  chord: Schema.String,
  index: Schema.Number
}) {}

const record = (kind: string, chord: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const context = yield* Task.TaskContext
    yield* sql`INSERT INTO chaos_exec (kind, chord, task_id, attempt, pid, at)
      VALUES (${kind}, ${chord}, ${context.taskId}, ${context.attempt}, ${process.pid}, ${Date.now()})`
  }).pipe(Effect.orDie)

/** Body task. */
export const Body = Task.make("chaos.body", {
  payload: Schema.Struct({
    chord: Schema.String,
    index: Schema.Number,
    n: Schema.Number,
    slowMs: Schema.Number,
    fail: Schema.Boolean
  }),
  success: Schema.Number,
  failure: ChaosBoom,
  // A lease that expires because the worker was killed counts as an attempt (that is what stops a task that kills
  // every worker that runs it). Workers die every few hundred ms here: a slow body can lose many attempts that way.
  maxAttempts: 25,
  backoff: { base: "50 millis", factor: 2, max: "1 second" },
  handler: ({ chord, fail, index, n, slowMs }) =>
    Effect.gen(function* () {
      if (slowMs > 0) yield* Effect.sleep(slowMs)
      if (fail) return yield* new ChaosBoom({ chord, index })
      return n * n
    })
})

/** Chord callback: the sum of the squares, after recording that it ran. */
export const Callback = Task.make("chaos.callback", {
  payload: ChordRegistry.callbackPayload(Schema.Number, { chord: Schema.String }),
  success: Schema.Struct({ chord: Schema.String, sum: Schema.Number, count: Schema.Number }),
  // Many attempts: an attempt can fail while the database restarts.
  maxAttempts: 25,
  backoff: { base: "100 millis", factor: 2, max: "2 seconds" },
  handler: ({ chord, results }) =>
    Effect.as(record("callback", chord), {
      chord,
      sum: results.reduce((a, b) => a + b, 0),
      count: results.length
    })
})

/** Chord error callback: records that it ran and which body failed. */
export const OnError = Task.make("chaos.on-error", {
  payload: ChordRegistry.errorPayload({ chord: Schema.String }),
  success: Schema.Struct({ chord: Schema.String, index: Schema.Number, reason: Schema.String }),
  maxAttempts: 25,
  backoff: { base: "100 millis", factor: 2, max: "2 seconds" },
  handler: ({ chord, failure }) =>
    Effect.as(record("on-error", chord), { chord, index: failure.index ?? -1, reason: failure.reason })
})

/** Every chaos task (what `baton worker --tasks` picks up). */
export const tasks = [Body, Callback, OnError] as const
