/**
 * The CLI's output through pipes, as a shell user runs it (real processes, real files, `dist/bin.js`):
 * - `baton export` of a run bigger than 1 MB piped to `cat` equals `--out` byte for byte (nothing cut at 64 KiB when
 *   the process exits before stdout drained);
 * - a reader that closes the pipe early (`| head -1`) ends baton quietly with status 0, no stack trace;
 * - read-only commands (`status`, `export`, `dashboard`) refuse a SQLite file that does not exist, creating nothing;
 * - `--log-level` / `--log-format json` are global (before or after the subcommand), JSON log lines parse, and logs go
 *   to stderr (stdout stays the command's output);
 * - a task that goes dead logs one warning with its id, name and error at the default level.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { AlwaysFails } from "./fixtures/dead-task.js"
import { bin, root, startCli } from "./support/cli.js"

const sh = (script: string, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn("bash", ["-c", script], { cwd: root, env: { ...process.env, BATON: bin, ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

// Documents with many distinct headings and links: each exports to tens of KB of JSON.
const writeCorpus = (dir: string, documents: number) => {
  fs.mkdirSync(dir, { recursive: true })
  for (let d = 0; d < documents; d++) {
    const lines = [`# Document ${d}`]
    for (let i = 0; i < 250; i++) {
      lines.push(`## Section ${d}.${i} about pipes and drains`, `See [ref ${i}](https://example.com/${d}/${i}/page).`)
    }
    fs.writeFileSync(path.join(dir, `doc-${d}.md`), lines.join("\n\n") + "\n")
  }
}

let dir: string
let db: string

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-cli-output-"))
  db = path.join(dir, "baton.db")
  writeCorpus(path.join(dir, "corpus"), 48)
  const run = await sh(`node "$BATON" run extract "${dir}/corpus" --db "${db}" --run-id big --batch-size 24`)
  assert.strictEqual(run.code, 0, run.stderr)
}, 120_000)

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

describe("baton output through pipes", () => {
  it("export of a run over 1 MB through `| cat` equals --out byte for byte", async () => {
    const [piped, out] = await Promise.all([
      sh(`set -o pipefail; node "$BATON" export big --db "${db}" | cat > "${dir}/piped.jsonl"`),
      sh(`node "$BATON" export big --db "${db}" --out "${dir}/out.jsonl"`)
    ])
    assert.strictEqual(piped.code, 0, piped.stderr)
    assert.strictEqual(out.code, 0, out.stderr)
    const viaPipe = fs.readFileSync(path.join(dir, "piped.jsonl"))
    const viaFile = fs.readFileSync(path.join(dir, "out.jsonl"))
    assert.isAbove(viaFile.length, 1024 * 1024)
    assert.strictEqual(viaPipe.length, viaFile.length)
    assert.isTrue(viaPipe.equals(viaFile))
    assert.strictEqual(viaFile.toString().trimEnd().split("\n").length, 48)
  })

  it("a reader that closes early (`| head -1`) ends baton with status 0 and no stack trace", async () => {
    const [status, exported] = await Promise.all([
      sh(`node "$BATON" status --db "${db}" | head -1; echo "baton exited $\{PIPESTATUS[0]}" >&2`),
      sh(`node "$BATON" export big --db "${db}" | head -c 100 > /dev/null; echo "baton exited $\{PIPESTATUS[0]}" >&2`)
    ])
    for (const result of [status, exported]) {
      assert.match(result.stderr, /baton exited 0\n$/)
      assert.notMatch(result.stderr, /EPIPE|Error|\n\s+at /)
    }
    assert.strictEqual(status.stdout.split("\n").filter((line) => line !== "").length, 1)
  })

  it("status, export and dashboard refuse a missing SQLite file with one line, creating nothing", async () => {
    const missing = path.join(dir, "typo", "x.db")
    const results = await Promise.all([
      sh(`node "$BATON" status --db "${missing}"`),
      sh(`node "$BATON" export big --db "${missing}"`),
      sh(`node "$BATON" dashboard --port 0 --db "${missing}"`)
    ])
    for (const result of results) {
      assert.strictEqual(result.code, 1, result.stderr)
      assert.strictEqual(result.stdout, "")
      const lines = result.stderr.split("\n").filter((line) => line !== "")
      assert.strictEqual(lines.length, 1, result.stderr)
      assert.match(lines[0]!, /^baton: no database at .*typo\/x\.db/)
    }
    assert.isFalse(fs.existsSync(path.join(dir, "typo")))
  })

  it("--log-level and --log-format json work before and after the subcommand; JSON log lines parse", async () => {
    const [before, after, bad] = await Promise.all([
      sh(`node "$BATON" --log-level debug --log-format json status --json --db "${db}"`),
      sh(`node "$BATON" status --json --db "${db}" --log-format=json --log-level=debug`),
      sh(`node "$BATON" --log-level loud status --db "${db}"`)
    ])
    for (const result of [before, after]) {
      assert.strictEqual(result.code, 0, result.stderr)
      // stdout is the command's output alone.
      assert.strictEqual((JSON.parse(result.stdout) as { runs: Array<unknown> }).runs.length, 1)
      const lines = result.stderr.split("\n").filter((line) => line !== "")
      assert.isAbove(lines.length, 0, "debug logs expected")
      for (const line of lines) {
        const entry = JSON.parse(line) as { logLevel: string; message: unknown }
        assert.isString(entry.logLevel)
        assert.property(entry, "message")
      }
      assert.isTrue(lines.some((line) => (JSON.parse(line) as { logLevel: string }).logLevel === "DEBUG"))
    }
    assert.strictEqual(bad.code, 2)
    assert.match(bad.stderr, /^baton: --log-level must be one of/)
  })

  it("a task that goes dead logs one warning with its id, name and error at the default level", async () => {
    const taskDb = path.join(dir, "dead.db")
    const taskId = await Effect.runPromise(
      Effect.flatMap(TaskQueue, (queue) => queue.enqueue(AlwaysFails, { n: 1 }, { maxAttempts: 1 })).pipe(
        Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerSqlite({ filename: taskDb }))))
      )
    )
    const running = startCli([
      "worker",
      "--db",
      taskDb,
      "--tasks",
      "test/fixtures/dead-task.ts",
      "--log-format",
      "json"
    ])
    await running.waitFor(/"outcome":"dead"/)
    running.child.kill("SIGINT")
    const worker = await running.done
    assert.strictEqual(worker.code, 130)
    const warnings = worker.stderr
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { logLevel: string; message: string; annotations: Record<string, unknown> })
      .filter((entry) => entry.logLevel === "WARN")
    const dead = warnings.filter((entry) => entry.annotations.outcome === "dead")
    assert.strictEqual(dead.length, 1, worker.stderr)
    assert.strictEqual(dead[0]!.annotations.task, "always-fails")
    assert.strictEqual(dead[0]!.annotations.taskId, taskId)
    assert.match(String(dead[0]!.annotations.error), /no luck/)
    assert.match(dead[0]!.message, /is dead after 1 attempts/)
  })
})
