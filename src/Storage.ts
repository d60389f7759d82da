/**
 * Storage: the one `SqlClient` behind every durable Baton service, with Baton's migrations applied.
 *
 * Three backends, two dialects:
 * - `layerPg` / `layerPgConfig`: PostgreSQL (the production backend; many processes on many hosts share one
 *   database). Optionally confined to one schema (`search_path`), which is also how tests isolate themselves.
 * - `layerSqlite`: a SQLite file in WAL mode with a busy timeout, so several processes on one host can share it.
 * - `layerMemory`: SQLite `:memory:` — the same code path as the file backend, private to the process.
 *
 * Guarantees: the layer is built only once the database answered and every migration ran (under an advisory
 * lock on Postgres, so concurrent processes do not race; on SQLite a process that finds another one migrating the
 * file waits for it); a malformed URL, an unreachable server or a failed
 * migration fails the layer with a `StorageError` that names what was wrong, within `connectTimeout`.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Pg from "pg"
import * as MigrationSql from "./internal/sql/migrationSql.js"
import { pgMigrations } from "./internal/sql/migrations/pg.js"
import * as Prepared from "./internal/sql/prepared.js"
import { sqliteMigrations } from "./internal/sql/migrations/sqlite.js"

/** The dialect a storage layer speaks. */
export type Dialect = "pg" | "sqlite"

/** Raised when the storage layer cannot be built: bad configuration, unreachable database, failed migration. */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * `pg` client settings (a subset of `pg.ClientConfig`, declared here so that an app's type-check does not need
 * `@types/pg`).
 */
export interface PgClientConfig {
  readonly connectionString?: string | undefined
  readonly user?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly database?: string | undefined
  readonly connectionTimeoutMillis?: number | undefined
  readonly application_name?: string | undefined
  /** Extra server options, e.g. `-c search_path=...`. */
  readonly options?: string | undefined
  /** `pg` custom type parsers (Baton's parse int8 as numbers). */
  readonly types?: unknown
}

/** Connection settings of the Postgres backend, kept so other services can open dedicated connections. */
export interface PgConnectionInfo {
  /** `pg` client config (connection string, search_path) for a dedicated connection such as LISTEN. */
  readonly clientConfig: PgClientConfig
  /** The schema Baton's tables live in, if confined to one. */
  readonly schema: string | undefined
}

/** Facts about the storage a service may need besides the `SqlClient`. */
export class Storage extends Context.Tag("baton/Storage")<
  Storage,
  {
    /** Which SQL dialect the `SqlClient` speaks. */
    readonly dialect: Dialect
    /** The NOTIFY channel prefix for this database/schema (Postgres only; unique per schema). */
    readonly channelPrefix: string
    /** Postgres connection settings (undefined on SQLite). */
    readonly pg: PgConnectionInfo | undefined
    /** SQLite file name (`:memory:` for the memory backend; undefined on Postgres). */
    readonly filename: string | undefined
  }
>() {}

/** Name of Baton's migrations table. */
export const migrationsTable = "baton_migrations"

/** Options of the Postgres backend. */
export interface PgOptions {
  /** `postgres://user:pass@host:port/db`; defaults to the `DATABASE_URL` environment variable via `layerPgConfig`. */
  readonly url: string | Redacted.Redacted<string>
  /** Confine Baton's tables to this schema (created if missing). 1 to 45 lowercase letters, digits and `_`. */
  readonly schema?: string | undefined
  /** Pool size (default 10). */
  readonly maxConnections?: number | undefined
  /** How long to wait for the server before the layer fails (default 5 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** `application_name` reported to Postgres (default "baton"). */
  readonly applicationName?: string | undefined
  /**
   * Run Baton's hot statements (claim, lease heartbeat, task insert, completions, checkpoint create / complete,
   * completion-stream reads) as named prepared statements on a second pool of up to `maxConnections` connections
   * (default true; docs/operations.md, "Connections"). `false`: every statement unnamed on the one pool — for a
   * connection pooler in transaction mode that does not carry prepared statements across transactions.
   */
  readonly preparedStatements?: boolean | undefined
}

