/**
 * pg-boss 12.38 as a benchmark agent (see bench/lib/agent.ts), with the settings PEERS.md names: LISTEN/NOTIFY on
 * (`useListenNotify`, queue `notify: true`); for throughput `work` with localConcurrency 1, batchSize 10 (ten jobs
 * in flight), burstWhenBatchFull and a 0.5 s polling interval (it sleeps its interval after a fetch unless a
 * burst trigger applies); for latency batchSize 1 with localConcurrency = the concurrency asked for (with
 * localConcurrency 1 it did not keep up with one job every 10 ms here: each fetch was followed by a wait).
 */
import type { PgBoss } from "pg-boss"
import { JobCounter, produceAtRate } from "../lib/agent.js"

const counter = new JobCounter()
const queue = "noop"
let boss: PgBoss | undefined

export const commands = {
  setup: async (args: { url: string }) => {
    const lib = await import("pg-boss")
    boss = new lib.PgBoss({ connectionString: args.url, schema: "pgboss", useListenNotify: true, max: 12 })
    boss.on("error", (error) => console.error("pg-boss error", error))
    boss.on("warning", (warning) => console.error("pg-boss warning", JSON.stringify(warning)))
    await boss.start()
    if ((await boss.getQueue(queue)) === null) await boss.createQueue(queue, { notify: true })
  },
  reset: async () => {
    await boss!.deleteAllJobs(queue)
  },
  enqueueBulk: async (args: { n: number }) => {
    const jobs = Array.from({ length: args.n }, () => ({ data: {} }))
    const start = performance.now()
    await boss!.insert(queue, jobs)
    return { ms: performance.now() - start, count: args.n }
  },
  startWorker: async (args: { concurrency: number; variant: "throughput" | "latency" }) => {
    counter.start()
    const options =
      args.variant === "latency"
        ? { localConcurrency: args.concurrency, batchSize: 1, pollingIntervalSeconds: 0.5 }
        : { localConcurrency: 1, batchSize: args.concurrency, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 }
    await boss!.work(queue, options, async (jobs) => {
      for (const job of jobs) counter.onJob(job.data)
    })
  },
  progress: () => counter.snapshot(),
  stopWorker: async () => {
    await boss!.offWork(queue, { wait: true })
    return counter.finish()
  },
  produce: (args: { count: number; intervalMs: number }) =>
    produceAtRate(args.count, args.intervalMs, (t) => boss!.send(queue, { t })),
  teardown: async () => {
    await boss?.stop({ graceful: false })
  }
}
