/**
 * pg-boss 12.38 as a benchmark agent (see bench/lib/agent.ts). LISTEN/NOTIFY on (`useListenNotify`, queue
 * `notify: true`). Worker variants (the `work()` options of pg-boss's docs/api/workers.md, see docs/benchmarks.md):
 * - "throughput": localConcurrency 1, batchSize = the concurrency asked for (ten jobs in flight), burstWhenBatchFull,
 *   a 0.5 s polling interval (it sleeps its interval after a fetch unless a burst trigger applies);
 * - "perf": its throughput options pushed up: localConcurrency = the concurrency asked for (that many workers, each
 *   fetching and completing on its own), batchSize 100 and burstWhenBatchFull, so up to 1,000 jobs are fetched ahead
 *   (the bound of Baton's `prefetch`);
 * - "latency": batchSize 1 with localConcurrency = the concurrency asked for (with localConcurrency 1 it did not keep
 *   up with one job every 10 ms here: each fetch was followed by a wait).
 * `reset` gives it the clean start the other systems get: TRUNCATE of its job tables and VACUUM ANALYZE (its own
 * `deleteAllJobs` DELETEs the queue's rows in batches and leaves the dead tuples to autovacuum).
 */
import type { PgBoss } from "pg-boss"
import pg from "pg"
import { JobCounter, produceAtRate } from "../lib/agent.js"

const counter = new JobCounter()
const queue = "noop"
let boss: PgBoss | undefined
let admin: pg.Client | undefined

export const commands = {
  setup: async (args: { url: string }) => {
    const lib = await import("pg-boss")
    boss = new lib.PgBoss({ connectionString: args.url, schema: "pgboss", useListenNotify: true, max: 12 })
    boss.on("error", (error) => console.error("pg-boss error", error))
    boss.on("warning", (warning) => console.error("pg-boss warning", JSON.stringify(warning)))
    await boss.start()
    if ((await boss.getQueue(queue)) === null) await boss.createQueue(queue, { notify: true })
    admin = new pg.Client({ connectionString: args.url })
    await admin.connect()
  },
  reset: async () => {
    // The queue lives in pg-boss's shared table (job_common, the default partition of pgboss.job), with only its
    // internal schedule queue beside it, unused here.
    await admin!.query("TRUNCATE pgboss.job_common, pgboss.job_dependency")
    await admin!.query("VACUUM ANALYZE pgboss.job_common")
    await admin!.query("VACUUM ANALYZE pgboss.job_dependency")
  },
  enqueueBulk: async (args: { n: number }) => {
    const jobs = Array.from({ length: args.n }, () => ({ data: {} }))
    const start = performance.now()
    await boss!.insert(queue, jobs)
    return { ms: performance.now() - start, count: args.n }
  },
  startWorker: async (args: { concurrency: number; variant: "throughput" | "perf" | "latency" }) => {
    counter.start()
    const options =
      args.variant === "latency"
        ? { localConcurrency: args.concurrency, batchSize: 1, pollingIntervalSeconds: 0.5 }
        : args.variant === "perf"
          ? {
              localConcurrency: args.concurrency,
              batchSize: 100,
              burstWhenBatchFull: true,
              pollingIntervalSeconds: 0.5
            }
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
    await admin?.end()
  }
}
