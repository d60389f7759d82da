/**
 * The operator commands end to end: `baton tasks list|show|retry|cancel`, `queues list|pause|resume`, `prune`,
 * `migrate [--sql]`, with their exit codes (0 ok, 1 error, 2 usage) and `--json` shapes. To stay fast, the commands
 * run through the CLI's own `main(argv)` in this process (the same parse, layers and exit-code mapping `bin/baton.js`
 * runs), stdout and stderr captured; one real `baton` process confirms the exit code reaches the shell. The SQL of
 * `migrate --sql` is applied to an empty Postgres schema, which `Storage.layerPg` then finds current.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Baton from "../src/Baton.js"
import { main } from "../src/cli/app.js"
import { QueueControl } from "../src/QueueControl.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { pgAvailable, pgUrl, tempSqliteFile } from "./support/backends.js"
import { startCli } from "./support/cli.js"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

// Runs `baton ...args` in this process: the exit code `main` computes, and what it wrote.
const baton = (...args: ReadonlyArray<string>): Effect.Effect<Ran> =>
  Effect.suspend(() => {
    let stdout = ""
    let stderr = ""
    const out = process.stdout.write
    const err = process.stderr.write
    process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += String(chunk)), true)) as typeof out
    process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += String(chunk)), true)) as typeof err
    return main(["node", "baton", ...args]).pipe(
      Effect.provide(NodeContext.layer),
      Effect.ensuring(
        Effect.sync(() => {
          process.stdout.write = out
          process.stderr.write = err
        })
      ),
      Effect.map((code) => ({ code, stdout, stderr }))
    )
  })

const json = (ran: Ran): any => {
  assert.strictEqual(ran.code, 0, ran.stderr)
  return JSON.parse(ran.stdout)
}

describe("baton operator commands", () => {
  it.live(
    "tasks, queues, prune and migrate on a SQLite file: output, --json shapes and exit codes",
    () =>
      Effect.gen(function* () {
        const db = tempSqliteFile()
        // Fixtures: three "send" tasks on "mail" (one dead, one succeeded, one pending) and one on "other".
        const fixture = yield* Effect.gen(function* () {
          const queue = yield* TaskQueue
          const ids = yield* queue.enqueueRaw([
            { name: "send", payload: { to: "a" }, queue: "mail" },
            { name: "send", payload: { to: "b" }, queue: "mail" },
            { name: "send", payload: { to: "c" }, queue: "mail" },
            { name: "sync", payload: null, queue: "other" }
          ])
          const held = yield* queue.claim({ queues: ["mail"], limit: 2, leaseMs: 60_000, workerId: "w" })
          const [dead, done] = held
          yield* queue.fail(dead!.id, dead!.leaseId, { kind: "failure", message: "boom", attempt: 1 }, { _tag: "Dead" })
          yield* queue.complete([{ id: done!.id, leaseId: done!.leaseId, result: "ok" }])
          return { dead: dead!.id, done: done!.id, pending: ids.find((id) => id !== dead!.id && id !== done!.id)! }
        }).pipe(Effect.provide(Baton.layerSqlite({ filename: db })))
        const opts = ["--db", db]

        const dead = json(yield* baton("tasks", "list", "--state", "dead", "--json", ...opts))
        assert.strictEqual(dead.total, 1)
        assert.deepStrictEqual(Object.keys(dead.items[0]).sort(), [
          "attempts",
          "chordId",
          "createdAt",
          "error",
          "finishedAt",
          "id",
          "maxAttempts",
          "name",
          "queue",
          "runId",
          "state",
          "updatedAt"
        ])
        assert.strictEqual(dead.items[0].id, fixture.dead)
        assert.strictEqual(dead.items[0].error.message, "boom")
        const page = json(
          yield* baton("tasks", "list", "--queue", "mail", "--name", "send", "--limit", "1", "--json", ...opts)
        )
        assert.strictEqual(page.total, 3)
        assert.strictEqual(page.items.length, 1)
        const text = yield* baton("tasks", "list", ...opts)
        assert.strictEqual(text.code, 0)
        assert.include(text.stdout, "4 of 4")

        const shown = json(yield* baton("tasks", "show", fixture.done, "--json", ...opts))
        assert.strictEqual(shown.state, "succeeded")
        assert.strictEqual(shown.result, "ok")
        assert.strictEqual(shown.queue, "mail")
        assert.isString(shown.finishedAt)

        assert.deepStrictEqual(json(yield* baton("tasks", "retry", fixture.dead, "--json", ...opts)), {
          id: fixture.dead,
          retried: true
        })
        const again = yield* baton("tasks", "retry", fixture.dead, ...opts)
        assert.strictEqual(again.code, 1)
        assert.match(again.stderr, /^baton: task .* is pending: only a dead or failed task/)
        assert.deepStrictEqual(json(yield* baton("tasks", "cancel", fixture.pending, "--json", ...opts)), {
          id: fixture.pending,
          cancelled: true
        })
        assert.strictEqual((yield* baton("tasks", "cancel", fixture.pending, ...opts)).code, 1)
        const missing = yield* baton("tasks", "show", "nope", ...opts)
        assert.strictEqual(missing.code, 1)
        assert.strictEqual(missing.stderr, "baton: no task with id nope\n")

        assert.deepStrictEqual(json(yield* baton("queues", "pause", "mail", "--json", ...opts)), {
          queue: "mail",
          paused: true
        })
        const queues = json(yield* baton("queues", "list", "--json", ...opts))
        assert.deepStrictEqual(
          queues.map((q: any) => [q.queue, q.paused, q.counts.pending]),
          [
            ["mail", true, 1],
            ["other", false, 1]
          ]
        )
        assert.deepStrictEqual(Object.keys(queues[0]).sort(), [
          "concurrencyLimit",
          "counts",
          "oldestWaiting",
          "paused",
          "queue",
          "rateLimit"
        ])
        assert.strictEqual((yield* baton("queues", "resume", "mail", ...opts)).stdout, "queue mail resumed\n")
        const settings = yield* Effect.flatMap(QueueControl, (control) => control.list).pipe(
          Effect.provide(Baton.layerSqlite({ filename: db }))
        )
        assert.deepStrictEqual(settings, [])

        const pruned = json(yield* baton("prune", "--json", ...opts))
        assert.deepStrictEqual(Object.keys(pruned).sort(), ["chords", "completions", "runs", "tasks"])
        assert.deepStrictEqual(Object.keys(pruned.tasks).sort(), ["cancelled", "dead", "failed", "succeeded"])
        const migrated = json(yield* baton("migrate", "--json", ...opts))
        assert.strictEqual(migrated.dialect, "sqlite")
        assert.strictEqual(migrated.current, Storage.migrationNames("sqlite").at(-1))

        // Usage errors: exit 2.
        assert.strictEqual((yield* baton("tasks", "list", "--state", "bogus", ...opts)).code, 2)
        assert.strictEqual((yield* baton("tasks", "frob", ...opts)).code, 2)
        assert.strictEqual((yield* baton("queues", "pause", ...opts)).code, 2)
      }),
    120_000
  )

  it.live.skipIf(!pgAvailable())("migrate --sql prints SQL that makes an empty Postgres schema current", () =>
    Effect.gen(function* () {
      const printed = yield* baton("migrate", "--sql")
      assert.strictEqual(printed.code, 0)
      assert.include(printed.stdout, "CREATE TABLE baton_queues")
      assert.include(printed.stdout, "INSERT INTO baton_migrations (migration_id, name) VALUES (9, 'ops');")
      const schema = `bt_sql_${process.pid}_${Date.now().toString(36)}`
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`CREATE SCHEMA ${schema}; SET search_path TO ${schema};\n${printed.stdout}`)
      }).pipe(Effect.provide(Storage.layerPg({ url: pgUrl(), schema: `${schema}_x`, maxConnections: 1 })))
      // Storage finds every migration recorded (it applies none) and the services work on the tables.
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const recorded = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM baton_migrations`
        assert.strictEqual(recorded[0]!.n, Storage.migrationNames("pg").length)
        yield* (yield* QueueControl).pause("q")
        yield* (yield* TaskQueue).enqueueRaw([{ name: "t", payload: 1, queue: "q" }])
        yield* sql`DROP SCHEMA ${sql(schema)} CASCADE`
        yield* sql`DROP SCHEMA ${sql(`${schema}_x`)} CASCADE`
      }).pipe(Effect.provide(Layer.orDie(Baton.layerPg({ url: pgUrl(), schema, maxConnections: 2 }))))
    })
  )

  it("a real baton process exits with the code: 1 for a runtime error, one line on stderr", async () => {
    const result = await startCli(["tasks", "show", "nope", "--db", tempSqliteFile()]).done
    assert.strictEqual(result.code, 1)
    assert.strictEqual(result.stderr, "baton: no task with id nope\n")
  }, 60_000)
})
