/** Probe (issue 7): CPU profile target — N sequential durable checkpoints (create → complete → await) on Postgres. */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as SqlCheckpointCoordinator from "../src/SqlCheckpointCoordinator.js"
import * as Storage from "../src/Storage.js"

const n = Number(process.argv[2] ?? 2000)
const url = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const layer = SqlCheckpointCoordinator.layer.pipe(
  Layer.provideMerge(Storage.layerPg({ url, schema: "perf_checkpoint_probe", maxConnections: 4 }))
)
const program = Effect.gen(function* () {
  const coordinator = yield* CheckpointCoordinator
  const run = `run-${Date.now()}`
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    const token = yield* coordinator.createCheckpoint(run, i)
    yield* coordinator.completeCheckpoint(token, { i })
    yield* coordinator.awaitCheckpoint(token)
  }
  console.log(`${n} checkpoints: ${Math.round((n / (performance.now() - t0)) * 1000)}/s`)
})
Effect.runPromise(program.pipe(Effect.provide(layer))).catch((e) => {
  console.error(e)
  process.exit(1)
})
