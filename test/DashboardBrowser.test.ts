/**
 * `baton dashboard` end to end in real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core):
 * real `baton` child processes on a temporary SQLite file — a run waiting for workers, the dashboard (`--port 0`,
 * with a token), then a worker — and the page, which must show the run's progress advancing and a chord going from
 * pending to dispatched without a reload (Server-Sent Events), render a task named `<script>…` as text without
 * running it, and answer 401 without the token. Then SIGTERM stops the dashboard cleanly (with the page's event
 * stream still open); a dashboard with --allow-actions retries the dead task from its button; and a second dashboard
 * on a taken port exits 1 with a clear message.
 *
 * Without /usr/bin/chromium the test is skipped LOUDLY, except under CI=1 or BATON_REQUIRE_BROWSER=1, where it fails
 * (`.ci/run` installs chromium first).
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { chromium, type Browser } from "playwright-core"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { writeCorpus } from "./fixtures/workflow-corpus.js"
import { type Running, startCli } from "./support/cli.js"

const chromiumPath = "/usr/bin/chromium"
const haveChromium = fs.existsSync(chromiumPath)
const browserRequired = process.env.CI === "1" || process.env.CI === "true" || process.env.BATON_REQUIRE_BROWSER === "1"

if (!haveChromium && !browserRequired) {
  const bar = "!".repeat(78)
  console.warn(`\n${bar}\n!! ${chromiumPath} is missing: THE DASHBOARD BROWSER TEST IS SKIPPED.`)
  console.warn(
    `!! Install it (apt-get install -y chromium); CI=1 or BATON_REQUIRE_BROWSER=1 make this a failure.\n${bar}\n`
  )
}

const children: Array<ChildProcess> = []

const start = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Running => {
  const running = startCli(args, env)
  children.push(running.child)
  return running
}

afterAll(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
})

const xssName = '<script>window.__pwned = true</script><img src=x onerror="window.__pwned = true">'

/** Enqueues (from this process, on the same SQLite file) a task with a hostile name and payload, and kills it. */
const hostileDeadTask = (filename: string) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const queue = yield* TaskQueue
      const [id] = yield* queue.enqueueRaw([
        {
          name: xssName,
          payload: { html: '<img src=x onerror="window.__pwned = true">' },
          queue: "xss",
          maxAttempts: 1
        }
      ])
      yield* queue.claim({ queues: ["xss"], limit: 1, leaseMs: -1, workerId: "test" })
      yield* queue.reclaimExpired
      return id!
    }).pipe(Effect.provide(SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerSqlite({ filename })))))
  )

const launch = (): Promise<Browser> =>
  chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync"
    ]
  })

