/**
 * Where a chaos run keeps its data: a Postgres schema of its own (and connections named `chaos-<token>…`, so that the
 * runner terminates only its own backends), or a SQLite file. Passed to producers as JSON in CHAOS_STORAGE, and to
 * `baton` processes as the CLI's own options and environment.
 */
import * as Storage from "../../src/Storage.js"

export type ChaosStorage =
  | { readonly kind: "pg"; readonly url: string; readonly schema: string; readonly appName: string }
  | { readonly kind: "sqlite"; readonly filename: string }

/** Reads CHAOS_STORAGE (in a producer). */
export const storageFromEnv = (): ChaosStorage => {
  const raw = process.env.CHAOS_STORAGE
  if (raw === undefined) throw new Error("CHAOS_STORAGE is not set")
  return JSON.parse(raw) as ChaosStorage
}

/** The storage layer for a chaos process; `role` names its Postgres connections (`<appName>-<role>`). */
export const storageLayer = (storage: ChaosStorage, role: string) =>
  storage.kind === "pg"
    ? Storage.layerPg({
        url: storage.url,
        schema: storage.schema,
        maxConnections: 4,
        applicationName: `${storage.appName}-${role}`
      })
    : Storage.layerSqlite({ filename: storage.filename })

/** The environment and options a `baton` CLI process needs to open this storage. */
export const cliStorage = (storage: ChaosStorage): { env: Record<string, string>; args: ReadonlyArray<string> } =>
  storage.kind === "pg"
    ? {
        env: { DATABASE_URL: storage.url, BATON_PG_SCHEMA: storage.schema, PGAPPNAME: storage.appName },
        args: []
      }
    : { env: {}, args: ["--db", storage.filename] }
