import pg from "pg"
import { insertColumns, toInsertRow } from "../src/internal/sql/taskRows.js"
const client = new pg.Client({
  connectionString: "postgres://postgres@127.0.0.1:5432/test",
  options: "-c search_path=perf_enqueue_probe"
})
await client.connect()
const cols = insertColumns.join(", ")
const varying = [
  "id",
  "name",
  "queue",
  "namespace",
  "tags",
  "payload",
  "priority",
  "max_attempts",
  "timeout_ms",
  "backoff",
  "run_at",
  "idempotency_key",
  "chord_id",
  "chord_index",
  "run_id"
]
const compact = (row: any) => {
  const out: any = {}
  for (const c of varying) if (row[c] !== null) out[c] = row[c]
  return out
}
const stats: Record<string, number[]> = {}
for (let r = 0; r < 8; r++) {
  for (const variant of ["full", "compact", "compact-literal"]) {
    await client.query("TRUNCATE baton_tasks")
    const now = Date.now()
    const rows = Array.from({ length: 5000 }, () => toInsertRow({ name: "noop", payload: {} }, now))
    const t0 = performance.now()
    let json: string
    if (variant === "full") json = JSON.stringify(rows)
    else if (variant === "compact") json = JSON.stringify(rows.map(compact))
    else {
      // stringify by hand
      json =
        "[" +
        rows
          .map(
            (row) =>
              `{"id":"${row.id}","name":${JSON.stringify(row.name)},"queue":${JSON.stringify(row.queue)},"namespace":${JSON.stringify(row.namespace)},"tags":${JSON.stringify(row.tags)},"payload":${JSON.stringify(row.payload)},"priority":${row.priority},"max_attempts":${row.max_attempts},"run_at":${row.run_at}}`
          )
          .join(",") +
        "]"
    }
    const t1 = performance.now()
    const sqlText =
      variant === "full"
        ? `EXPLAIN (ANALYZE, BUFFERS) INSERT INTO baton_tasks (${cols}) SELECT ${cols} FROM json_populate_recordset(NULL::baton_tasks, $1::json)`
        : `EXPLAIN (ANALYZE, BUFFERS) INSERT INTO baton_tasks (${cols}) SELECT ${insertColumns.map((c) => (c === "state" ? "'pending'" : c === "attempts" ? "0" : c === "created_at" || c === "updated_at" ? String(now) : c)).join(", ")} FROM json_populate_recordset(NULL::baton_tasks, $1::json)`
    const res = await client.query(sqlText, [json])
    const t2 = performance.now()
    const plan = res.rows.map((x: any) => x["QUERY PLAN"]).join("\n")
    const exec = Number(/Execution Time: ([\d.]+)/.exec(plan)![1])
    const fn = Number(/json_populate_recordset.*actual time=[\d.]+\.\.([\d.]+)/.exec(plan)![1])
    for (const [k, v] of [
      ["stringify", t1 - t0],
      ["roundtrip", t2 - t1],
      ["exec", exec],
      ["jsonfn", fn],
      ["bytes", json.length / 5000]
    ] as const)
      (stats[`${variant} ${k}`] ??= []).push(v)
  }
}
for (const [k, v] of Object.entries(stats)) {
  const s = [...v].sort((a, b) => a - b)
  console.log(k.padEnd(28), s[0]!.toFixed(1), s[Math.floor(s.length / 2)]!.toFixed(1))
}
await client.end()
