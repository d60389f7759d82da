/**
 * The package as an app installs it (real processes, real files): `npm pack`, then a fresh temporary app installs the
 * tarball with only the peers README's install line names for SQLite (no pg, no @effect/sql-pg, no @types/pg, no tsx)
 * and
 * - runs a plain `node` ES module that enqueues a task, runs a worker and prints the result on SQLite (and gets a
 *   StorageError naming the missing Postgres driver from `Baton.layerPg`);
 * - type-checks a small TypeScript app (strict, noPropertyAccessFromIndexSignature) with moduleResolution nodenext and
 *   bundler;
 * - runs the installed `baton` bin (`--version`).
 * `npm install` goes to the registry (the npm cache makes it fast); the peers' versions are the ones this repository
 * was tested with.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { root } from "./support/cli.js"

const run = (file: string, args: ReadonlyArray<string>, cwd: string, timeout = 120_000) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { cwd, timeout, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr })
    )
  })

const installed = (name: string) =>
  (JSON.parse(fs.readFileSync(path.join(root, "node_modules", name, "package.json"), "utf8")) as { version: string })
    .version

// README's install line for SQLite.
const peers = [
  "effect",
  "@effect/platform",
  "@effect/platform-node",
  "@effect/sql",
  "@effect/experimental",
  "@effect/sql-sqlite-node"
]

let app: string

beforeAll(async () => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), "baton-package-"))
  // dist/ is fresh (test/globalSetup.ts): pack without running prepack's build again.
  const packed = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", app], root)
  assert.strictEqual(packed.code, 0, packed.stderr)
  const [{ filename }] = JSON.parse(packed.stdout) as [{ filename: string }]
  fs.writeFileSync(
    path.join(app, "package.json"),
    JSON.stringify({ name: "baton-package-test-app", private: true, type: "module" })
  )
  const install = await run(
    "npm",
    [
      "install",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      // better-sqlite3 has no prebuilt binary to download here and compiling it takes minutes on a loaded machine:
      // skip install scripts and reuse this checkout's build of the same version (below).
      "--ignore-scripts",
      path.join(app, filename),
      ...peers.map((name) => `${name}@${installed(name)}`),
      `@types/node@${installed("@types/node")}`
    ],
    app,
    240_000
  )
  assert.strictEqual(install.code, 0, install.stderr)
  const sqlite = (base: string) => path.join(base, "node_modules/better-sqlite3")
  const version = (dir: string) =>
    (JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { version: string }).version
  if (version(sqlite(app)) === version(sqlite(root))) {
    fs.cpSync(path.join(sqlite(root), "build"), path.join(sqlite(app), "build"), { recursive: true })
  } else {
    const rebuilt = await run("npm", ["rebuild", "better-sqlite3"], app, 600_000)
    assert.strictEqual(rebuilt.code, 0, rebuilt.stderr)
  }
  for (const file of ["app.mjs", "app.ts"]) {
    fs.copyFileSync(path.join(root, "test/fixtures/package-app", file), path.join(app, file))
  }
}, 300_000)

afterAll(() => fs.rmSync(app, { recursive: true, force: true }))

describe("the packed package in a fresh app", () => {
  it("installs no driver it was not asked for, and ships dist/ without sources or tests", () => {
    for (const absent of ["pg", "@effect/sql-pg", "@types/pg", "tsx", "esbuild"]) {
      assert.isFalse(fs.existsSync(path.join(app, "node_modules", absent)), `${absent} was installed`)
    }
    const pkg = path.join(app, "node_modules", "effect-baton")
    assert.deepStrictEqual(fs.readdirSync(pkg).sort(), ["LICENSE", "README.md", "dist", "docs", "package.json"])
    assert.isTrue(fs.existsSync(path.join(pkg, "dist", "index.d.ts")))
    assert.isFalse(fs.existsSync(path.join(pkg, "docs", "dashboard.png")))
    // No shipped declaration needs a driver's types (an app without @types/pg type-checks).
    const declarations = (dir: string): Array<string> =>
      fs
        .readdirSync(dir, { withFileTypes: true })
        .flatMap((entry) =>
          entry.isDirectory()
            ? declarations(path.join(dir, entry.name))
            : entry.name.endsWith(".d.ts")
              ? [path.join(dir, entry.name)]
              : []
        )
    for (const file of declarations(path.join(pkg, "dist"))) {
      assert.notMatch(fs.readFileSync(file, "utf8"), /from "pg"|import\("pg"\)|@effect\/sql-(pg|sqlite-node)/, file)
    }
  })

  it("a plain node ES module enqueues, runs a worker and prints the result on SQLite", async () => {
    const result = await run(process.execPath, ["app.mjs"], app, 60_000)
    assert.strictEqual(result.code, 0, result.stderr)
    assert.match(result.stdout, /^result \{"_id":"Option","_tag":"Some","value":42\} state succeeded$/m)
    assert.match(
      result.stdout,
      /^pg StorageError: the Postgres backend needs @effect\/sql-pg pg.*npm install @effect\/sql-pg pg$/m
    )
  })

  it("the installed bin runs with node", async () => {
    const result = await run(path.join(app, "node_modules/.bin/baton"), ["--version"], app)
    assert.strictEqual(result.code, 0, result.stderr)
    const own = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }
    assert.strictEqual(result.stdout.trim(), own.version)
  })

  for (const moduleResolution of ["nodenext", "bundler"] as const) {
    it(`a TypeScript app type-checks (moduleResolution ${moduleResolution}, strict, no @types/pg)`, async () => {
      const config = `tsconfig.${moduleResolution}.json`
      fs.writeFileSync(
        path.join(app, config),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: moduleResolution === "nodenext" ? "NodeNext" : "ESNext",
            moduleResolution,
            strict: true,
            noPropertyAccessFromIndexSignature: true,
            exactOptionalPropertyTypes: true,
            noUncheckedIndexedAccess: true,
            // As most apps do; the declarations Baton ships are checked for what matters here below (no `pg` types).
            skipLibCheck: true,
            noEmit: true,
            types: ["node"]
          },
          files: ["app.ts"]
        })
      )
      const tsc = path.join(root, "node_modules/typescript/bin/tsc")
      const result = await run(process.execPath, [tsc, "-p", config], app)
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
    }, 120_000)
  }
})