describe("baton dashboard in headless Chromium", () => {
  it.skipIf(!haveChromium && !browserRequired)(
    "live progress and chords over SSE, user data rendered as text, 401 without the token, clean SIGTERM",
    async () => {
      assert.isTrue(haveChromium, `${chromiumPath} is missing and CI=1 / BATON_REQUIRE_BROWSER=1 requires it`)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-dash-"))
      const db = path.join(dir, "baton.db")
      const corpus = writeCorpus(path.join(dir, "corpus"), 60)
      const token = "tok-" + Math.random().toString(36).slice(2)

      // A run with no workers: it records the run and its first chord, then waits.
      const run = start([
        "run",
        "extract",
        corpus,
        "--db",
        db,
        "--batch-size",
        "5",
        "--run-id",
        "e2e",
        "--workers",
        "0"
      ])
      await run.waitFor(/run\s+e2e · 12 batches/)
      const xssId = await hostileDeadTask(db)

      const dashboard = start(["dashboard", "--db", db, "--port", "0"], { BATON_DASHBOARD_TOKEN: token })
      const [, url] = (await dashboard.waitFor(/baton dashboard on (http:\/\/127\.0\.0\.1:\d+\/)/)) as unknown as [
        string,
        string
      ]
      assert.notInclude(dashboard.output.stdout, token)

      // Without the token: 401, for the API and the page.
      assert.strictEqual((await fetch(`${url}api/runs`)).status, 401)
      assert.strictEqual((await fetch(url)).status, 401)
      assert.strictEqual((await fetch(`${url}api/runs`, { headers: { authorization: `Bearer ${token}` } })).status, 200)

      const browser = await launch()
      try {
        const page = await browser.newPage()
        const pageErrors: Array<string> = []
        page.on("pageerror", (error) => pageErrors.push(String(error)))
        await page.goto(`${url}?token=${token}`)
        assert.strictEqual(new URL(page.url()).search, "", "the token is dropped from the address bar")
        const runRow = page.locator('#runs tr[data-run="e2e"]')
        await runRow.waitFor()
        await page.locator("#live", { hasText: "live" }).waitFor()
        assert.strictEqual(await runRow.locator("td.batches").textContent(), "0/12")
        // Marks this document: a reload would lose it. Records every value the batches cell takes.
        await page.evaluate(() => {
          // (This runs in the page; the test's tsconfig has no DOM types.)
          const w = globalThis as any
          const document = w.document
          w.__marker = 42
          w.__seen = []
          const record = () => {
            const cell = document.querySelector('#runs tr[data-run="e2e"] td.batches')
            const text = cell?.textContent ?? ""
            if (w.__seen[w.__seen.length - 1] !== text) w.__seen.push(text)
          }
          new w.MutationObserver(record).observe(document.querySelector("#runs")!, {
            subtree: true,
            childList: true,
            characterData: true
          })
          record()
        })
        // The batch in flight is a pending chord with 0 of 5 body tasks done.
        const pendingChord = page.locator("#chords tbody tr", { hasText: "pending" }).first()
        await pendingChord.waitFor()
        const chordId = await pendingChord.getAttribute("data-chord")
        assert.isString(chordId)
        assert.strictEqual(await pendingChord.locator("td.body").textContent(), "0/5")

        // Now a worker: the run advances and the chord completes, on the same page, without a reload.
        const worker = start(["worker", "--db", db, "--concurrency", "2"])
        await runRow.locator("td.batches", { hasText: "12/12" }).waitFor({ timeout: 60_000 })
        await runRow.locator("td.state", { hasText: "succeeded" }).waitFor({ timeout: 10_000 })
        const chordRow = page.locator(`#chords tr[data-chord="${chordId}"]`)
        await chordRow.locator("td.state", { hasText: "dispatched" }).waitFor({ timeout: 10_000 })
        assert.strictEqual(await chordRow.locator("td.body").textContent(), "5/5")
        const { marker, seen } = await page.evaluate(() => {
          const w = globalThis as unknown as { __marker: number; __seen: Array<string> }
          return { marker: w.__marker, seen: w.__seen }
        })
        assert.strictEqual(marker, 42, "the page was not reloaded")
        assert.strictEqual(seen[0], "0/12")
        assert.strictEqual(seen[seen.length - 1], "12/12")
        console.log(`batches cell took ${seen.length} values live: ${seen.join(" → ")}`)

        // The hostile task: found with the page's filter, shown as text, never executed.
        await page.fill("#f-q", "script")
        await page.click('#task-filters button[type="submit"]')
        const xssRow = page.locator(`#tasks tr[data-task="${xssId}"]`)
        await xssRow.waitFor()
        assert.strictEqual(await xssRow.locator("td.name").textContent(), xssName)
        await xssRow.locator("td.name").click()
        await page.locator("#task-detail-id", { hasText: xssId }).waitFor()
        assert.include(await page.locator("#task-payload").textContent(), 'onerror=\\"window.__pwned = true\\"')
        assert.isTrue(await page.locator("#tasks td.name", { hasText: "<script>" }).isVisible())
        assert.strictEqual(
          await page.evaluate(() => (globalThis as unknown as { __pwned?: boolean }).__pwned),
          undefined
        )
        assert.strictEqual(await page.locator("#tasks script, #tasks img").count(), 0)
        // Read-only: the retry button is disabled.
        assert.isTrue(await xssRow.getByRole("button", { name: "retry" }).isDisabled())
        assert.deepStrictEqual(pageErrors, [])

        // SIGTERM with the page's event stream open: the dashboard closes it and exits (130, like every command).
        worker.child.kill("SIGTERM")
        dashboard.child.kill("SIGTERM")
        const ended = await dashboard.done
        assert.strictEqual(ended.code, 130)
        assert.include(ended.stderr, "baton dashboard stopped")
        await worker.done
        const finished = await run.done
        assert.strictEqual(finished.code, 0, finished.stderr)
      } finally {
        await browser.close()
      }

      // With --allow-actions (and no token), the page's retry button puts the dead task back to pending.
      const holder = start(["dashboard", "--db", db, "--port", "0", "--allow-actions"])
      const [, actionsUrl, port] = (await holder.waitFor(/on (http:\/\/127\.0\.0\.1:(\d+)\/)/)) as unknown as [
        string,
        string,
        string
      ]
      const browser2 = await launch()
      try {
        const page = await browser2.newPage()
        await page.goto(actionsUrl)
        await page.locator("#mode", { hasText: "actions allowed" }).waitFor()
        await page.selectOption("#f-state", "dead")
        await page.click('#task-filters button[type="submit"]')
        const row = page.locator(`#tasks tr[data-task="${xssId}"]`)
        await row.getByRole("button", { name: "retry" }).click()
        await page.locator("#task-action-message", { hasText: `task ${xssId} queued again` }).waitFor()
        // The dead filter no longer matches it; without the filter it is pending, attempts reset.
        await row.waitFor({ state: "detached" })
        await page.selectOption("#f-state", "pending")
        await page.fill("#f-q", xssId)
        await page.click('#task-filters button[type="submit"]')
        await row.locator("td.state", { hasText: "pending" }).waitFor()
        assert.strictEqual(await row.locator("td", { hasText: "/1" }).first().textContent(), "0/1")
      } finally {
        await browser2.close()
      }

      // The port is taken: a clear one-line error, exit 1.
      const second = await start(["dashboard", "--db", db, "--port", port]).done
      assert.strictEqual(second.code, 1)
      assert.strictEqual(
        second.stderr.trim(),
        `baton: port ${port} on 127.0.0.1 is already in use (choose another with --port, or --port 0 for any free port)`
      )
      holder.child.kill("SIGINT")
      assert.strictEqual((await holder.done).code, 130)
    },
    180_000
  )
})
