/**
 * The chaos suite, reduced (`npm run chaos` is the full one; docs/reliability.md): real `baton worker` processes,
 * producers and extraction drivers SIGKILLed while they work, on SQLite (several processes on one file) and on
 * Postgres (its own schema; only this run's LISTEN connections terminated; no restart — other test files share the
 * server). Asserts the exit code and the last line's zeros.
 *
 * And the checks themselves can fail: a doctored database (a callback enqueued twice, one never enqueued, a chord
 * left running, a run with a missing document) is reported as such.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as Baton from "../src/Baton.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as Task from "../src/Task.js"
import * as Worker from "../src/Worker.js"
import { check } from "./chaos/checks.js"
import { chordKey, makePlan } from "./chaos/plan.js"
import { readRunRows } from "./chaos/reference.js"
import { Body, Callback, OnError, tasks } from "./chaos/tasks.js"
import { eventually, pgAvailable, pgUrl, tempSqliteFile } from "./support/backends.js"

const root = path.resolve(import.meta.dirname, "..")

const runChaos = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "test/chaos/main.ts"), ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.on("exit", (code) => setImmediate(() => resolve({ code, output })))
  })

const small = [
  "--duration",
  "12",
  "--workers",
  "3",
  "--chords",
  "16",
  "--bodies",
  "4",
  "--producers",
  "2",
  "--runs",
  "1",
  "--docs",
  "12",
  "--batch-size",
  "4",
  "--kill-every",
  "600",
  "--seed",
  "7"
]

const finalLine = /^chaos: chords=16 callbacks=16 duplicates=0 lost=0 stuck=0 runs=1 mismatched=0$/

const assertPassed = (result: { code: number | null; output: string }) => {
  const lines = result.output.trim().split("\n")
  assert.match(lines.at(-1)!, finalLine, result.output)
  assert.strictEqual(result.code, 0, result.output)
  // Faults were injected: one producer of two SIGKILLed right after creating its chords (the others are random).
  assert.match(result.output, /kills {6}workers \d+ \(\d+ started\) · producers 1 of 2 · extraction drivers \d+/)
}

// Each chaos run lasts a fixed time (--duration) on its own storage: the runs overlap.
describe.concurrent("chaos (reduced)", () => {
  it("SQLite: worker, producer and driver processes SIGKILLed on one file; nothing lost, nothing doubled", async () => {
    const result = await runChaos([...small, "--sqlite", tempSqliteFile()])
    assertPassed(result)
  }, 300_000)

  if (pgAvailable()) {
    it("Postgres: the same, plus this run's LISTEN connections terminated (no restart)", async () => {
      const result = await runChaos([
        ...small,
        "--database-url",
        pgUrl(),
        "--no-restart",
        "--listen-kill-every",
        "1000"
      ])
      assertPassed(result)
      assert.match(result.output, /LISTEN connections terminated [1-9]\d* · restarts 0/)
    }, 300_000)
  }

  it.scoped("the checks report a doubled callback, a lost one, a stuck chord and a run that differs", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const registry = yield* ChordRegistry.ChordRegistry
      yield* sql`CREATE TABLE chaos_exec (kind text NOT NULL, chord text NOT NULL, task_id text NOT NULL,
        attempt integer NOT NULL, pid integer NOT NULL, at bigint NOT NULL)`
      // Four chords whose bodies all succeed; chord 2's bodies go to a queue no worker takes (it stays running).
      const planned = makePlan({ token: "t1", seed: 3, chords: 4, bodies: 2, runs: 1, maxSlowMs: 0 })
      const ok = planned.chords.map((chord) => ({
        ...chord,
        failing: -1,
        bodies: chord.bodies.map((body) => ({ ...body, fail: false, slowMs: 0 }))
      }))
      const plan = { ...planned, chords: ok }
      for (const [i, chord] of ok.entries()) {
        yield* registry.chord({
          body: chord.bodies.map((body, index) =>
            Task.call(
              Body,
              { chord: chord.key, index, n: body.n, slowMs: 0, fail: false },
              i === 2 ? { queue: "nobody" } : {}
            )
          ),
          callback: ChordRegistry.callback(Callback, { chord: chord.key }),
          onError: ChordRegistry.onError(OnError, { chord: chord.key }),
          idempotencyKey: chordKey(chord)
        })
      }
      yield* Worker.run({ tasks, concurrency: 4 })
      yield* eventually(
        Effect.map(
          sql<{
            n: number
          }>`SELECT count(*) AS n FROM baton_tasks WHERE name = 'chaos.callback' AND state = 'succeeded'`,
          (rows) => Number(rows[0]?.n) === 3
        ),
        "three callbacks ran"
      )
      // Doctor the database: chord 0's callback enqueued a second time; chord 3's callback task gone.
      yield* sql`INSERT INTO baton_tasks (id, name, queue, namespace, tags, payload, state, priority, attempts,
          max_attempts, run_at, created_at, updated_at)
        SELECT 'dup', name, queue, namespace, tags, payload, state, priority, attempts, max_attempts, run_at,
          created_at, updated_at FROM baton_tasks WHERE name = 'chaos.callback' AND payload LIKE ${`%"${ok[0]!.key}"%`}`
      yield* sql`DELETE FROM baton_tasks WHERE name = 'chaos.callback' AND payload LIKE ${`%"${ok[3]!.key}"%`}`
      const reference = yield* readRunRows("reference-that-does-not-exist")
      const findings = yield* check(plan, { documents: ["x"], batches: [] }, [])
      assert.strictEqual(findings.chords, 4)
      assert.strictEqual(findings.duplicates, 1)
      assert.strictEqual(findings.lost, 1)
      assert.strictEqual(findings.stuck, 1)
      assert.strictEqual(findings.callbacks, 1)
      assert.strictEqual(findings.mismatched, 1) // the run never started
      assert.deepStrictEqual(reference, { documents: [], batches: [] })
      const progress = yield* check(plan, { documents: [], batches: [] }, ["run t1-r0: progress 2 batches, but 1"])
      assert.isTrue(progress.violations.some((line) => line.startsWith("run t1-r0: progress")))
    }).pipe(Effect.provide(Baton.layerMemory))
  )
})
