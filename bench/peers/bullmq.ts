/**
 * BullMQ flows as a benchmark agent (see bench/lib/agent.ts), the peer of bench/peers/baton-chord.ts in chord-fanin:
 * a `FlowProducer` adds a parent job (queue "parents") with `size` no-op children (queue "children"); one `Worker`
 * on "children" at concurrency 10 and one on "parents" at concurrency 1 (docs/benchmarks.md, "Peers' settings"), in
 * this process.
 *
 * Redis: BENCH_REDIS_URL or redis://127.0.0.1:6379, database 5 (never 0), flushed by `reset` between rounds (the
 * workers are closed meanwhile). Connection options as BullMQ's documentation recommends for workers
 * (`maxRetriesPerRequest: null`); every BullMQ object opens its own connections from these options. The timing
 * instants are those of bench/lib/chords.ts, taken in this process: last statement of each child's processor, first
 * statement of the parent's processor, and after the parent's `job.getChildrenValues()` returned every child result.
 */
import { FlowProducer, Worker } from "bullmq"
import { Redis } from "ioredis"
import { type ChordRun, ChordTracker } from "../lib/chords.js"

const tracker = new ChordTracker()

interface Connection {
  readonly host: string
  readonly port: number
  readonly db: number
  readonly maxRetriesPerRequest: null
}

let connection: Connection | undefined
let producer: FlowProducer | undefined
let children: Worker | undefined
let parents: Worker | undefined

const options = () => {
  if (connection === undefined) throw new Error("setup first")
  return connection
}

const startWorkers = async () => {
  children = new Worker("children", async (job) => tracker.bodyDone((job.data as { n: number }).n * 2), {
    connection: options(),
    concurrency: 10
  })
  parents = new Worker(
    "parents",
    async (job) => {
      tracker.callbackStarted()
      const values = await job.getChildrenValues()
      tracker.callbackHasResults(Object.keys(values).length)
      return Object.keys(values).length
    },
    { connection: options(), concurrency: 1 }
  )
  producer = new FlowProducer({ connection: options() })
  await Promise.all([children.waitUntilReady(), parents.waitUntilReady(), producer.waitUntilReady()])
}

const stopWorkers = async () => {
  await Promise.all([children?.close(), parents?.close(), producer?.close()])
  children = parents = producer = undefined
}

const flush = async () => {
  const client = new Redis({ ...options(), lazyConnect: true })
  await client.connect()
  try {
    await client.flushdb()
  } finally {
    client.disconnect()
  }
}

export const commands = {
  setup: async (args: { url: string; db: number }) => {
    if (args.db === 0) throw new Error("the benchmark uses its own Redis database, never 0")
    const url = new URL(args.url)
    connection = {
      host: url.hostname,
      port: Number(url.port || 6379),
      db: args.db,
      maxRetriesPerRequest: null
    }
    await flush()
    await startWorkers()
  },
  /** FLUSHDB between rounds (workers closed meanwhile). */
  reset: async () => {
    await stopWorkers()
    await flush()
    await startWorkers()
  },
  /** One flow of `size` children, from `FlowProducer.add` to the parent's processor start. */
  chord: (args: { size: number }): Promise<ChordRun> =>
    tracker.run(args.size, () =>
      producer!.add({
        name: "total",
        queueName: "parents",
        data: {},
        children: Array.from({ length: args.size }, (_, n) => ({ name: "double", queueName: "children", data: { n } }))
      })
    ),
  teardown: async () => {
    await stopWorkers()
    await flush()
  }
}
