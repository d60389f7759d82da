/**
 * Baton's runtime works with only the privileges docs/reliability.md lists: the owner migrates a schema, then
 * docs/pg-restricted-role.sql (run through psql, exactly as documented) creates `baton_app` — LOGIN, no superuser,
 * no CREATEDB, no CREATEROLE, owning nothing — and grants it USAGE on the schema, SELECT/INSERT/UPDATE/DELETE on the
 * tables and USAGE/SELECT on the sequences. As that role: enqueue, claim, complete, a chord, a checkpoint and a
 * completion stream over LISTEN all work, and DDL is refused.
 *
 * The owner's steps run as BATON_TEST_ADMIN_PG_URL when set (npm run test:restricted-role sets it: there the suite's
 * own URL is the restricted role), else as the suite's URL. Skipped when Postgres is unreachable (globalSetup says so
 * loudly, or fails under BATON_REQUIRE_PG=1). When that role cannot create roles the file fails under
 * BATON_REQUIRE_PG=1 and is otherwise skipped with the same loud notice.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import pg from "pg"
import * as Baton from "../src/Baton.js"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { CompletionBackend } from "../src/CompletionBackend.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const role = "baton_app"
const script = path.resolve(import.meta.dirname, "../docs/pg-restricted-role.sql")

const Square = Task.make("role-square", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) => Effect.succeed(n * n)
})

const Total = Task.make("role-total", {
  payload: ChordRegistry.callbackPayload(Schema.Number),
  success: Schema.Number,
  handler: ({ results }) => Effect.succeed(results.reduce((a, b) => a + b, 0))
})

const canCreateRoles = async (url: string): Promise<boolean> => {
  const client = new pg.Client({ connectionString: url })
  try {
    await client.connect()
    const { rows } = await client.query<{ ok: boolean }>(
      "SELECT rolsuper OR rolcreaterole AS ok FROM pg_roles WHERE rolname = current_user"
    )
    return rows[0]?.ok === true
  } catch {
    return false
  } finally {
    await client.end().catch(() => undefined)
  }
}

const runScript = (url: string, schema: string) => {
  const args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", `schema=${schema}`, "-v", `role=${role}`, "-f", script, url]
  try {
    execFileSync("psql", args, { stdio: "pipe" })
  } catch {
    // Two test processes creating the role at the same moment: the loser's CREATE ROLE fails; the role exists now.
    execFileSync("psql", args, { stdio: "pipe" })
  }
}

const adminUrl = process.env.BATON_TEST_ADMIN_PG_URL ?? Backends.pgUrl()
const admin = Backends.pgAvailable() && (await canCreateRoles(adminUrl))
const cannotCreateRoles = Backends.pgAvailable() && !admin
const required = process.env.BATON_REQUIRE_PG === "1"
const notice = `the role of ${new URL(adminUrl).username}@${new URL(adminUrl).host} cannot create roles (set BATON_TEST_ADMIN_PG_URL to one that can)`
if (cannotCreateRoles && !required) {
  const bar = "!".repeat(78)
  console.warn(
    `\n${bar}\n!! test/RestrictedRole.test.ts: ${notice}.\n!! THE RESTRICTED-ROLE TEST IS SKIPPED.\n${bar}\n`
  )
}

describe.runIf(cannotCreateRoles && required)("the restricted runtime role (BATON_REQUIRE_PG=1)", () => {
  it("needs a role that can create roles", () => {
    assert.fail(`BATON_REQUIRE_PG=1 but ${notice}`)
  })
})

describe.runIf(admin)("the restricted runtime role (baton_app)", () => {
  it.live("enqueue, claim, complete, chord, checkpoint and LISTEN work as baton_app; DDL is refused", () =>
    Effect.gen(function* () {
      const schema = `bt_${process.pid}_${Date.now().toString(36)}_role`
      // 1. The owner migrates the schema (building the storage layer does that), then releases it.
      yield* Effect.scoped(Layer.build(Storage.layerPg({ url: adminUrl, schema, maxConnections: 2 })))
      // 2. The documented grants, through psql.
      runScript(adminUrl, schema)
      const appUrl = new URL(adminUrl)
      appUrl.username = role
      appUrl.password = ""
      // 3. Everything below runs as baton_app.
      const program = Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const who = yield* sql<{ user: string; superuser: string }>`SELECT current_user AS user,
          current_setting('is_superuser') AS superuser`
        assert.strictEqual(who[0]!.user, role)
        assert.strictEqual(who[0]!.superuser, "off")
        const queue = yield* TaskQueue
        const completions = yield* CompletionBackend
        const chords = yield* ChordRegistry.ChordRegistry
        const checkpoints = yield* CheckpointCoordinator
        // A live subscription first: on Postgres it returns once LISTEN is confirmed.
        const stream = yield* completions.subscribe({ filter: { namespace: "role", kinds: ["task"] } })
        const listeners = yield* sql<{ n: number }>`SELECT count(*) AS n FROM pg_stat_activity
          WHERE usename = ${role} AND application_name LIKE '%-listener'`
        assert.isAbove(Number(listeners[0]!.n), 0, "a LISTEN connection of baton_app")
        const ids = yield* Effect.forEach([1, 2, 3], (n) => queue.enqueue(Square, { n }, { namespace: "role" }))
        yield* Worker.run({
          tasks: [Square, Total],
          concurrency: 4,
          pollInterval: { min: "2 millis", max: "20 millis" }
        })
        const events = yield* stream.pipe(Stream.take(3), Stream.runCollect)
        assert.deepStrictEqual(new Set([...events].map((event) => event.taskId)), new Set(ids))
        assert.strictEqual(Option.getOrThrow(yield* queue.result(Square, ids[2]!)), 9)
        const handle = yield* chords.chord({
          body: [1, 2, 3, 4].map((n) => Task.call(Square, { n })),
          callback: ChordRegistry.callback(Total, {})
        })
        const callbackId = yield* handle.await
        yield* Backends.eventually(
          Effect.map(queue.get(callbackId), (info) => info.state === "succeeded"),
          "the chord callback"
        )
        assert.strictEqual(Option.getOrThrow(yield* queue.result(Total, callbackId)), 30)
        const token = yield* checkpoints.createCheckpoint("role-run", 0)
        yield* checkpoints.completeCheckpoint(token, { ok: true })
        assert.deepStrictEqual(yield* checkpoints.awaitCheckpoint(token), { ok: true })
        // Log retention (DELETE + advisory lock) works too.
        yield* completions.prune
        // What the role must not do.
        const ddl = yield* Effect.flip(sql`CREATE TABLE baton_should_not_exist (x int)`)
        assert.match(String((ddl.cause as { message?: string })?.message ?? ddl.message), /permission denied/)
        const drop = yield* Effect.flip(sql`DROP TABLE baton_tasks`)
        assert.match(String((drop.cause as { message?: string })?.message ?? drop.message), /must be owner/)
        const truncate = yield* Effect.flip(sql`TRUNCATE baton_completions`)
        assert.match(String((truncate.cause as { message?: string })?.message ?? truncate.message), /permission denied/)
      })
      yield* program.pipe(
        Effect.scoped,
        Effect.provide(
          Baton.layerWith(Storage.layerPg({ url: appUrl.toString(), schema, applicationName: "baton-role-test" }))
        )
      )
    })
  )
})
