/**
 * A chaos producer process: creates its slice of the plan's chords (each in one transaction, with an idempotency key,
 * so a restarted producer creates nothing twice), prints `created <n>`, then — unless the runner SIGKILLs it right
 * there — awaits every chord's outcome through its handle and prints `awaited <ok> <failed>`.
 *
 * argv: plan file, first chord index, end index (exclusive). Storage from CHAOS_STORAGE (JSON, see storage.ts).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as fs from "node:fs"
import * as Baton from "../../src/Baton.js"
import * as ChordRegistry from "../../src/ChordRegistry.js"
import * as Task from "../../src/Task.js"
import { chordKey, type Plan } from "./plan.js"
import { storageLayer, storageFromEnv } from "./storage.js"
import { Body, Callback, OnError } from "./tasks.js"

const [planFile = "", from = "0", to = "0"] = process.argv.slice(2)
const plan = JSON.parse(fs.readFileSync(planFile, "utf8")) as Plan
const mine = plan.chords.slice(Number(from), Number(to))

// Transient database errors (a restart, a killed connection) are retried: the key makes a retry safe.
const patiently = Schedule.exponential(Duration.millis(100)).pipe(
  Schedule.union(Schedule.spaced(Duration.seconds(1))),
  Schedule.upTo(Duration.seconds(90))
)

const program = Effect.gen(function* () {
  const registry = yield* ChordRegistry.ChordRegistry
  const handles = []
  for (const chord of mine) {
    const handle = yield* registry
      .chord({
        body: chord.bodies.map((body, index) =>
          Task.call(
            Body,
            { chord: chord.key, index, n: body.n, slowMs: body.slowMs, fail: body.fail },
            body.fail ? { maxAttempts: 2 } : {}
          )
        ),
        callback: ChordRegistry.callback(Callback, { chord: chord.key }),
        onError: ChordRegistry.onError(OnError, { chord: chord.key }),
        idempotencyKey: chordKey(chord),
        tags: [`chaos:${plan.token}`]
      })
      .pipe(Effect.retry(patiently))
    handles.push(handle)
  }
  console.log(`created ${handles.length}`)
  let ok = 0
  let failed = 0
  for (const handle of handles) {
    const outcome = yield* Effect.either(handle.await)
    if (outcome._tag === "Right") ok++
    else failed++
  }
  console.log(`awaited ${ok} ${failed}`)
})

Effect.runPromise(Effect.provide(program, Baton.layerWith(storageLayer(storageFromEnv(), "producer")))).then(
  () => process.exit(0),
  (error) => {
    console.error(`producer failed: ${String(error)}`)
    process.exit(1)
  }
)
