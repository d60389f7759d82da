/**
 * graphile-worker 0.18 as a benchmark agent (see bench/lib/agent.ts). One `pg.Pool` made at setup and shared by
 * `makeWorkerUtils` (enqueue) and `run` (the worker), so no round pays for new connections. Its logger is
 * silenced (it logs every job at `info`). Variants: "default" (its defaults: LISTEN/NOTIFY, no local queue) and
 * "perf" (its documented performance options: `localQueue.size` 100, `completeJobBatchDelay` 250 ms).
 */
import type { Runner, WorkerUtils } from "graphile-worker"
import pg from "pg"
import { JobCounter, produceAtRate } from "../lib/agent.js"

const counter = new JobCounter()
let pool: pg.Pool | undefined
let utils: WorkerUtils | undefined
let runner: Runner | undefined
let lib: typeof import("graphile-worker") | undefined

const silent = () => new lib!.Logger(() => () => {})

export const commands = {
  setup: async (args: { url: string }) => {
    lib = await import("graphile-worker")
    pool = new pg.Pool({ connectionString: args.url, max: 12 })
    utils = await lib.makeWorkerUtils({ pgPool: pool, logger: silent() })
    await utils.migrate()
  },
  reset: async () => {
    await pool!.query("TRUNCATE graphile_worker._private_jobs CASCADE")
    await pool!.query("DELETE FROM graphile_worker._private_job_queues")
    await pool!.query("VACUUM ANALYZE graphile_worker._private_jobs")
  },
  enqueueBulk: async (args: { n: number }) => {
    const specs = Array.from({ length: args.n }, () => ({ identifier: "noop", payload: {} }))
    const start = performance.now()
    const jobs = await utils!.addJobs(specs)
    return { ms: performance.now() - start, count: jobs.length }
  },
  startWorker: async (args: { concurrency: number; variant: "default" | "perf" }) => {
    counter.start()
    runner = await lib!.run({
      pgPool: pool!,
      concurrency: args.concurrency,
      noHandleSignals: true,
      logger: silent(),
      taskList: { noop: async (payload) => counter.onJob(payload) },
      ...(args.variant === "perf"
        ? { preset: { worker: { localQueue: { size: 100 }, completeJobBatchDelay: 250 } } }
        : {})
    })
  },
  progress: () => counter.snapshot(),
  stopWorker: async () => {
    if (runner !== undefined) await runner.stop()
    runner = undefined
    return counter.finish()
  },
  produce: (args: { count: number; intervalMs: number }) =>
    produceAtRate(args.count, args.intervalMs, (t) => utils!.addJob("noop", { t })),
  teardown: async () => {
    await utils?.release()
    await pool?.end()
  }
}
