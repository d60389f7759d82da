/** Probe (issue 14): statements per drained task — wraps pg's Client.query, then runs drain-probe. */
import pg from "pg"
const counts = new Map<string, { n: number; ms: number }>()
const proto = pg.Client.prototype as unknown as { query: (...args: Array<unknown>) => unknown }
const query = proto.query
proto.query = function (this: unknown, config: unknown, ...rest: Array<unknown>) {
  const text = typeof config === "string" ? config : ((config as { text?: string })?.text ?? "?")
  const key = text.replace(/\s+/g, " ").slice(0, 70)
  const entry = counts.get(key) ?? { n: 0, ms: 0 }
  entry.n++
  counts.set(key, entry)
  return query.call(this, config, ...rest)
}
process.on("exit", () => {
  for (const [k, v] of [...counts].sort((a, b) => b[1].n - a[1].n).slice(0, 20)) console.log(String(v.n).padStart(7), k)
})
await import(process.env.PROBE ?? "./drain-probe.js")
