/**
 * Builds `dist/` when it is older than `src/` (the CLI tests spawn `dist/bin.js`, as a user runs it; the package test
 * packs it). Checks once whether Postgres is reachable. Postgres suites run when it is, and are skipped LOUDLY when it is not
 * — unless BATON_REQUIRE_PG=1, which turns the skip into a failure (CI sets it).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import pg from "pg"
import type { TestProject } from "vitest/node"

export const pgUrl = process.env.BATON_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const reachable = async (): Promise<boolean> => {
  const client = new pg.Client({ connectionString: pgUrl, connectionTimeoutMillis: 3000 })
  try {
    await client.connect()
    await client.query("SELECT 1")
    return true
  } catch {
    return false
  } finally {
    await client.end().catch(() => undefined)
  }
}

const dropTestSchemas = async () => {
  const client = new pg.Client({ connectionString: pgUrl, connectionTimeoutMillis: 3000 })
  try {
    await client.connect()
    const { rows } = await client.query<{ nspname: string }>(
      "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bt\\_%'"
    )
    // Only stale schemas: other test runs may be using theirs right now (several runs share this database).
    // Names are bt_<pid>_<Date.now() in base 36>_<n> (test/support/backends.ts), but some tests prefix a word
    // (bt_cb_<pid>_<ts>_<n>, bt_cli_<pid>_<ts>): the creation time is whichever part decodes to a plausible recent
    // time. (Reading only the third part took a pid for the time, so every concurrent run dropped those schemas as
    // "stale" while their tests used them.)
    const stale = (name: string) => {
      const now = Date.now()
      const times = name
        .split("_")
        .map((part) => parseInt(part, 36))
        .filter((t) => Number.isFinite(t) && t > Date.UTC(2020, 0, 1) && t < now + 86_400_000)
      return times.length === 0 || now - Math.max(...times) > 60 * 60_000
    }
    for (const row of rows) {
      if (stale(row.nspname)) await client.query(`DROP SCHEMA IF EXISTS "${row.nspname}" CASCADE`)
    }
  } catch {
    // best effort
  } finally {
    await client.end().catch(() => undefined)
  }
}

const root = path.resolve(import.meta.dirname, "..")

const newestMtime = (dir: string): number => {
  let newest = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : fs.statSync(full).mtimeMs)
  }
  return newest
}

/** `npm run build` (tsc -p tsconfig.build.json) unless dist/ is newer than every file under src/. */
const buildWhenStale = () => {
  const built = path.join(root, "dist", "bin.js")
  const builtAt = fs.existsSync(built) ? fs.statSync(built).mtimeMs : 0
  if (builtAt > newestMtime(path.join(root, "src"))) return
  execFileSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], {
    cwd: root,
    stdio: "inherit"
  })
  // tsc does not rewrite unchanged outputs: mark the build as fresh.
  const now = new Date()
  fs.utimesSync(built, now, now)
}

export default async function setup(project: TestProject) {
  buildWhenStale()
  const ok = await reachable()
  if (!ok) {
    if (process.env.BATON_REQUIRE_PG === "1") {
      throw new Error(`BATON_REQUIRE_PG=1 but Postgres is not reachable at ${pgUrl}`)
    }
    const bar = "!".repeat(78)
    console.warn(`\n${bar}\n!! Postgres is NOT reachable at ${pgUrl}\n!! ALL POSTGRES TESTS ARE SKIPPED.`)
    console.warn(`!! Start it (pg_ctlcluster ... main start) or set BATON_TEST_PG_URL.\n${bar}\n`)
  } else {
    await dropTestSchemas()
  }
  project.provide("pgAvailable", ok)
  project.provide("pgUrl", pgUrl)
  return async () => {
    if (ok && process.env.BATON_KEEP_TEST_SCHEMAS !== "1") await dropTestSchemas()
  }
}

declare module "vitest" {
  export interface ProvidedContext {
    pgAvailable: boolean
    pgUrl: string
  }
}
