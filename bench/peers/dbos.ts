/**
 * DBOS Transact 5.3 as a benchmark agent (see bench/lib/agent.ts): one workflow of `n` sequential no-op steps
 * (`DBOS.registerWorkflow` / `DBOS.registerStep`, defaults; each step's output is recorded durably before the next
 * runs, DBOS's counterpart of a confirmed checkpoint). Its own system database; logger at "error"; no admin server.
 */
let lib: typeof import("@dbos-inc/dbos-sdk") | undefined
let workflow: ((n: number) => Promise<number>) | undefined

export const commands = {
  setup: async (args: { url: string }) => {
    lib = await import("@dbos-inc/dbos-sdk")
    const { DBOS } = lib
    DBOS.setConfig({ name: "baton-bench", systemDatabaseUrl: args.url, logLevel: "error", runAdminServer: false })
    const step = DBOS.registerStep(async () => 1, { name: "noop" })
    workflow = DBOS.registerWorkflow(
      async (n: number) => {
        let sum = 0
        for (let i = 0; i < n; i++) sum += await step()
        return sum
      },
      { name: "steps" }
    )
    await DBOS.launch()
  },
  steps: async (args: { n: number }) => {
    const start = performance.now()
    const result = await workflow!(args.n)
    const ms = performance.now() - start
    if (result !== args.n) throw new Error(`workflow returned ${result}`)
    return { ms, perSecond: (args.n / ms) * 1000 }
  },
  teardown: async () => {
    await lib?.DBOS.shutdown()
  }
}
