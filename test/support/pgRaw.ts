/**
 * Raw `pg` connections outside Baton's pool, for tests that need a "foreign" committer or an observer (an idle
 * writer, a transaction left open, a look at pg_stat_activity), and a query helper for them.
 */
import * as Effect from "effect/Effect"
import pg from "pg"
import * as Backends from "./backends.js"

/** A scoped raw connection to the test server (its `database`, default the test database; `schema` on the path). */
export const rawClient = (schema?: string, database?: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const url = new URL(Backends.pgUrl())
      if (database !== undefined) url.pathname = `/${database}`
      const client = new pg.Client({
        connectionString: url.toString(),
        ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {})
      })
      client.on("error", () => {})
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )

/** The rows of one query on a raw connection. */
export const query = <R extends pg.QueryResultRow>(
  client: pg.Client,
  text: string,
  values: ReadonlyArray<unknown> = []
) => Effect.promise(() => client.query<R>(text, values as Array<unknown>)).pipe(Effect.map((result) => result.rows))
