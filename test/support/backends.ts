/**
 * The backends every conformance suite runs against: memory (SQLite :memory:), a SQLite file, and Postgres (a
 * fresh schema per layer build, so test files and tests run in parallel without sharing tables).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { inject } from "vitest"
import * as Storage from "../../src/Storage.js"

export type BackendName = "memory" | "sqlite" | "pg"

export interface Backend {
  readonly name: BackendName
  /** A fresh, empty storage layer each time it is called. */
  readonly storage: () => Layer.Layer<import("@effect/sql/SqlClient").SqlClient | Storage.Storage, Storage.StorageError>
  /** Settings another OS process needs to open the same storage (see test/support/env.ts). */
  readonly describe: () => BackendDescriptor
}

/** Serializable description of one storage instance (passed to child processes as JSON). */
export type BackendDescriptor =
  | { readonly kind: "sqlite"; readonly filename: string }
  | { readonly kind: "pg"; readonly url: string; readonly schema: string }

let counter = 0
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

export const pgAvailable = (): boolean => inject("pgAvailable")
export const pgUrl = (): string => inject("pgUrl")

export const tempSqliteFile = (): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-test-"))
  return path.join(dir, "baton.db")
}

/** A storage instance that can be shared with child processes; returns its layer and descriptor. */
export const sharedStorage = (
  kind: "sqlite" | "pg"
): { layer: Backend["storage"] extends () => infer L ? L : never; descriptor: BackendDescriptor } => {
  if (kind === "sqlite") {
    const filename = tempSqliteFile()
    return { layer: Storage.layerSqlite({ filename }), descriptor: { kind: "sqlite", filename } }
  }
  const schema = unique("bt")
  return {
    layer: Storage.layerPg({ url: pgUrl(), schema, maxConnections: 5 }),
    descriptor: { kind: "pg", url: pgUrl(), schema }
  }
}

/** Opens the storage a descriptor names (also usable in a child process: see process.ts). */
export { storageFromDescriptor } from "./process.js"

export const memory: Backend = {
  name: "memory",
  storage: () => Storage.layerMemory,
  describe: () => {
    throw new Error("the memory backend cannot be shared with another process")
  }
}

export const sqlite: Backend = {
  name: "sqlite",
  storage: () => Storage.layerSqlite({ filename: tempSqliteFile() }),
  describe: () => ({ kind: "sqlite", filename: tempSqliteFile() })
}

export const postgres: Backend = {
  name: "pg",
  storage: () => Storage.layerPg({ url: pgUrl(), schema: unique("bt"), maxConnections: 5 }),
  describe: () => ({ kind: "pg", url: pgUrl(), schema: unique("bt") })
}

/** The backends to run a suite against (Postgres only when reachable; globalSetup warns loudly otherwise). */
export const all = (): ReadonlyArray<Backend> => (pgAvailable() ? [memory, sqlite, postgres] : [memory, sqlite])

/** Polls `check` until it returns true or the deadline passes (then fails with `message`). */
export const eventually = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  message: string,
  timeoutMs = 15_000
): Effect.Effect<void, E | Error, R> =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out waiting for: ${message}`))
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 5)))
    }
  })
