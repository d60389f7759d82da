/**
 * The `baton` CLI end to end, spawned as a user runs it (`node dist/bin.js …`), on a temporary SQLite file (and on
 * Postgres with separate `baton worker` processes when it is reachable):
 * - bad arguments exit 2 with one line on stderr; runtime errors exit 1 with one line, a stack trace only with
 *   `--verbose`;
 * - `run extract` prints a progress line per confirmed batch and the summary; `status --json` has the documented
 *   shape; `export` writes exactly the pure extraction of the corpus as JSON Lines or CSV;
 * - Ctrl-C stops a run cleanly (exit 130) with its checkpoint pending, and `resume` finishes it;
 * - SIGKILL at random points, repeated, then `resume`: the exported results equal an uninterrupted run's.
 *   The kill points come from a seeded generator; the seed is printed, and BATON_TEST_SEED replays it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { extractDocument, mergeBatch } from "../src/extraction/Extract.js"
import { corpusDocuments, writeCorpus } from "./fixtures/workflow-corpus.js"
import * as Backends from "./support/backends.js"
import { exitOrKill, type Result, seededRandom, startCli } from "./support/cli.js"

const start = startCli

const baton = (args: ReadonlyArray<string>, env: Record<string, string>) => start(args, env).done

const stderrLines = (result: Result) => result.stderr.split("\n").filter((line) => line.trim() !== "")

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "baton-cli-"))

const corpusSize = 22
const batchSize = 4
const totalBatches = Math.ceil(corpusSize / batchSize)

// The corpus as the CLI sees it: paths relative to the directory, sorted by code unit.
const sortedDocuments = [...corpusDocuments(corpusSize)].sort((a, b) =>
  a.path < b.path ? -1 : a.path > b.path ? 1 : 0
)
const expectedExtracts = sortedDocuments.map((doc) => extractDocument(doc.path, doc.content))

const parseJsonl = (text: string) =>
  text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as Record<string, unknown>)

/** Export lines without the run id, for comparing two runs. */
const withoutRunId = (records: ReadonlyArray<Record<string, unknown>>) => records.map(({ runId: _, ...rest }) => rest)

const extractsOf = (count: number) =>
  [...corpusDocuments(count)]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((doc) => extractDocument(doc.path, doc.content))

const assertExportIsExact = (jsonl: string, runId: string, size = batchSize, expected = expectedExtracts) => {
  const records = parseJsonl(jsonl)
  assert.strictEqual(records.length, expected.length)
  records.forEach((record, i) => {
    const { batchIndex, docIndex, runId: id, ...extract } = record
    assert.strictEqual(id, runId)
    assert.strictEqual(docIndex, i)
    assert.strictEqual(batchIndex, Math.floor(i / size))
    assert.deepStrictEqual(extract, { ...expected[i] })
  })
}

