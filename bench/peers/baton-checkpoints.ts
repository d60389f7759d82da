/**
 * Baton's durable checkpoints and the bare-commit physical limit as a benchmark agent (see bench/lib/agent.ts): the
 * measurement of bench/lib/checkpointsDurable.ts, set up once and run a round per `round` command.
 */
import { makeCheckpointBench, type Variant } from "../lib/checkpointsDurable.js"

let bench: Awaited<ReturnType<typeof makeCheckpointBench>> | undefined

export const commands = {
  setup: async (args: { url: string; variants?: ReadonlyArray<Variant> }) => {
    bench = await makeCheckpointBench(args.url, args.variants)
  },
  round: (args: { n: number }) => {
    if (bench === undefined) throw new Error("setup first")
    return bench.round(args.n)
  },
  teardown: async () => {
    await bench?.close()
    bench = undefined
  }
}
