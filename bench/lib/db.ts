/** Postgres helpers for the runner: one database per system, a polling client, the server's version. */
import pg from "pg"

/** The server every scenario uses (BENCH_PG_URL overrides). */
export const baseUrl = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"

/** The URL of another database on the same server. */
export const urlFor = (database: string): string => {
  const url = new URL(baseUrl)
  url.pathname = `/${database}`
  return url.toString()
}

/**
 * Prefix of every database the benchmarks create (BENCH_DB_PREFIX, default none): lets two checkouts run benchmarks
 * on one server at the same time without truncating each other's tables.
 */
export const databasePrefix = process.env.BENCH_DB_PREFIX ?? ""

/**
 * Creates the database `<BENCH_DB_PREFIX><name>` if it does not exist (each peer gets its own: nothing shared but the
 * server); returns its URL.
 */
export const ensureDatabase = async (name: string): Promise<string> => {
  const database = `${databasePrefix}${name}`
  if (!/^[a-z_][a-z0-9_]*$/.test(database)) throw new Error(`bad database name ${database}`)
  const client = new pg.Client({ connectionString: baseUrl })
  await client.connect()
  try {
    const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [database])
    if (rowCount === 0) {
      try {
        await client.query(`CREATE DATABASE "${database}"`)
      } catch (error) {
        // Another runner created it meanwhile.
        if ((error as { code?: string }).code !== "42P04") throw error
      }
    }
  } finally {
    await client.end()
  }
  return urlFor(database)
}

/** A connected client (caller ends it). */
export const connect = async (url: string): Promise<pg.Client> => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  return client
}

/** "PostgreSQL 15.x" plus the settings that matter for durability. */
export const serverInfo = async (): Promise<string> => {
  const client = await connect(baseUrl)
  try {
    const { rows } = await client.query<{ v: string; f: string; s: string }>(
      "SELECT split_part(version(), ' on ', 1) AS v, current_setting('fsync') AS f, current_setting('synchronous_commit') AS s"
    )
    const row = rows[0]!
    return `${row.v} (fsync=${row.f}, synchronous_commit=${row.s})`
  } finally {
    await client.end()
  }
}

/**
 * Polls `count()` until it returns 0; resolves with the time it did (performance.now()). The count is a scan of the
 * system's job table, several ms of the server's CPU at 20,000 rows, and the server shares two cores with the system
 * measured: polled every 5 ms throughout, the runner took about a third of a core from the drain it timed. So it
 * polls every `intervalMs` (5 ms) only in the last `nearCount` (1,000) jobs, and every 10 × `intervalMs` before:
 * the same resolution at the end, the same rule for every system.
 */
export const pollUntilZero = async (
  client: pg.Client,
  sql: string,
  options: { readonly intervalMs?: number; readonly timeoutMs?: number; readonly nearCount?: number } = {}
): Promise<number> => {
  const interval = options.intervalMs ?? 5
  const nearCount = options.nearCount ?? 1000
  const deadline = performance.now() + (options.timeoutMs ?? 120_000)
  for (;;) {
    const { rows } = await client.query<{ n: string | number }>(sql)
    const remaining = Number(rows[0]?.n ?? 0)
    if (remaining === 0) return performance.now()
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${sql} to reach 0 (at ${rows[0]?.n})`)
    await new Promise((resolve) => setTimeout(resolve, remaining > nearCount ? interval * 10 : interval))
  }
}
