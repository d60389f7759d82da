/**
 * Probe (issue 14): per-statement cost of the client stack — raw `pg` (Client, Pool) against `@effect/sql-pg`, the same
 * one-row statement in sequence. Usage: npx tsx scratchpad/sql-overhead.ts [n=3000]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import pg from "pg"

const n = Number(process.argv[2] ?? 3000)
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const text = "SELECT $1::int + 1 AS x"

const main = async () => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const pool = new pg.Pool({ connectionString: url, max: 4 })
  const time = async (label: string, f: (i: number) => Promise<unknown>) => {
    for (let i = 0; i < 200; i++) await f(i)
    const t0 = performance.now()
    const c0 = process.cpuUsage()
    for (let i = 0; i < n; i++) await f(i)
    const ms = performance.now() - t0
    const cpu = process.cpuUsage(c0)
    console.log(
      `${label.padEnd(28)} ${((ms / n) * 1000).toFixed(0).padStart(5)} us/stmt wall, ${(((cpu.user + cpu.system) / n)).toFixed(0).padStart(4)} us/stmt node CPU`
    )
  }
  const layer = PgClient.layer({ url: Redacted.make(url), maxConnections: 4 })
  await Effect.runPromise(
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const runtime = yield* Effect.runtime<never>()
      const run = <A>(e: Effect.Effect<A, unknown>) => Effect.runPromise(e)
      for (let round = 0; round < 2; round++) {
        yield* Effect.promise(() => time("pg Client", (i) => client.query(text, [i])))
        yield* Effect.promise(() => time("pg Pool", (i) => pool.query(text, [i])))
        yield* Effect.promise(() => time("@effect/sql-pg (runPromise)", (i) => run(sql`SELECT ${i}::int + 1 AS x`)))
        const t0 = performance.now()
        const c0 = process.cpuUsage()
        for (let i = 0; i < n; i++) yield* sql`SELECT ${i}::int + 1 AS x`
        const ms = performance.now() - t0
        const cpu = process.cpuUsage(c0)
        console.log(
          `${"@effect/sql-pg (in a fiber)".padEnd(28)} ${((ms / n) * 1000).toFixed(0).padStart(5)} us/stmt wall, ${((cpu.user + cpu.system) / n).toFixed(0).padStart(4)} us/stmt node CPU`
        )
        void runtime
      }
    }).pipe(Effect.provide(layer))
  )
  await client.end()
  await pool.end()
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
