/**
 * @effect/workflow 0.19 as a benchmark agent (see bench/lib/agent.ts), a peer in the checkpoints scenario: one
 * workflow of `n` sequential no-op activities, on its SQL-backed engine — `ClusterWorkflowEngine.layer` on
 * `SingleRunner.layer()` (@effect/cluster 0.60: a single-node cluster whose `SqlMessageStorage` persists every
 * workflow and activity message and reply in Postgres), `PgClient.layer` on its own database. Defaults everywhere
 * (SingleRunner's sql runner storage, ShardingConfig defaults).
 */
import { ClusterWorkflowEngine, SingleRunner } from "@effect/cluster"
import { PgClient } from "@effect/sql-pg"
import { Activity, Workflow } from "@effect/workflow"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"

const Steps = Workflow.make({
  name: "BenchSteps",
  payload: { id: Schema.String, n: Schema.Number },
  success: Schema.Number,
  idempotencyKey: ({ id }) => id
})

const StepsLayer = Steps.toLayer(({ n }) =>
  Effect.gen(function* () {
    let done = 0
    for (let i = 0; i < n; i++) {
      // Each activity's result is persisted before the workflow moves on; names are unique within the workflow.
      done += yield* Activity.make({ name: `step-${i}`, success: Schema.Number, execute: Effect.succeed(1) })
    }
    return done
  })
)

const layerFor = (url: string) =>
  StepsLayer.pipe(
    Layer.provideMerge(ClusterWorkflowEngine.layer),
    Layer.provideMerge(SingleRunner.layer()),
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(url) }))
  )

let runtime: ManagedRuntime.ManagedRuntime<Layer.Layer.Success<ReturnType<typeof layerFor>>, unknown> | undefined

export const commands = {
  setup: async (args: { url: string }) => {
    runtime = ManagedRuntime.make(layerFor(args.url))
    await runtime.runPromise(Effect.void)
  },
  steps: async (args: { n: number }) => {
    if (runtime === undefined) throw new Error("setup first")
    const started = performance.now()
    const done = await runtime.runPromise(Steps.execute({ id: crypto.randomUUID(), n: args.n }))
    const ms = performance.now() - started
    if (done !== args.n) throw new Error(`workflow ran ${done} of ${args.n} activities`)
    return { ms, perSecond: (args.n / ms) * 1000 }
  },
  teardown: async () => {
    if (runtime !== undefined) await runtime.dispose()
    runtime = undefined
  }
}