/** Options of the SQLite backend. */
export interface SqliteOptions {
  /** The database file (created if missing), or `:memory:`. */
  readonly filename: string
  /** How long a statement waits for another process's write lock before "database is locked" (default 5 s). */
  readonly busyTimeout?: Duration.DurationInput | undefined
}

// At most 45 characters: NOTIFY channel names carry the schema (`baton_<schema>_completions`), and Postgres refuses a
// channel name over 63 bytes (and truncates a LISTEN identifier to 63, which could make two schemas share a channel).
const schemaName = /^[a-z_][a-z0-9_]{0,44}$/

const INT8_OID = 20

// `pg` returns int8 as strings (a known defect for our purposes: sequence numbers and epoch-millisecond timestamps
// fit comfortably in a double), so Baton's own pool parses them as numbers. xid8 stays a string.
const makePgTypes = (pg: PgModule): Pg.CustomTypesConfig => ({
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary"
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as "text")) as Pg.CustomTypesConfig["getTypeParser"]
})

type PgModule = typeof import("pg")

/**
 * The database drivers are optional peer dependencies, loaded only when their backend is built: an app that uses
 * SQLite never loads `pg`, and a missing driver fails the layer with a `StorageError` naming what to install.
 */
const loadDriver = <A>(load: () => Promise<A>, packages: string, backend: string): Effect.Effect<A, StorageError> =>
  Effect.tryPromise({
    try: load,
    catch: (cause) =>
      new StorageError({
        message: `the ${backend} backend needs ${packages}, which could not be loaded (${
          cause instanceof Error ? cause.message.split("\n")[0] : String(cause)
        }): npm install ${packages}`,
        cause
      })
  })

const loadPg = loadDriver(
  () =>
    Promise.all([import("@effect/sql-pg/PgClient"), import("pg")]).then(([client, pg]) => ({
      PgClient: client,
      pg: ((pg as unknown as { default?: PgModule }).default ?? pg) as PgModule
    })),
  "@effect/sql-pg pg",
  "Postgres"
)

const loadSqlite = loadDriver(() => import("@effect/sql-sqlite-node/SqliteClient"), "@effect/sql-sqlite-node", "SQLite")

/**
 * `@effect/sql`'s `withTransaction` turns a failed COMMIT or ROLLBACK into a defect (`Effect.orDie`). A connection
 * killed in the middle of a transaction (a server restart, `pg_terminate_backend`; SQLite's "database is locked" at
 * COMMIT) then kills whatever ran the transaction — a producer, a workflow driver — instead of failing it with an
 * ordinary `SqlError` that a caller can retry. Baton's clients fail instead: a COMMIT that fails may or may not have
 * committed, which every Baton transaction tolerates (its effects are idempotent or guarded). Found by `npm run chaos`.
 */
const failedEndIsFailure = <C extends SqlClient.SqlClient>(client: C): C => {
  const withTransaction = client.withTransaction
  const patched: SqlClient.SqlClient["withTransaction"] = (effect) =>
    Effect.catchSomeDefect(withTransaction(effect), (defect) =>
      defect instanceof SqlError ? Option.some(Effect.fail(defect)) : Option.none()
    )
  ;(client as { withTransaction: SqlClient.SqlClient["withTransaction"] }).withTransaction = patched
  return client
}

const describeUrl = (url: URL): string => `${url.hostname}:${url.port || "5432"}${url.pathname}`

const parsePgUrl = (raw: string): Effect.Effect<URL, StorageError> =>
  Effect.try({
    try: () => new URL(raw),
    catch: () => new StorageError({ message: "malformed Postgres URL: expected postgres://user@host:port/database" })
  }).pipe(
    Effect.filterOrFail(
      (url) => url.protocol === "postgres:" || url.protocol === "postgresql:",
      (url) =>
        new StorageError({
          message: `malformed Postgres URL: protocol "${url.protocol}" is not postgres:// or postgresql://`
        })
    ),
    Effect.filterOrFail(
      (url) => url.hostname.length > 0 || url.searchParams.has("host"),
      () => new StorageError({ message: "malformed Postgres URL: no host" })
    )
  )

