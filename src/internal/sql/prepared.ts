/**
 * Hot autocommitted statements on Postgres as NAMED prepared statements, sent straight to the storage's `pg` pool.
 *
 * Effect's Postgres client sends every statement unnamed: Postgres parses and plans it on every call (the claim:
 * parse 0.18 + bind 0.23 ms; the completion: 0.21 + 0.29 ms, idle server), and the client stack adds ~55 µs of Node
 * CPU per statement (`scratchpad/sql-overhead.ts`). A named statement is parsed once per connection and, after five
 * custom plans, runs on Postgres' cached generic plan when that is no costlier.
 *
 * `run(sql, statement)` takes the same `Statement` the caller would have run (built with the same `sql` tag, so the
 * text and parameters are exactly what `@effect/sql` would send) and:
 * - runs it the ordinary way inside a transaction (it must see and join the transaction's connection), when the
 *   storage's pool is not known (a client not built by `Storage.layerPg`), and once `maxNames` distinct texts have
 *   been named in this process (statements whose text varies without bound are never named);
 * - otherwise names it after its text (one name per distinct text, the same on every connection) and runs it on a
 *   pooled connection. Interrupting it cancels the statement on the server (`pg_cancel_backend`), as Effect's
 *   Postgres client does.
 * Errors are the same `SqlError`. These statements get no `sql.execute` span.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"

/** What this module uses of a `pg` client checked out of the pool (no `pg` types in the declarations shipped). */
interface PooledClient {
  readonly processID?: number | null
  query(
    config: { readonly name: string; readonly text: string; readonly values: Array<unknown> },
    callback: (error: Error | null | undefined, result: { readonly rows: Array<unknown> }) => void
  ): void
  on(event: "error", listener: (error: Error) => void): unknown
  off(event: "error", listener: (error: Error) => void): unknown
}

/** What this module uses of a `pg` pool. */
export interface PoolLike {
  connect(
    callback: (
      error: Error | null | undefined,
      client: PooledClient | undefined,
      release: (error?: Error | boolean) => void
    ) => void
  ): void
  query(text: string, values: Array<unknown>): Promise<unknown>
}

const pools = new WeakMap<SqlClient.SqlClient, PoolLike>()

/** Records the `pg` pool behind a client built by `Storage.layerPg`. */
export const registerPool = (sql: SqlClient.SqlClient, pool: PoolLike): void => {
  pools.set(sql, pool)
}

const names = new Map<string, string>()
const maxNames = 256

const nameOf = (text: string): string | undefined => {
  const known = names.get(text)
  if (known !== undefined || names.size >= maxNames) return known
  const name = `baton_${names.size}`
  names.set(text, name)
  return name
}

const execute = <A>(pool: PoolLike, name: string, text: string, values: ReadonlyArray<unknown>) =>
  Effect.async<ReadonlyArray<A>, SqlError>((resume) => {
    let client: PooledClient | undefined
    let settled = false
    const finish = (effect: Effect.Effect<ReadonlyArray<A>, SqlError>) => {
      if (settled) return
      settled = true
      resume(effect)
    }
    pool.connect((error, connected, release) => {
      if (error !== undefined && error !== null) {
        finish(Effect.fail(new SqlError({ cause: error, message: "Failed to acquire connection" })))
        return
      }
      if (connected === undefined) {
        release()
        finish(Effect.fail(new SqlError({ message: "Failed to acquire connection" })))
        return
      }
      if (settled) {
        release()
        return
      }
      client = connected
      let released = false
      // A connection error while checked out (a killed backend): the client leaves the pool for good.
      const free = (cause?: Error) => {
        if (released) return
        released = true
        connected.off("error", onError)
        release(cause)
      }
      const onError = (cause: Error) => {
        free(cause)
        finish(Effect.fail(new SqlError({ cause, message: "Connection error" })))
      }
      connected.on("error", onError)
      connected.query({ name, text, values: values as Array<unknown> }, (queryError, result) => {
        free()
        finish(
          queryError === undefined || queryError === null
            ? Effect.succeed(result.rows as ReadonlyArray<A>)
            : Effect.fail(new SqlError({ cause: queryError, message: "Failed to execute statement" }))
        )
      })
    })
    return Effect.suspend(() => {
      if (settled) return Effect.void
      settled = true
      const processId = client?.processID
      if (processId === undefined || processId === null) return Effect.void
      // The statement is on the server: cancel it there (its connection goes back to the pool when it ends).
      return Effect.promise(() =>
        pool.query("SELECT pg_cancel_backend($1)", [processId]).then(
          () => undefined,
          () => undefined
        )
      )
    })
  })

/** Runs `statement` as a named prepared statement when it can (see above), else the ordinary way. */
export const run = <A extends object>(
  sql: SqlClient.SqlClient,
  statement: Statement.Statement<A>
): Effect.Effect<ReadonlyArray<A>, SqlError> => {
  const pool = pools.get(sql)
  if (pool === undefined) return statement
  return Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) => {
    if (transaction._tag === "Some") return statement
    const [text, params] = statement.compile()
    const name = nameOf(text)
    return name === undefined ? statement : execute<A>(pool, name, text, params)
  })
}
