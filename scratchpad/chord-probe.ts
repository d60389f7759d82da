/**
 * Probe (issue 7): where chord fan-in latency goes (last body handler returned → callback handler started), on
 * Postgres, in one process. The TaskQueue is wrapped to timestamp every group commit (`complete`) and claim.
 * Per chord: wait for the commit that dispatches (last body return → start of the `complete` call that carried the
 * chord's last completions), that commit's duration, and commit end → callback handler start.
 * Usage: npx tsx scratchpad/chord-probe.ts [size=1000] [runs=5] [workers=4] [concurrency=25]
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as ChordRegistry from "../src/ChordRegistry.js"
import * as SqlChordRegistry from "../src/SqlChordRegistry.js"
import * as SqlCompletionBackend from "../src/SqlCompletionBackend.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"

const nowMs = (): number => Number(process.hrtime.bigint() / 1000n) / 1000
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const [size, runs, workers, concurrency] = [1000, 5, 4, 25].map((d, i) => Number(process.argv[2 + i] ?? d))

const bodies = new Map<string, { last: number; count: number }>()
const callbacks = new Map<string, number>()
const commits: Array<{ start: number; end: number; ids: Set<string>; size: number }> = []

const Double = Task.make("probe-double", {
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number,
  handler: ({ n }) =>
    Effect.map(Task.TaskContext, (ctx) => {
      const t = bodies.get(ctx.chordId!) ?? { last: 0, count: 0 }
      t.last = nowMs()
      t.count++
      bodies.set(ctx.chordId!, t)
      return n * 2
    })
})
const Total = Task.make("probe-total", {
  payload: ChordRegistry.callbackPayload(Schema.Number),
  success: Schema.Number,
  handler: ({ results }) =>
    Effect.map(Task.TaskContext, (ctx) => {
      callbacks.set(ctx.taskId, nowMs())
      return results.length
    })
})

const queueLayer = Layer.effect(
  TaskQueue,
  Effect.map(SqlTaskQueue.make, (queue) =>
    TaskQueue.of({
      ...queue,
      complete: (completions) =>
        Effect.suspend(() => {
          const start = nowMs()
          return Effect.tap(queue.complete(completions), () =>
            Effect.sync(() =>
              commits.push({
                start,
                end: nowMs(),
                ids: new Set(completions.map((c) => c.id)),
                size: completions.length
              })
            )
          )
        })
    })
  )
)

const layer = SqlChordRegistry.layer.pipe(
  Layer.provideMerge(SqlCompletionBackend.layer),
  Layer.provideMerge(queueLayer),
  Layer.provideMerge(
    Storage.layerPg({
      url,
      schema: `perf_chord_probe_${process.pid}`,
      maxConnections: 20,
      applicationName: "perf-probe"
    })
  )
)

const percentile = (values: ReadonlyArray<number>, p: number) => {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

const program = Effect.gen(function* () {
  const registry = yield* ChordRegistry.ChordRegistry
  const queue = yield* TaskQueue
  for (let i = 0; i < workers; i++) {
    yield* Worker.run({ tasks: [Double, Total], concurrency, workerId: `probe-${i}` })
  }
  const rows: Array<Record<string, number>> = []
  for (let r = 0; r < runs + 1; r++) {
    commits.length = 0
    const handle = yield* registry.chord({
      body: Array.from({ length: size }, (_, n) => Task.call(Double, { n })),
      callback: ChordRegistry.callback(Total, {})
    })
    const callbackId = yield* handle.await
    while (!callbacks.has(callbackId)) yield* Effect.sleep("1 millis")
    const info = yield* queue.get(callbackId)
    void info
    const body = bodies.get(handle.chordId)!
    const started = callbacks.get(callbackId)!
    // The commit that dispatched: the last-ending commit before the callback existed that carried body tasks. We
    // do not know body ids here, so take the last commit that ended before the callback started and is not the
    // callback's own.
    const before = commits.filter((c) => c.end <= started && !c.ids.has(callbackId))
    const dispatching = before.at(-1)!
    const row = {
      latency: started - body.last,
      waitForCommit: dispatching.start - body.last,
      commit: dispatching.end - dispatching.start,
      commitSize: dispatching.size,
      commitToHandler: started - dispatching.end,
      batches: before.length,
      meanBatch: before.reduce((n, c) => n + c.size, 0) / Math.max(1, before.length)
    }
    if (r > 0) rows.push(row)
    console.log(
      Object.entries(row)
        .map(([k, v]) => `${k} ${v.toFixed(1)}`)
        .join(", ")
    )
  }
  for (const key of Object.keys(rows[0]!)) {
    const values = rows.map((row) => row[key]!)
    console.log(`${key.padEnd(16)} p50 ${percentile(values, 50).toFixed(1)}  max ${Math.max(...values).toFixed(1)}`)
  }
})

const runtime = ManagedRuntime.make(layer)
runtime
  .runPromise(Effect.scoped(program))
  .then(() => runtime.dispose())
  .then(
    () => process.exit(0),
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