// The tests are independent (each has its own directory and database, the Postgres one its own schema): they run
// concurrently, so one test's child processes use the CPU while another's wait (leases, kill points, Postgres).
describe.concurrent("baton CLI", () => {
  it("bad arguments exit 2 with one line; errors exit 1 with one line; --verbose adds the trace", async () => {
    const env = { BATON_DB: path.join(tempDir(), "baton.db") }
    const usage = await Promise.all([
      baton(["frobnicate"], env),
      baton(["run", "extract"], env),
      baton(["status", "--jsn"], env),
      baton(["export"], env),
      baton(["demo", "--batch-size", "0"], env),
      baton(["export", "x", "--format", "xml"], env)
    ])
    for (const result of usage) {
      assert.strictEqual(result.code, 2, result.stderr)
      const lines = stderrLines(result)
      assert.strictEqual(lines.length, 1, result.stderr)
      assert.match(lines[0]!, /^baton: /)
      assert.strictEqual(result.stdout, "")
    }
    assert.match(usage[0]!.stderr, /Invalid subcommand/)
    assert.match(usage[1]!.stderr, /Missing argument <dir>/)

    // `export` only reads: it refuses a database that does not exist (test/cliOutput.test.ts); an empty file is an
    // empty database.
    fs.writeFileSync(env.BATON_DB, "")
    const [missingRun, missingDir, badPg, verbose] = await Promise.all([
      baton(["export", "nope"], env),
      baton(["run", "extract", "/nonexistent/baton"], env),
      baton(["status", "--database-url", "postgres://nobody@127.0.0.1:1/nothing"], env),
      baton(["export", "nope", "--verbose"], env)
    ])
    for (const result of [missingRun, missingDir, badPg]) {
      assert.strictEqual(result.code, 1, result.stderr)
      const lines = stderrLines(result)
      assert.strictEqual(lines.length, 1, result.stderr)
      assert.notMatch(result.stderr, /\n\s+at /)
    }
    assert.strictEqual(stderrLines(missingRun)[0], 'baton: no run with id "nope"')
    assert.strictEqual(stderrLines(missingDir)[0], "baton: no such directory: /nonexistent/baton")
    assert.match(stderrLines(badPg)[0]!, /^baton: cannot connect to Postgres at 127\.0\.0\.1:1\/nothing/)
    assert.strictEqual(verbose.code, 1)
    assert.match(verbose.stderr, /baton: no run with id "nope"/)
    assert.match(verbose.stderr, /\n\s+at /)
  }, 120_000)

  it("worker --tasks: a missing module or one that exports no task is refused with one line", async () => {
    const env = { BATON_DB: path.join(tempDir(), "baton.db") }
    const [missing, empty] = await Promise.all([
      baton(["worker", "--tasks", "test/fixtures/nope.ts"], env),
      baton(["worker", "--tasks", "test/fixtures/workflow-corpus.ts"], env)
    ])
    assert.strictEqual(missing.code, 1, missing.stderr)
    assert.deepStrictEqual(stderrLines(missing), ["baton: --tasks: no such file: test/fixtures/nope.ts"])
    assert.strictEqual(empty.code, 1, empty.stderr)
    assert.deepStrictEqual(stderrLines(empty), [
      "baton: --tasks: test/fixtures/workflow-corpus.ts exports no Task definition"
    ])
  }, 120_000)

  it("run extract → progress lines and summary; status --json shape; export as JSON Lines and CSV", async () => {
    const dir = tempDir()
    const corpus = writeCorpus(path.join(dir, "corpus"), corpusSize)
    const env = { BATON_DB: path.join(dir, "baton.db") }
    const run = await baton(["run", "extract", corpus, "--batch-size", String(batchSize), "--run-id", "cli1"], env)
    assert.strictEqual(run.code, 0, run.stderr)
    const progress = run.stdout.split("\n").filter((line) => line.startsWith("batch "))
    assert.deepStrictEqual(
      progress.map((line) => line.split(" confirmed")[0]),
      Array.from({ length: totalBatches }, (_, i) => `batch ${i + 1}/${totalBatches}`)
    )
    assert.match(run.stdout, /│ documents\s+│ 22 \(/)
    assert.match(run.stdout, /│ state\s+│ succeeded/)

    const status = await baton(["status", "--json"], env)
    assert.strictEqual(status.code, 0, status.stderr)
    const report = JSON.parse(status.stdout) as {
      runs: Array<Record<string, unknown>>
      pendingCheckpoints: Array<unknown>
      chords: Record<string, number>
      tasks: Record<string, number>
    }
    assert.strictEqual(report.runs.length, 1)
    assert.deepInclude(report.runs[0]!, {
      id: "cli1",
      state: "succeeded",
      completedBatches: totalBatches,
      totalBatches,
      documentsDone: corpusSize,
      totalDocuments: corpusSize
    })
    assert.deepStrictEqual(report.pendingCheckpoints, [])
    assert.deepStrictEqual(report.chords, { running: 0, completed: totalBatches, failed: 0, cancelled: 0 })
    assert.strictEqual(report.tasks.succeeded, corpusSize + totalBatches)
    assert.strictEqual(report.tasks.pending, 0)

    const [jsonl, csv, batches, toFile] = await Promise.all([
      baton(["export", "cli1"], env),
      baton(["export", "cli1", "--format", "csv"], env),
      baton(["export", "cli1", "--what", "batches"], env),
      baton(["export", "cli1", "--format", "csv", "--out", path.join(dir, "out.csv")], env)
    ])
    assert.strictEqual(jsonl.code, 0, jsonl.stderr)
    assertExportIsExact(jsonl.stdout, "cli1")
    assert.strictEqual(csv.code, 0, csv.stderr)
    const csvLines = csv.stdout.split("\r\n").filter((line) => line !== "")
    assert.strictEqual(
      csvLines[0],
      "runId,batchIndex,docIndex,path,format,bytes,title,wordCount,headings,links,emails,dates,codeLanguages,keywords"
    )
    assert.strictEqual(csvLines.length, corpusSize + 1)
    assert.isTrue(csvLines[1]!.startsWith(`cli1,0,0,${sortedDocuments[0]!.path},`))
    assert.deepStrictEqual(
      parseJsonl(batches.stdout).map(({ batchIndex: _b, runId: _r, ...summary }) => summary),
      Array.from({ length: totalBatches }, (_, b) => ({
        ...mergeBatch(expectedExtracts.slice(b * batchSize, (b + 1) * batchSize))
      }))
    )
    assert.strictEqual(toFile.code, 0, toFile.stderr)
    assert.strictEqual(fs.readFileSync(path.join(dir, "out.csv"), "utf8"), csv.stdout)
    assert.match(toFile.stderr, /wrote 22 documents of run cli1/)
  }, 180_000)

  it("Ctrl-C stops cleanly with the batch's checkpoint pending; resume finishes the run", async () => {
    const dir = tempDir()
    const corpus = writeCorpus(path.join(dir, "corpus"), corpusSize)
    const env = { BATON_DB: path.join(dir, "baton.db") }
    // No workers: batch 0 stays in flight until interrupted.
    const running = start(
      ["run", "extract", corpus, "--batch-size", String(batchSize), "--run-id", "cli2", "--workers", "0"],
      env
    )
    await running.waitFor("workers")
    let pending: Array<Record<string, unknown>> = []
    const deadline = Date.now() + 60_000
    while (pending.length === 0) {
      if (Date.now() > deadline) throw new Error("no pending checkpoint appeared")
      const status = await baton(["status", "--json"], env)
      assert.strictEqual(status.code, 0, status.stderr)
      pending = (JSON.parse(status.stdout) as { pendingCheckpoints: Array<Record<string, unknown>> }).pendingCheckpoints
    }
    assert.deepInclude(pending[0]!, { runId: "cli2", batchIndex: 0, scope: "cli2" })
    running.child.kill("SIGINT")
    const stopped = await running.done
    assert.strictEqual(stopped.code, 130, stopped.stderr)
    assert.match(stopped.stderr, /interrupted: run cli2 stopped cleanly; continue with: baton resume cli2/)
    assert.notMatch(stopped.stderr, /\n\s+at /)

    const resumed = await baton(["resume", "cli2"], env)
    assert.strictEqual(resumed.code, 0, resumed.stderr)
    assert.match(resumed.stdout, /Resuming run cli2/)
    const exported = await baton(["export", "cli2"], env)
    assertExportIsExact(exported.stdout, "cli2")
  }, 180_000)

  it("SIGKILL at random points, repeated, then resume: exactly the results of an uninterrupted run", async () => {
    const dir = tempDir()
    // Many small batches, so that every process lives long enough to be killed mid-run at a random point.
    const documents = 160
    const corpus = writeCorpus(path.join(dir, "corpus"), documents)
    const env = { BATON_DB: path.join(dir, "baton.db") }
    // The uninterrupted reference run has a database of its own, so that it runs while the victim is being killed.
    const refEnv = { BATON_DB: path.join(dir, "reference.db") }
    const size = 1
    const common = ["--batch-size", String(size), "--lease", "1"]
    const reference = baton(["run", "extract", corpus, ...common, "--run-id", "ref"], refEnv)
    const referenceExports = reference.then((result) =>
      Promise.all([
        result,
        baton(["export", "ref"], refEnv),
        baton(["export", "ref", "--what", "batches"], refEnv)
      ] as const)
    )

    // Seeded kill points, the seed printed first, so that a failure can be replayed: BATON_TEST_SEED=<seed>.
    const { random, seed } = seededRandom("SIGKILL delays")
    let kills = 0
    let finished = false
    // Once the run exists it stays: asking (`baton export victim`) is needed only until a process has confirmed a batch.
    let known = false
    const victimExists = async () => (known ||= (await baton(["export", "victim"], env)).code === 0)
    const killedAt: Array<string> = []
    for (let i = 0; i < 10 && !finished; i++) {
      const exists = i > 0 && (await victimExists())
      const args = exists
        ? ["resume", "victim", "--lease", "1"]
        : ["run", "extract", corpus, ...common, "--run-id", "victim"]
      const running = start(args, env)
      await running.waitFor("workers")
      // A random point: before the run exists, mid-batch, between save and progress, …
      const delay = Math.floor(random() * 400)
      const { killed, result } = await exitOrKill(running, delay)
      if (!killed) {
        finished = result.code === 0
        continue
      }
      assert.strictEqual(result.code, "SIGKILL")
      kills++
      const confirmed = result.stdout
        .split("\n")
        .filter((line) => line.startsWith("batch "))
        .at(-1)
      if (confirmed !== undefined) known = true
      killedAt.push(`${args[0]} +${delay}ms: ${confirmed?.split(" · ")[0] ?? "no batch confirmed yet"}`)
    }
    assert.isAtLeast(kills, 5, `seed ${seed}`)
    console.log(`SIGKILLed ${kills} times (seed ${seed}):\n  ${killedAt.join("\n  ")}`)
    if (!finished) {
      const exists = await victimExists()
      const last = await baton(
        exists ? ["resume", "victim", "--lease", "1"] : ["run", "extract", corpus, ...common, "--run-id", "victim"],
        env
      )
      assert.strictEqual(last.code, 0, last.stderr)
    }
    const [victimDocs, victimBatches, status, [referenceResult, referenceDocs, referenceBatches]] = await Promise.all([
      baton(["export", "victim"], env),
      baton(["export", "victim", "--what", "batches"], env),
      baton(["status", "--json"], env),
      referenceExports
    ])
    assert.strictEqual(referenceResult.code, 0, referenceResult.stderr)
    assert.deepStrictEqual(
      withoutRunId(parseJsonl(victimDocs.stdout)),
      withoutRunId(parseJsonl(referenceDocs.stdout)),
      `seed ${seed}`
    )
    assert.deepStrictEqual(
      withoutRunId(parseJsonl(victimBatches.stdout)),
      withoutRunId(parseJsonl(referenceBatches.stdout)),
      `seed ${seed}`
    )
    assertExportIsExact(referenceDocs.stdout, "ref", size, extractsOf(documents))
    const victim = (JSON.parse(status.stdout) as { runs: Array<Record<string, unknown>> }).runs.find(
      (run) => run.id === "victim"
    )
    assert.deepInclude(victim!, { state: "succeeded", completedBatches: Math.ceil(documents / size) })
  }, 600_000)

  if (Backends.pgAvailable()) {
    it("Postgres: a run done by two `baton worker` processes; Ctrl-C stops the workers gracefully", async () => {
      const dir = tempDir()
      const corpus = writeCorpus(path.join(dir, "corpus"), corpusSize)
      const schema = `bt_cli_${process.pid}_${Date.now().toString(36)}`
      const env = { DATABASE_URL: Backends.pgUrl(), BATON_PG_SCHEMA: schema }
      const workers = [start(["worker", "--concurrency", "4"], env), start(["worker", "--concurrency", "4"], env)]
      await Promise.all(workers.map((worker) => worker.waitFor("Ctrl-C to stop")))
      const run = await baton(
        ["run", "extract", corpus, "--batch-size", String(batchSize), "--run-id", "pg1", "--workers", "0"],
        env
      )
      assert.strictEqual(run.code, 0, run.stderr)
      assert.match(run.stdout, /storage\s+Postgres 127\.0\.0\.1:5432\/test \(schema bt_cli_/)
      const exported = await baton(["export", "pg1"], env)
      assertExportIsExact(exported.stdout, "pg1")
      for (const worker of workers) worker.child.kill("SIGINT")
      const results = await Promise.all(workers.map((worker) => worker.done))
      let processed = 0
      for (const result of results) {
        assert.strictEqual(result.code, 130, result.stderr)
        const match = /stopped: (\d+) task outcomes recorded/.exec(result.stderr)
        assert.isNotNull(match, result.stderr)
        processed += Number(match![1])
      }
      assert.strictEqual(processed, corpusSize + totalBatches)
    }, 180_000)
  }
})
