/** Probe (issue 7): TS-side cost of building a bulk enqueue (no SQL). npx tsx scratchpad/prep-probe.ts [n] [rounds] */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { toInsertRow } from "../src/internal/sql/taskRows.js"

const n = Number(process.argv[2] ?? 20000)
const rounds = Number(process.argv[3] ?? 10)
const Noop = Task.make("noop", {
  payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
  success: Schema.Void,
  handler: () => Effect.void
})
const step = (label: string, f: () => unknown) => {
  const t0 = performance.now()
  const out = f()
  return [label, performance.now() - t0, out] as const
}
const times: Record<string, Array<number>> = {}
for (let r = 0; r < rounds; r++) {
  const [l1, t1, calls] = step("Task.call", () => Array.from({ length: n }, () => Task.call(Noop, {})))
  const [l2, t2, requests] = step("encodeCall", () =>
    Effect.runSync(
      Effect.forEach(calls as Array<Task.TaskCall>, (call) =>
        SqlTaskQueue.encodeCall(call.task, call.payload, call.options, 0)
      )
    )
  )
  const [l3, t3, rows] = step("toInsertRow", () => (requests as Array<any>).map((request) => toInsertRow(request, 0)))
  const [l4, t4] = step("JSON.stringify", () => JSON.stringify(rows))
  const [l5, t5] = step("randomUUID", () => {
    for (let i = 0; i < n; i++) crypto.randomUUID()
  })
  for (const [l, t] of [
    [l1, t1],
    [l2, t2],
    [l3, t3],
    [l4, t4],
    [l5, t5]
  ] as const)
    (times[l] ??= []).push(t)
}
for (const [l, list] of Object.entries(times)) {
  const s = [...list].sort((a, b) => a - b)
  console.log(`${l.padEnd(16)} median ${s[Math.floor(s.length / 2)]!.toFixed(1)} ms`)
}
