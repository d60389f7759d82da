/**
 * Probe (issue 7): the database side of a bulk enqueue, one variant after another in each round (plain `pg`).
 * Variants: table shape (indexes) × statement shape (json_populate_recordset vs unnest of arrays) × id order.
 * Usage: npx tsx scratchpad/enqueue-sql-probe.ts [n=20000] [rounds=5]
 */
import pg from "pg"
import { insertColumns, toInsertRow } from "../src/internal/sql/taskRows.js"

const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const schema = "perf_enqueue_sql"
const n = Number(process.argv[2] ?? 20000)
const rounds = Number(process.argv[3] ?? 5)

const table = (name: string) => `CREATE TABLE ${name} (
    id text PRIMARY KEY, name text NOT NULL, queue text NOT NULL, namespace text NOT NULL, tags text NOT NULL,
    payload text NOT NULL, state text NOT NULL, priority integer NOT NULL DEFAULT 0, attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL, timeout_ms integer, backoff text, run_at bigint NOT NULL, lease_id text,
    lease_expires_at bigint, worker_id text, idempotency_key text, result text, error text, chord_id text,
    chord_index integer, run_id text, created_at bigint NOT NULL, updated_at bigint NOT NULL, started_at bigint,
    finished_at bigint)`

const common = (name: string) => [
  `CREATE INDEX ${name}_claim ON ${name} (queue, priority DESC, run_at) WHERE state = 'pending'`,
  `CREATE INDEX ${name}_lease ON ${name} (lease_expires_at) WHERE state = 'running'`,
  `CREATE INDEX ${name}_chord ON ${name} (chord_id, chord_index) WHERE chord_id IS NOT NULL`
]

const setups: Record<string, Array<string>> = {
  current: [
    table("t_current"),
    `ALTER TABLE t_current ADD CONSTRAINT t_current_idem UNIQUE (namespace, idempotency_key)`,
    ...common("t_current"),
    `CREATE INDEX t_current_state ON t_current (state)`
  ],
  lean: [
    table("t_lean"),
    `CREATE UNIQUE INDEX t_lean_idem ON t_lean (namespace, idempotency_key) WHERE idempotency_key IS NOT NULL`,
    ...common("t_lean")
  ]
}

const uuidv7 = (() => {
  let last = 0
  let seq = 0
  return () => {
    const now = Date.now()
    if (now === last) seq++
    else {
      last = now
      seq = 0
    }
    const hex = now.toString(16).padStart(12, "0")
    const rand = crypto.randomUUID().replace(/-/g, "")
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7${(seq & 0xfff).toString(16).padStart(3, "0")}-${rand.slice(16, 20)}-${rand.slice(20)}`
  }
})()

const cols = insertColumns.join(", ")

const main = async () => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await client.query(`CREATE SCHEMA ${schema}`)
  await client.query(`SET search_path = ${schema}`)
  for (const statements of Object.values(setups)) for (const s of statements) await client.query(s)

  const make = (ordered: boolean) => {
    const now = Date.now()
    return Array.from({ length: n }, () => {
      const row = toInsertRow({ name: "noop", payload: {} }, now)
      return ordered ? { ...row, id: uuidv7() } : row
    })
  }
  const json = async (t: string, rows: ReturnType<typeof make>, tail = "ON CONFLICT DO NOTHING RETURNING id") => {
    for (let i = 0; i < rows.length; i += 5000) {
      await client.query(
        `INSERT INTO ${t} (${cols}) SELECT ${cols} FROM json_populate_recordset(NULL::${t}, $1::json)
         ${tail}`,
        [JSON.stringify(rows.slice(i, i + 5000))]
      )
    }
  }
  const unnest = async (t: string, rows: ReturnType<typeof make>) => {
    for (let i = 0; i < rows.length; i += 5000) {
      const slice = rows.slice(i, i + 5000)
      const arrays = insertColumns.map((c) => slice.map((r) => (r as unknown as Record<string, unknown>)[c]))
      const types = insertColumns.map((c) =>
        ["priority", "attempts", "max_attempts", "timeout_ms", "chord_index"].includes(c)
          ? "int[]"
          : ["run_at", "created_at", "updated_at"].includes(c)
            ? "int8[]"
            : "text[]"
      )
      await client.query(
        `INSERT INTO ${t} (${cols}) SELECT * FROM unnest(${types.map((ty, j) => `$${j + 1}::${ty}`).join(", ")})
         ON CONFLICT DO NOTHING RETURNING id`,
        arrays
      )
    }
  }
  const variants: Record<string, () => Promise<void>> = {
    "current json random": () => json("t_current", make(false)),
    "lean json random": () => json("t_lean", make(false)),
    "lean json ordered": () => json("t_lean", make(true)),
    "lean json plain": () => json("t_lean", make(false), "RETURNING id"),
    "lean json plain noret": () => json("t_lean", make(false), ""),
    "current json plain": () => json("t_current", make(false), "RETURNING id"),
    "current json ordered": () => json("t_current", make(true))
  }
  const times: Record<string, Array<number>> = {}
  for (let r = 0; r < rounds; r++) {
    for (const [name, run] of Object.entries(variants)) {
      await client.query(`TRUNCATE t_current, t_lean`)
      await client.query(`VACUUM ANALYZE t_current`)
      await client.query(`VACUUM ANALYZE t_lean`)
      await client.query(`CHECKPOINT`).catch(() => undefined)
      const t0 = performance.now()
      await run()
      ;(times[name] ??= []).push(performance.now() - t0)
    }
  }
  for (const [name, list] of Object.entries(times)) {
    const sorted = [...list].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)]!
    console.log(
      `${name.padEnd(22)} median ${median.toFixed(1)} ms = ${Math.round((n / median) * 1000)} rows/s (${list.map((t) => t.toFixed(0)).join(" ")})`
    )
  }
  await client.query(`DROP SCHEMA ${schema} CASCADE`)
  await client.end()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
