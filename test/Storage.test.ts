import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Storage from "../src/Storage.js"
import { pgAvailable, pgUrl, tempSqliteFile } from "./support/backends.js"

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
})
