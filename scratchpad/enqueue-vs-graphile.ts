/**
 * Probe (issue 7): bulk enqueue of N no-op jobs, alternating in one process: Baton (this tree), Baton at another
 * tree (BASE_SRC, e.g. a checkout of the previous commit, in its own schema) and graphile-worker's addJobs.
 * Usage: BASE_SRC=/tmp/perf/base/src npx tsx scratchpad/enqueue-vs-graphile.ts [n=20000] [rounds=7]
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as SqlClient from "@effect/sql/SqlClient"
import pg from "pg"

const server = process.env.PROBE_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const n = Number(process.argv[2] ?? 20000)
const rounds = Number(process.argv[3] ?? 7)

const urlFor = (db: string) => {
  const url = new URL(server)
  url.pathname = `/${db}`
  return url.toString()
}

const batonSystem = async (src: string, schema: string) => {
  const SqlTaskQueue = await import(`${src}/SqlTaskQueue.js`)
  const Storage = await import(`${src}/Storage.js`)
  const Task = await import(`${src}/Task.js`)
  const { TaskQueue } = await import(`${src}/TaskQueue.js`)
  const Noop = Task.make("noop", {
    payload: Schema.Struct({ t: Schema.optional(Schema.Number) }),
    success: Schema.Void,
    handler: () => Effect.void
  })
  const runtime = ManagedRuntime.make(
    SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerPg({ url: server, schema, maxConnections: 4 })))
  )
  return {
    reset: () =>
      runtime.runPromise(
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`TRUNCATE baton_tasks`
          yield* sql`VACUUM ANALYZE baton_tasks`
        }) as Effect.Effect<void, unknown, never>
      ),
    enqueue: () =>
      runtime.runPromise(
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const calls = Array.from({ length: n }, () => Task.call(Noop, {}))
          const t0 = performance.now()
          const ids = yield* queue.enqueueMany(calls)
          if (ids.length !== n) throw new Error("short")
          return performance.now() - t0
        }) as Effect.Effect<number, unknown, never>
      ),
    close: () => runtime.dispose()
  }
}

const graphileSystem = async () => {
  const admin = new pg.Client({ connectionString: server })
  await admin.connect()
  const exists = await admin.query("SELECT 1 FROM pg_database WHERE datname = 'perfprobe_graphile'")
  if (exists.rowCount === 0) await admin.query("CREATE DATABASE perfprobe_graphile")
  await admin.end()
  const lib = await import("graphile-worker")
  const pool = new pg.Pool({ connectionString: urlFor("perfprobe_graphile"), max: 12 })
  const utils = await lib.makeWorkerUtils({ pgPool: pool, logger: new lib.Logger(() => () => {}) })
  await utils.migrate()
  return {
    reset: async () => {
      await pool.query("TRUNCATE graphile_worker._private_jobs CASCADE")
      await pool.query("DELETE FROM graphile_worker._private_job_queues")
      await pool.query("VACUUM ANALYZE graphile_worker._private_jobs")
    },
    enqueue: async () => {
      const specs = Array.from({ length: n }, () => ({ identifier: "noop", payload: {} }))
      const t0 = performance.now()
      const jobs = await utils.addJobs(specs)
      if (jobs.length !== n) throw new Error("short")
      return performance.now() - t0
    },
    close: async () => {
      await utils.release()
      await pool.end()
    }
  }
}

const main = async () => {
  const systems: Record<string, Awaited<ReturnType<typeof graphileSystem>>> = {
    baton: await batonSystem("../src", "perf_probe_new")
  }
  if (process.env.BASE_SRC) systems["baton (base)"] = await batonSystem(process.env.BASE_SRC, "perf_probe_base")
  systems["graphile-worker"] = await graphileSystem()
  const times: Record<string, Array<number>> = {}
  const names = Object.keys(systems)
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < names.length; j++) {
      const name = names[(j + r) % names.length]!
      await systems[name]!.reset()
      ;(times[name] ??= []).push(await systems[name]!.enqueue())
    }
  }
  for (const [name, list] of Object.entries(times)) {
    const s = [...list].sort((a, b) => a - b)
    const med = s[Math.floor(s.length / 2)]!
    console.log(
      `${name.padEnd(16)} median ${Math.round((n / med) * 1000)} jobs/s, best ${Math.round((n / s[0]!) * 1000)} jobs/s (ms: ${list.map((t) => t.toFixed(0)).join(" ")})`
    )
  }
  for (const system of Object.values(systems)) await system.close()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
