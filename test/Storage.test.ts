import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Migrator from "@effect/sql/Migrator"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { sqliteMigrations } from "../src/internal/sql/migrations/sqlite.js"
import * as Prepared from "../src/internal/sql/prepared.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { pgAvailable, pgUrl, tempSqliteFile } from "./support/backends.js"
import { startNode } from "./support/cli.js"

const buildError = <A, E>(layer: Layer.Layer<A, E>) => Effect.flip(Effect.scoped(Layer.build(layer)))

describe("Storage", () => {
  it.live("a malformed Postgres URL fails at layer build with a clear typed error", () =>
    Effect.gen(function* () {
      const error = yield* buildError(Storage.layerPg({ url: "not a url" }))
      assert.strictEqual(error._tag, "StorageError")
      assert.match(error.message, /malformed Postgres URL/)
      const mysql = yield* buildError(Storage.layerPg({ url: "mysql://root@localhost/db" }))
      assert.match(mysql.message, /protocol "mysql:"/)
    })
  )

  it.live("an unreachable Postgres fails at layer build (no hang) naming host and cause", () =>
    Effect.gen(function* () {
      const error = yield* buildError(
        Storage.layerPg({ url: "postgres://postgres@127.0.0.1:1/test", connectTimeout: "3 seconds" })
      )
      assert.strictEqual(error._tag, "StorageError")
      assert.match(error.message, /cannot connect to Postgres at 127\.0\.0\.1:1\/test/)
      assert.match(error.message, /refused|timed out/)
    })
  )

  it.live("an invalid schema name is refused (never interpolated into SQL)", () =>
    Effect.gen(function* () {
      const error = yield* buildError(
        Storage.layerPg({ url: "postgres://postgres@127.0.0.1:5432/test", schema: "x; drop" })
      )
      assert.match(error.message, /invalid schema name/)
    })
  )

  it.live("layerPgConfig reads DATABASE_URL and reports when it is missing", () =>
    Effect.gen(function* () {
      const error = yield* buildError(Storage.layerPgConfig).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
      )
      assert.strictEqual(error._tag, "StorageError")
      assert.match(error.message, /DATABASE_URL/)
    })
  )

  it.live("an unopenable SQLite path fails with a StorageError naming the file", () =>
    Effect.gen(function* () {
      const error = yield* buildError(Storage.layerSqlite({ filename: "/nonexistent-dir/x/baton.db" }))
      assert.strictEqual(error._tag, "StorageError")
      assert.match(error.message, /nonexistent-dir/)
    })
  )

  it.live("SQLite file: WAL mode, busy timeout, migrations applied once across reopenings", () =>
    Effect.gen(function* () {
      const filename = tempSqliteFile()
      const check = Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const [mode] = yield* sql<{ journal_mode: string }>`PRAGMA journal_mode`
        const [busy] = yield* sql<{ timeout: number }>`PRAGMA busy_timeout`
        const migrations = yield* sql<{ n: number }>`SELECT count(*) AS n FROM baton_migrations`
        return { mode: mode!.journal_mode, busy: Number(busy!.timeout), migrations: Number(migrations[0]!.n) }
      })
      const first = yield* Effect.provide(check, Storage.layerSqlite({ filename, busyTimeout: "2 seconds" }))
      const second = yield* Effect.provide(check, Storage.layerSqlite({ filename }))
      assert.strictEqual(first.mode, "wal")
      assert.strictEqual(first.busy, 2000)
      assert.isAbove(first.migrations, 0)
      assert.strictEqual(second.migrations, first.migrations)
    })
  )

  it.live.skipIf(!pgAvailable())("Postgres: concurrent layer builds on a fresh schema migrate once", () =>
    Effect.gen(function* () {
      const schema = `bt_storage_${process.pid}_${Date.now().toString(36)}`
      const layer = () => Storage.layerPg({ url: pgUrl(), schema, maxConnections: 2 })
      const counts = yield* Effect.forEach(
        [1, 2, 3],
        () =>
          Effect.provide(
            Effect.flatMap(
              SqlClient.SqlClient,
              (sql) => sql<{ n: number }>`SELECT count(*) AS n FROM baton_migrations`
            ),
            layer()
          ),
        { concurrency: "unbounded" }
      )
      const values = counts.map((rows) => Number(rows[0]!.n))
      assert.isAbove(values[0]!, 0)
      assert.isTrue(values.every((n) => n === values[0]))
    })
  )
  // Hot statements go to a pool of their own whose sessions cannot keep a sequential scan in a cached plan; with
  // `preparedStatements: false` they run unnamed on the one pool. Either way a task is enqueued, claimed, completed.
  it.live.skipIf(!pgAvailable())("Postgres: hot statements on their own pool (enable_seqscan off), or none", () =>
    Effect.gen(function* () {
      for (const preparedStatements of [true, false]) {
        const schema = `bt_prep_${process.pid}_${preparedStatements ? "on" : "off"}`
        const storage = Storage.layerPg({ url: pgUrl(), schema, maxConnections: 2, preparedStatements })
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const setting = sql<{ v: string }>`SELECT current_setting('enable_seqscan') AS v`
          assert.strictEqual((yield* setting)[0]!.v, "on")
          assert.strictEqual((yield* Prepared.run(sql, setting))[0]!.v, preparedStatements ? "off" : "on")
          // Inside a transaction a hot statement joins it (it must see the transaction's writes).
          const inTransaction = yield* sql.withTransaction(Prepared.run(sql, setting))
          assert.strictEqual(inTransaction[0]!.v, "on")
          const queue = yield* TaskQueue
          const [id] = yield* queue.enqueueRaw([{ name: "t", payload: 1 }])
          const claimed = yield* queue.claim({ queues: ["default"], limit: 5, leaseMs: 30_000, workerId: "w" })
          assert.deepStrictEqual(
            claimed.map((task) => task.id),
            [id]
          )
          const done = yield* queue.complete([{ id: id!, leaseId: claimed[0]!.leaseId, result: 2 }])
          assert.deepStrictEqual(done, [true])
          assert.strictEqual((yield* queue.get(id!)).state, "succeeded")
          yield* sql`DROP SCHEMA ${sql(schema)} CASCADE`
        }).pipe(Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(storage))))
      }
    })
  )

  // Migration 0006 rebuilds SQLite's task table (to drop a table constraint) and swaps indexes on both dialects: an
  // existing database keeps its tasks, and idempotency keeps holding, across the upgrade.
  const upgradeKeepsTasks = (sql: SqlClient.SqlClient, dialect: "pg" | "sqlite") =>
    Effect.gen(function* () {
      const queue = yield* TaskQueue
      const again = yield* queue.enqueueRaw([
        { name: "t", payload: 2, idempotencyKey: "k1" },
        { name: "t", payload: 3 },
        { name: "t", payload: 4 }
      ])
      assert.strictEqual(again[0], "old-keyed")
      const info = yield* queue.get("old-plain")
      assert.strictEqual(info.state, "pending")
      assert.strictEqual(info.payload, 1)
      const counts = yield* queue.counts
      assert.strictEqual(counts.pending, 4)
      const indexes =
        dialect === "pg"
          ? yield* sql<{ name: string }>`SELECT indexname AS name FROM pg_indexes
              WHERE tablename = 'baton_tasks' AND schemaname = current_schema()`
          : yield* sql<{
              name: string
            }>`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'baton_tasks'
              AND name NOT LIKE 'sqlite_autoindex_%'`
      assert.deepStrictEqual(
        indexes.map((row) => row.name).sort(),
        [
          "baton_tasks_chord",
          "baton_tasks_claim",
          "baton_tasks_finished",
          "baton_tasks_idempotency",
          "baton_tasks_lease"
        ].concat(dialect === "pg" ? ["baton_tasks_pkey"] : [])
      )
    })

  const oldRows = (sql: SqlClient.SqlClient) =>
    sql`INSERT INTO baton_tasks (id, name, queue, namespace, tags, payload, state, max_attempts, run_at, idempotency_key,
        created_at, updated_at)
      VALUES ('old-keyed', 't', 'default', 'default', '[]', '1', 'pending', 3, 0, 'k1', 0, 0),
        ('old-plain', 't', 'default', 'default', '[]', '1', 'pending', 3, 0, NULL, 0, 0)`

  it.live("SQLite: a database at migration 0005 upgrades keeping its tasks and idempotency keys", () =>
    Effect.gen(function* () {
      const filename = tempSqliteFile()
      const before = Object.fromEntries(Object.entries(sqliteMigrations).filter(([name]) => name < "0006"))
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* Migrator.make({})({ loader: Migrator.fromRecord(before), table: Storage.migrationsTable })
        yield* oldRows(sql)
      }).pipe(Effect.provide(SqliteClient.layer({ filename })))
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => upgradeKeepsTasks(sql, "sqlite")).pipe(
        Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerSqlite({ filename }))))
      )
    })
  )

  it.live.skipIf(!pgAvailable())("Postgres: migration 0006 applied to a populated schema keeps tasks and keys", () =>
    Effect.gen(function* () {
      const schema = `bt_upgrade_${process.pid}_${Date.now().toString(36)}`
      const storage = () => Storage.layerPg({ url: pgUrl(), schema, maxConnections: 2 })
      // Put the schema back to its 0005 shape (the old constraint and index), with rows, and forget 0006 and later.
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DROP INDEX baton_tasks_idempotency`
        yield* sql`ALTER TABLE baton_tasks ADD CONSTRAINT baton_tasks_idempotency UNIQUE (namespace, idempotency_key)`
        yield* sql`CREATE INDEX baton_tasks_state ON baton_tasks (state)`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'lean_task_indexes'`
        // And every later migration (the Migrator runs only those after the last one recorded).
        yield* sql`DROP INDEX baton_chords_deadline`
        yield* sql`ALTER TABLE baton_chords DROP COLUMN deadline_at`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'chord_deadline'`
        yield* sql`ALTER TABLE baton_tasks DROP COLUMN trace_context`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'trace_context'`
        yield* sql`DROP TABLE baton_workers`
        yield* sql`ALTER TABLE baton_tasks DROP COLUMN progress, DROP COLUMN progress_message, DROP COLUMN progress_at`
        yield* sql`ALTER TABLE baton_completions DROP COLUMN progress, DROP COLUMN progress_message`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'progress_workers'`
        yield* sql`DROP INDEX baton_tasks_finished`
        yield* sql`DROP TABLE baton_queues`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'ops'`
        yield* sql`DROP INDEX baton_chords_parent`
        yield* sql`ALTER TABLE baton_chords DROP COLUMN parent_id`
        yield* sql`ALTER TABLE baton_chords DROP COLUMN parent_index`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'nested_chords'`
        yield* sql`DROP FUNCTION baton_succeed_bodies`
        yield* sql`DELETE FROM baton_migrations WHERE name = 'succeed_bodies'`
        yield* oldRows(sql)
      }).pipe(Effect.provide(storage()))
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.zipRight(upgradeKeepsTasks(sql, "pg"), sql`DROP SCHEMA ${sql(schema)} CASCADE`)
      ).pipe(Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(storage()))))
    })
  )
})

describe("Storage: processes opening a new SQLite file together", () => {
  // Each process opens the file through the storage layer and reads a Baton table at once. The Migrator answers a
  // process that finds another one migrating "already running"; before the layer waited for the migration to finish,
  // such a process started on a missing schema ("no such table": 1 of 5 rounds of 6 processes failed).
  const script = [
    'import * as Effect from "effect/Effect"',
    'import * as SqlClient from "@effect/sql/SqlClient"',
    'import * as Storage from "./dist/Storage.js"',
    "const program = Effect.gen(function* () {",
    "  const sql = yield* SqlClient.SqlClient",
    "  const rows = yield* sql`SELECT count(*) AS n FROM baton_tasks`",
    '  console.log("tables " + rows[0].n)',
    "})",
    "await Effect.runPromise(program.pipe(Effect.provide(Storage.layerSqlite({ filename: process.argv[1] }))))"
  ].join("\n")

  it("every process starts on the migrated schema (3 rounds of 6 processes on a fresh file)", async () => {
    for (let round = 0; round < 3; round++) {
      const file = tempSqliteFile()
      const runs = Array.from({ length: 6 }, () => startNode(["--input-type=module", "-e", script, file]).done)
      const results = await Promise.all(runs)
      for (const result of results) {
        assert.strictEqual(result.code, 0, result.stderr)
        assert.strictEqual(result.stdout.trim(), "tables 0")
      }
    }
  }, 60_000)
})
