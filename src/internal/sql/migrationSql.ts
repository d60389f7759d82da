/**
 * The Postgres migrations as SQL text, for a DBA who applies schema changes by hand (`baton migrate --sql`).
 *
 * The migrations are Effects (`@effect/sql` statements), so each one is run against a recording `SqlClient` whose
 * connection executes nothing: it records every statement the migration issues, compiled by `@effect/sql-pg`'s own
 * compiler (so the text is exactly what `Storage` would send), with any parameters inlined as literals. Each
 * migration is followed by the row `Migrator` would record in `baton_migrations`, so a database migrated by hand
 * is current for `Storage` too.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import { pgMigrations } from "./migrations/pg.js"

const literal = (value: unknown): string => {
  if (value === null || value === undefined) return "NULL"
  if (typeof value === "number" || typeof value === "bigint") return String(value)
  if (typeof value === "boolean") return value ? "TRUE" : "FALSE"
  return `'${String(typeof value === "object" ? JSON.stringify(value) : value).replace(/'/g, "''")}'`
}

const inline = (text: string, params: ReadonlyArray<unknown>): string =>
  text.replace(/\$(\d+)/g, (whole, n: string) => (Number(n) <= params.length ? literal(params[Number(n) - 1]) : whole))

const dedent = (text: string): string => {
  const lines = text.split("\n")
  const indents = lines
    .slice(1)
    .filter((line) => line.trim() !== "")
    .map((line) => line.match(/^ */)![0].length)
  const cut = indents.length === 0 ? 0 : Math.min(...indents)
  return [lines[0], ...lines.slice(1).map((line) => line.slice(Math.min(cut, line.match(/^ */)![0].length)))]
    .join("\n")
    .trim()
}

/** The names of the Postgres migrations, in order (`0001_tasks`, …). */
export const pgMigrationNames: ReadonlyArray<string> = Object.keys(pgMigrations).sort()

/**
 * Every Postgres migration as one SQL script (one transaction), each section named after its migration. `compiler` is the
 * Postgres client's (`PgClient.makeCompiler()`), passed in because the Postgres driver is an optional peer that
 * `Storage` loads only when asked.
 */
export const pgMigrationScript = (compiler: Statement.Compiler): Effect.Effect<string> =>
  Effect.gen(function* () {
    const recorded: Array<string> = []
    const record = (text: string, params: ReadonlyArray<unknown>) =>
      Effect.sync(() => {
        recorded.push(dedent(inline(text, params)))
        return [] as Array<never>
      })
    const connection: SqlConnection.Connection = {
      execute: record,
      executeRaw: record,
      executeUnprepared: record,
      executeValues: (text, params) => Effect.as(record(text, params), []),
      executeStream: () => Effect.dieMessage("not supported") as never
    }
    const client = yield* SqlClient.make({
      acquirer: Effect.succeed(connection),
      compiler,
      spanAttributes: []
    }).pipe(Effect.provide(Reactivity.layer))
    const sections: Array<string> = []
    for (const name of pgMigrationNames) {
      recorded.length = 0
      yield* Effect.orDie(
        Effect.provideService(pgMigrations[name as keyof typeof pgMigrations], SqlClient.SqlClient, client)
      )
      const id = parseInt(name, 10)
      const label = name.slice(name.indexOf("_") + 1)
      sections.push(
        [
          `-- ${name}`,
          ...recorded.map((statement) => `${statement};`),
          `INSERT INTO baton_migrations (migration_id, name) VALUES (${id}, ${literal(label)});`
        ].join("\n")
      )
    }
    return [
      [
        `-- Baton's PostgreSQL migrations (${pgMigrationNames.length}), as applied by Storage.layerPg.`,
        "-- Run in the target schema (SET search_path). On a database that already has some, apply only the sections",
        "-- after the highest migration_id in baton_migrations.",
        "BEGIN;"
      ].join("\n"),
      `CREATE TABLE IF NOT EXISTS baton_migrations (
  migration_id integer primary key,
  created_at timestamp with time zone not null default now(),
  name text not null
);`,
      ...sections,
      "COMMIT;",
      ""
    ].join("\n\n")
  })
