/**
 * Tracing across the queue: the span context of `TaskQueue.enqueue` / `enqueueMany` is stored with the task
 * (`trace_context`), and the worker's `Worker.execute` span is its child, so one trace shows the producer and the
 * execution — on every backend (the Postgres insert packs its rows differently from SQLite's).
 * The "exporter" is an in-memory tracer wrapping Effect's own: it keeps every span it creates.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Worker from "../src/Worker.js"
import * as Backends from "./support/backends.js"

const inMemoryTracer = () => {
  const spans: Array<Tracer.Span> = []
  const native = Context.get(DefaultServices.liveServices, Tracer.Tracer)
  const tracer = Tracer.make({
    span: (...args) => {
      const span = native.span(...args)
      spans.push(span)
      return span
    },
    context: (f, fiber) => native.context(f, fiber)
  })
  return { spans, tracer }
}

// What the handler saw as its current span, by payload.
const seen = new Map<string, Deferred.Deferred<{ traceId: string; spanId: string }>>()

const Traced = Task.make("traced-echo", {
  payload: Schema.Struct({ key: Schema.String }),
  success: Schema.String,
  handler: ({ key }) =>
    Effect.flatMap(Effect.currentSpan, (span) =>
      Effect.as(Deferred.succeed(seen.get(key)!, { traceId: span.traceId, spanId: span.spanId }), key)
    ).pipe(Effect.orDie)
})

describe.each(Backends.all())("Tracing ($name)", (backend) => {
  it.live("an enqueue and the task's execution share a trace id; Worker.execute is the enqueue's child", () => {
    const { spans, tracer } = inMemoryTracer()
    return Effect.gen(function* () {
      const queue = yield* TaskQueue
      for (const key of ["one", "many-a", "many-b"])
        seen.set(key, yield* Deferred.make<{ traceId: string; spanId: string }>())
      yield* Worker.run({ tasks: [Traced], concurrency: 2, workerId: "trace-worker" })

      const producer = yield* Effect.withSpan(
        Effect.zipRight(queue.enqueue(Traced, { key: "one" }), Effect.currentSpan),
        "producer.one"
      )
      const batch = yield* Effect.withSpan(
        Effect.zipRight(
          queue.enqueueMany([Task.call(Traced, { key: "many-a" }), Task.call(Traced, { key: "many-b" })]),
          Effect.currentSpan
        ),
        "producer.many"
      )
      assert.notStrictEqual(producer.traceId, batch.traceId)

      const one = yield* Deferred.await(seen.get("one")!)
      const manyA = yield* Deferred.await(seen.get("many-a")!)
      const manyB = yield* Deferred.await(seen.get("many-b")!)
      assert.strictEqual(one.traceId, producer.traceId)
      assert.strictEqual(manyA.traceId, batch.traceId)
      assert.strictEqual(manyB.traceId, batch.traceId)

      // The handler ran inside Worker.execute, whose parent is the enqueue's span, a descendant of the producer's.
      const ancestry = (spanId: string): Array<string> => {
        const span = spans.find((candidate) => candidate.spanId === spanId)
        if (span === undefined) return []
        return [span.name, ...(span.parent._tag === "Some" ? ancestry(span.parent.value.spanId) : [])]
      }
      assert.deepStrictEqual(ancestry(one.spanId), [
        "Worker.execute",
        "TaskQueue.enqueueRaw",
        "TaskQueue.enqueue",
        "producer.one"
      ])
      assert.deepStrictEqual(ancestry(manyA.spanId).slice(0, 2), ["Worker.execute", "TaskQueue.enqueueRaw"])
      assert.strictEqual(ancestry(manyA.spanId).at(-1), "producer.many")
    }).pipe(
      Effect.scoped,
      Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(backend.storage()))),
      Effect.withTracer(tracer)
    )
  })
})
