/**
 * Which storage the CLI uses, and every Baton service on it (with the reference workflow, which the CLI runs).
 *
 * Postgres when `--database-url` is given or `DATABASE_URL` is set (with `BATON_PG_SCHEMA` as an optional schema, and
 * `PGAPPNAME` as the connections' `application_name`, default `baton-cli`; the LISTEN connection adds `-listener`);
 * otherwise the embedded SQLite file `--db` (default `$BATON_DB`, else `.baton/baton.db` under the current directory,
 * whose directory is created).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Baton from "../Baton.js"
import * as ExtractionWorkflow from "../extraction/ExtractionWorkflow.js"
import * as Storage from "../Storage.js"

/** The default SQLite file, relative to the current directory. */
export const defaultDbFile = path.join(".baton", "baton.db")

/** What the storage options of a command resolve to. */
export type StorageChoice =
  | { readonly _tag: "Sqlite"; readonly filename: string }
  | { readonly _tag: "Pg"; readonly url: string; readonly schema: string | undefined }

/** Resolves `--db` / `--database-url` and the environment into a storage choice. */
export const chooseStorage = (options: {
  readonly db: Option.Option<string>
  readonly databaseUrl: Option.Option<string>
}): StorageChoice => {
  const url = Option.getOrUndefined(options.databaseUrl) ?? nonEmpty(process.env.DATABASE_URL)
  if (url !== undefined && Option.isNone(options.db)) {
    return { _tag: "Pg", url, schema: nonEmpty(process.env.BATON_PG_SCHEMA) }
  }
  return {
    _tag: "Sqlite",
    filename: Option.getOrUndefined(options.db) ?? nonEmpty(process.env.BATON_DB) ?? defaultDbFile
  }
}

const nonEmpty = (value: string | undefined) => (value === undefined || value.trim() === "" ? undefined : value)

/** A short description for headers: `SQLite .baton/baton.db`, `Postgres 127.0.0.1:5432/test`. */
export const describeStorage = (choice: StorageChoice): string => {
  if (choice._tag === "Sqlite") return `SQLite ${choice.filename}`
  try {
    const url = new URL(choice.url)
    return `Postgres ${url.hostname}:${url.port || "5432"}${url.pathname}${choice.schema ? ` (schema ${choice.schema})` : ""}`
  } catch {
    return "Postgres"
  }
}

/** The storage layer of a choice (creating the SQLite file's directory). */
export const storageLayer = (
  choice: StorageChoice
): Layer.Layer<SqlClient.SqlClient | Storage.Storage, Storage.StorageError> =>
  choice._tag === "Pg"
    ? Storage.layerPg({
        url: choice.url,
        schema: choice.schema,
        applicationName: nonEmpty(process.env.PGAPPNAME) ?? "baton-cli"
      })
    : Layer.unwrapEffect(
        Effect.try({
          try: () => {
            if (choice.filename !== ":memory:")
              fs.mkdirSync(path.dirname(path.resolve(choice.filename)), { recursive: true })
            return Storage.layerSqlite({ filename: choice.filename })
          },
          catch: (cause) =>
            new Storage.StorageError({
              message: `cannot create the directory of ${choice.filename}: ${(cause as Error).message}`,
              cause
            })
        })
      )

/** Every service the CLI uses: Baton's and the reference workflow. */
export type Services = Baton.Services | ExtractionWorkflow.ExtractionWorkflow

/** Baton's services (with the Reconciler) on a storage layer: `Baton.layerWith`. */
export const coreLayer = Baton.layerWith

/** Everything the CLI uses, with the Reconciler running in every CLI process: `Baton.layerWith` and the workflow. */
export const servicesLayer = <E, R>(
  storage: Layer.Layer<SqlClient.SqlClient | Storage.Storage, E, R>
): Layer.Layer<Services, E, R> => ExtractionWorkflow.layer.pipe(Layer.provideMerge(Baton.layerWith(storage)))