const runMigrations = (dialect: Dialect) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const migrate = Migrator.make({})({
      loader: Migrator.fromRecord(dialect === "pg" ? pgMigrations : sqliteMigrations),
      table: migrationsTable
    })
    if (dialect === "pg") {
      // Already up to date: nothing to take a lock for, and nothing that needs the CREATE privilege, so a runtime
      // role that may only read and write Baton's tables (docs/reliability.md, "Privileges") can open the storage.
      const latest = Math.max(...Object.keys(pgMigrations).map((key) => parseInt(key, 10)))
      const table = yield* sql<{ t: string | null }>`SELECT to_regclass(${migrationsTable})::text AS t`
      if (table[0]?.t !== null && table[0]?.t !== undefined) {
        const applied = yield* sql<{ id: number | null }>`SELECT max(migration_id) AS id FROM ${sql(migrationsTable)}`
        if (applied[0]?.id !== null && applied[0]?.id !== undefined && Number(applied[0].id) >= latest) return
      }
      // Migrator's own "create the migrations table" step races between processes; an advisory transaction lock
      // serialises whole migration runs instead (released at commit).
      // The table is created here (same definition as Migrator's) because Migrator probes for it with a query that
      // fails, which would abort the surrounding transaction.
      yield* sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.baton_migrations'))`
          yield* sql`CREATE TABLE IF NOT EXISTS ${sql(migrationsTable)} (
            migration_id integer primary key,
            created_at timestamp with time zone not null default now(),
            name text not null
          )`
          yield* migrate
        })
      )
    } else {
      // Migrator takes a failed claim of the migration rows (another process is migrating this file: a constraint
      // violation or SQLITE_BUSY) for "already running" and returns at once, so this process would start on a
      // schema that is missing or half made. Run it again until the file is at the latest migration: the other
      // process's run has committed, or (if it died) this one applies the migrations.
      const latest = Math.max(...Object.keys(sqliteMigrations).map((key) => parseInt(key, 10)))
      const applied = Effect.map(
        sql<{ id: number | null }>`SELECT max(migration_id) AS id FROM ${sql(migrationsTable)}`,
        (rows) => Number(rows[0]?.id ?? 0)
      )
      yield* Effect.zipRight(migrate, applied).pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (id) => id >= latest }),
        Effect.timeoutFail({
          duration: "30 seconds",
          onTimeout: () =>
            new Migrator.MigrationError({
              reason: "locked",
              message: "another process's migration of this SQLite file did not finish within 30 s"
            })
        })
      )
    }
  }).pipe(
    Effect.mapError(
      (cause) =>
        new StorageError({
          message: `Baton migrations failed: ${cause._tag === "MigrationError" ? cause.message : String(cause.cause)}`,
          cause
        })
    ),
    Effect.withSpan("Storage.migrate")
  )

const connectionErrorMessage = (where: string, cause: unknown): string => {
  const error = cause as { code?: string; message?: string } | undefined
  const code = error?.code
  if (code === "ECONNREFUSED") return `cannot connect to Postgres at ${where}: connection refused`
  if (code === "ENOTFOUND") return `cannot connect to Postgres at ${where}: host not found`
  if (code === "3D000") return `cannot connect to Postgres at ${where}: database does not exist`
  if (code === "28P01" || code === "28000") return `cannot connect to Postgres at ${where}: authentication failed`
  return `cannot connect to Postgres at ${where}: ${error?.message ?? String(cause)}`
}

