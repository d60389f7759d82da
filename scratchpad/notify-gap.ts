/**
 * Probe (issue 14): raw `pg`, no Baton — an autocommitted INSERT with NOTIFY on one connection, the notification on
 * another; round trip and send → notification, with a pause of GAP ms between jobs (the VM's idle wake-up shows as
 * the pause grows). Usage: GAP=10 npx tsx scratchpad/notify-gap.ts
 */
import pg from "pg"

const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const gap = Number(process.env.GAP ?? 0)
const a = new pg.Client({ connectionString: url })
const b = new pg.Client({ connectionString: url })
await a.connect()
await b.connect()
await b.query("CREATE TABLE IF NOT EXISTS notify_gap_probe (id serial, v text)")
await a.query("LISTEN notify_gap_probe")
let resolve: (at: number) => void = () => {}
a.on("notification", () => resolve(performance.now()))
const roundTrip: Array<number> = []
const delivered: Array<number> = []
for (let i = 0; i < 300; i++) {
  await new Promise((r) => setTimeout(r, gap))
  const got = new Promise<number>((r) => (resolve = r))
  const t0 = performance.now()
  await b.query({
    name: "ins",
    text: "WITH i AS (INSERT INTO notify_gap_probe (v) VALUES ($1) RETURNING id) SELECT pg_notify('notify_gap_probe', 'x') FROM i",
    values: ["x"]
  })
  roundTrip.push(performance.now() - t0)
  delivered.push((await got) - t0)
}
const p = (xs: Array<number>, q: number) => [...xs].sort((x, y) => x - y)[Math.floor(q * xs.length)]!.toFixed(2)
console.log(
  `gap ${gap} ms: insert+commit round trip p50 ${p(roundTrip, 0.5)} p99 ${p(roundTrip, 0.99)}; send → notification p50 ${p(delivered, 0.5)} p99 ${p(delivered, 0.99)}`
)
await b.query("DROP TABLE notify_gap_probe")
await a.end()
await b.end()
