/**
 * Probe (issue 7): where enqueue → handler-start latency goes. The parent enqueues one job every 10 ms (payload:
 * host-wide monotonic time `t`); a child process runs `Worker.run` on a TaskQueue wrapped to timestamp the wake-ups
 * and claims. Per job: enqueue call (producer side), commit+NOTIFY → wake seen, wake → claim start, claim round trip,
 * claim end → handler start.
 * Usage: npx tsx scratchpad/latency-probe.ts [jobs=300] [src=../src]
 */
import { spawn } from "node:child_process"
import * as readline from "node:readline"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"

const nowMs = (): number => Number(process.hrtime.bigint() / 1000n) / 1000
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const role = process.argv[2] === "--worker" ? "worker" : "producer"
const jobs = Number(role === "worker" ? process.argv[4] : (process.argv[2] ?? 300))
const src = process.argv[3] ?? "../src"
const schema = `perf_latency_${src.includes("base") ? "base" : "new"}`

const load = async () => ({
  SqlTaskQueue: await import(`${src}/SqlTaskQueue.js`),
  Storage: await import(`${src}/Storage.js`),
  Task: await import(`${src}/Task.js`),
  TaskQueue: (await import(`${src}/TaskQueue.js`)).TaskQueue,
  Worker: await import(`${src}/Worker.js`)
})

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

const summary = (name: string, values: ReadonlyArray<number>) => {
  const s = [...values].sort((a, b) => a - b)
  console.log(
    `${name.padEnd(26)} p50 ${percentile(s, 50).toFixed(2)}  p90 ${percentile(s, 90).toFixed(2)}  p99 ${percentile(s, 99).toFixed(2)}  max ${s.at(-1)!.toFixed(2)}`
  )
}

const worker = async () => {
  const m = await load()
  const wakes: Array<number> = []
  const claims: Array<{ start: number; end: number; ids: ReadonlyArray<string> }> = []
  const out: Array<{ t: number; start: number; id: string }> = []
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => (finish = resolve))
  const Noop = m.Task.make("noop", {
    payload: Schema.Struct({ t: Schema.Number }),
    success: Schema.Void,
    handler: (payload: { t: number }) =>
      Effect.flatMap(m.Task.TaskContext, (ctx: { taskId: string }) =>
        Effect.sync(() => {
          out.push({ t: payload.t, start: nowMs(), id: ctx.taskId })
          if (out.length >= jobs) finish()
        })
      )
  })
  const queueLayer = Layer.effect(
    m.TaskQueue,
    Effect.map(m.SqlTaskQueue.make, (queue: any) => ({
      ...queue,
      wakeups: queue.wakeups.pipe(Stream.tap(() => Effect.sync(() => wakes.push(nowMs())))),
      claim: (options: unknown) =>
        Effect.suspend(() => {
          const start = nowMs()
          return Effect.tap(queue.claim(options), (claimed: ReadonlyArray<{ id: string }>) =>
            Effect.sync(() => claims.push({ start, end: nowMs(), ids: claimed.map((c) => c.id) }))
          )
        })
    }))
  )
  const runtime = ManagedRuntime.make(
    queueLayer.pipe(Layer.provideMerge(m.Storage.layerPg({ url, schema, maxConnections: 10 })))
  )
  await runtime.runPromise(
    Effect.scoped(
      Effect.asVoid(m.Worker.run({ tasks: [Noop], concurrency: 10 })).pipe(
        Effect.zipRight(Effect.sync(() => console.log(JSON.stringify({ ready: true })))),
        Effect.zipRight(Effect.promise(() => finished))
      )
    ) as any
  )
  const parts: Record<string, Array<number>> = {
    total: [],
    "commit+notify→wake": [],
    "wake→claim start": [],
    "claim round trip": [],
    "claim end→handler": []
  }
  for (const job of out.slice(10)) {
    const claim = claims.find((c) => c.ids.includes(job.id))!
    const wake = wakes.find((w) => w >= job.t) ?? NaN
    parts.total!.push(job.start - job.t)
    parts["commit+notify→wake"]!.push(wake - job.t)
    parts["wake→claim start"]!.push(claim.start - wake)
    parts["claim round trip"]!.push(claim.end - claim.start)
    parts["claim end→handler"]!.push(job.start - claim.end)
  }
  console.log(JSON.stringify({ parts, claims: claims.length, wakes: wakes.length }))
  await runtime.dispose()
}

const producer = async () => {
  const m = await load()
  const Noop = m.Task.make("noop", {
    payload: Schema.Struct({ t: Schema.Number }),
    success: Schema.Void,
    handler: () => Effect.void
  })
  const runtime = ManagedRuntime.make(
    m.SqlTaskQueue.layer.pipe(Layer.provideMerge(m.Storage.layerPg({ url, schema, maxConnections: 4 })))
  )
  await runtime.runPromise(Effect.void as any)
  const child = spawn(process.execPath, ["--import", "tsx", import.meta.filename, "--worker", src, String(jobs)], {
    stdio: ["pipe", "pipe", "inherit"],
    cwd: import.meta.dirname
  })
  const lines = readline.createInterface({ input: child.stdout! })
  const messages: Array<any> = []
  let notify: (() => void) | undefined
  lines.on("line", (line) => {
    try {
      messages.push(JSON.parse(line))
      notify?.()
    } catch {
      // log noise
    }
  })
  const next = () =>
    new Promise<any>((resolve) => {
      const check = () => {
        const m = messages.shift()
        if (m !== undefined) resolve(m)
        else notify = check
      }
      check()
    })
  await next()
  await new Promise((r) => setTimeout(r, 500))
  const enqueueMs: Array<number> = []
  const start = nowMs()
  for (let i = 0; i < jobs; i++) {
    const wait = start + i * 10 - nowMs()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    const t = nowMs()
    await runtime.runPromise(Effect.flatMap(m.TaskQueue, (q: any) => q.enqueue(Noop, { t })) as any)
    enqueueMs.push(nowMs() - t)
  }
  const report = await next()
  console.log(`src ${src}, ${jobs} jobs (first 10 skipped), ms`)
  summary("enqueue call (producer)", enqueueMs.slice(10))
  for (const [name, values] of Object.entries(report.parts as Record<string, Array<number>>)) summary(name, values)
  console.log(`claims ${report.claims}, wakes ${report.wakes}`)
  await runtime.dispose()
}

const main = role === "worker" ? worker : producer
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