const makePg = (options: PgOptions) =>
  Effect.gen(function* () {
    const { PgClient, pg: Pg } = yield* loadPg
    const pgTypes = makePgTypes(Pg)
    const raw = Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url
    const url = yield* parsePgUrl(raw)
    const where = describeUrl(url)
    const schema = options.schema
    if (schema !== undefined && !schemaName.test(schema)) {
      return yield* new StorageError({
        message: `invalid schema name ${JSON.stringify(schema)}: use 1 to 45 lowercase letters, digits and _ (not starting with a digit)`
      })
    }
    const timeout = Duration.decode(options.connectTimeout ?? Duration.seconds(5))
    const clientConfig: Pg.ClientConfig = {
      connectionString: raw,
      connectionTimeoutMillis: Duration.toMillis(timeout),
      application_name: options.applicationName ?? "baton",
      types: pgTypes,
      ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {})
    }
    if (schema !== undefined) {
      // The schema must exist before any pooled connection selects it.
      yield* Effect.acquireUseRelease(
        Effect.sync(() => new Pg.Client({ ...clientConfig, options: undefined })),
        (client) =>
          Effect.tryPromise({
            try: async () => {
              await client.connect()
              // Only create it when missing: CREATE SCHEMA (even IF NOT EXISTS) needs the CREATE privilege on the
              // database, which a runtime role should not have. `schema` matched `schemaName` above: it is safe to
              // quote as an identifier (DDL takes no parameters).
              const exists = await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schema])
              if (exists.rowCount !== null && exists.rowCount > 0) return
              try {
                await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
              } catch (error) {
                // IF NOT EXISTS is not atomic: a concurrent creator can win between the check and the insert.
                const code = (error as { code?: string }).code
                if (code !== "23505" && code !== "42P06") throw error
              }
            },
            catch: (cause) => new StorageError({ message: connectionErrorMessage(where, cause), cause })
          }),
        (client) => Effect.promise(() => client.end().catch(() => undefined))
      ).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new StorageError({ message: `cannot connect to Postgres at ${where}: timed out` })
        })
      )
    }
    const client = yield* PgClient.fromPool({
      acquire: Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const pool = new Pg.Pool({ ...clientConfig, max: options.maxConnections ?? 10 })
            pool.on("error", () => {})
            try {
              await pool.query("SELECT 1")
            } catch (cause) {
              await pool.end().catch(() => undefined)
              throw cause
            }
            return pool
          },
          catch: (cause) => new SqlError({ message: connectionErrorMessage(where, cause), cause })
        }).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new SqlError({ message: `cannot connect to Postgres at ${where}: timed out` })
          })
        ),
        (pool) => Effect.promise(() => pool.end().catch(() => undefined))
      ),
      applicationName: options.applicationName ?? "baton",
      types: pgTypes
    }).pipe(
      Effect.map(failedEndIsFailure),
      Effect.mapError((error) => new StorageError({ message: error.message, cause: error.cause }))
    )
    if (options.preparedStatements !== false) {
      // Hot autocommitted statements run as named prepared statements (`internal/sql/prepared.ts`) on a pool of their
      // own, whose sessions have `enable_seqscan = off`: a named statement's cached generic plan is chosen once (after
      // five custom plans) and kept while its table grows, and a table that was small then (a queue's grows from empty
      // in a second, and may never be analyzed: autovacuum can be off) would keep a sequential scan. These statements
      // all have an index to use; the setting never reaches the application's queries (they use the other pool).
      const statementPool = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const pool = new Pg.Pool({
            ...clientConfig,
            options: `-c enable_seqscan=off${schema !== undefined ? ` -c search_path=${schema}` : ""}`,
            max: options.maxConnections ?? 10
          })
          pool.on("error", () => {})
          return pool
        }),
        (pool) => Effect.promise(() => pool.end().catch(() => undefined))
      )
      Prepared.registerPool(client, statementPool as unknown as Prepared.PoolLike)
    }
    const channelPrefix = `baton_${schema ?? "public"}`
    const storage = Storage.of({
      dialect: "pg",
      channelPrefix,
      pg: { clientConfig, schema },
      filename: undefined
    })
    return Context.make(PgClient.PgClient, client).pipe(
      Context.add(SqlClient.SqlClient, client),
      Context.add(Storage, storage)
    )
  })

const withMigrations = <E, R>(
  layer: Layer.Layer<SqlClient.SqlClient | Storage, E, R>,
  dialect: Dialect
): Layer.Layer<SqlClient.SqlClient | Storage, E | StorageError, R> =>
  Layer.tap(layer, (context) => Effect.provide(runMigrations(dialect), context))

/** Postgres storage from explicit options. */
export const layerPg = (options: PgOptions): Layer.Layer<SqlClient.SqlClient | Storage, StorageError> =>
  withMigrations(Layer.scopedContext(makePg(options)).pipe(Layer.provide(Reactivity.layer)), "pg")

/**
 * Postgres storage from configuration: `DATABASE_URL` (required) and `BATON_PG_SCHEMA` (optional).
 */
export const layerPgConfig: Layer.Layer<SqlClient.SqlClient | Storage, StorageError> = Layer.unwrapEffect(
  Effect.gen(function* () {
    const url = yield* Config.redacted("DATABASE_URL")
    const schema = yield* Config.option(Config.string("BATON_PG_SCHEMA"))
    return layerPg({ url, schema: Option.getOrUndefined(schema) })
  }).pipe(
    Effect.mapError(
      (cause) => new StorageError({ message: `Postgres configuration: ${String(cause).replace(/\n/g, " ")}`, cause })
    )
  )
)

const makeSqlite = (options: SqliteOptions) =>
  Effect.gen(function* () {
    const SqliteClient = yield* loadSqlite
    const client = failedEndIsFailure(yield* SqliteClient.make({ filename: options.filename }))
    const busyMillis = Duration.toMillis(Duration.decode(options.busyTimeout ?? Duration.seconds(5)))
    yield* Effect.mapError(
      Effect.zipRight(
        client.unsafe(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyMillis))}`),
        // WAL + NORMAL: durable across process crashes (the case that matters for a worker); an OS crash may lose
        // the last transactions. Documented in docs/storage.md.
        client.unsafe("PRAGMA synchronous = NORMAL")
      ),
      (cause) =>
        new StorageError({ message: `cannot open SQLite database "${options.filename}": ${cause.message}`, cause })
    )
    const storage = Storage.of({
      dialect: "sqlite",
      channelPrefix: "baton",
      pg: undefined,
      filename: options.filename
    })
    return Context.make(SqliteClient.SqliteClient, client).pipe(
      Context.add(SqlClient.SqlClient, client),
      Context.add(Storage, storage)
    )
  })

/** SQLite file storage (WAL mode, busy timeout), shareable by several processes on one host. */
export const layerSqlite = (options: SqliteOptions): Layer.Layer<SqlClient.SqlClient | Storage, StorageError> =>
  withMigrations(
    Layer.scopedContext(
      makeSqlite(options).pipe(
        Effect.catchAllDefect((defect) =>
          Effect.fail(
            new StorageError({
              message: `cannot open SQLite database "${options.filename}": ${(defect as Error)?.message ?? String(defect)}`,
              cause: defect
            })
          )
        )
      )
    ).pipe(Layer.provide(Reactivity.layer)),
    "sqlite"
  )

/** In-process storage: SQLite `:memory:`, the same code path as the file backend. */
export const layerMemory: Layer.Layer<SqlClient.SqlClient | Storage, StorageError> = Layer.suspend(() =>
  layerSqlite({ filename: ":memory:" })
)

/**
 * The Postgres migrations as one SQL script, for a DBA who applies schema changes by hand (`baton migrate --sql`):
 * each migration's statements exactly as `layerPg` would send them, followed by its `baton_migrations` row.
 */
export const pgMigrationSql: Effect.Effect<string, StorageError> = Effect.flatMap(loadPg, ({ PgClient }) =>
  MigrationSql.pgMigrationScript(PgClient.makeCompiler())
)

/** The names of the migrations of a dialect, in order (`0001_tasks`, …). */
export const migrationNames = (dialect: Dialect): ReadonlyArray<string> =>
  Object.keys(dialect === "pg" ? pgMigrations : sqliteMigrations).sort()
