/**
 * Takes docs/dashboard.png: realistic data on a temporary SQLite file — a finished demo run, a run in progress (a
 * worker stopped part-way, its driver still waiting), a failed chord, dead e-mails and a backlog — then `baton
 * dashboard --allow-actions` and a full-page screenshot in headless Chromium.
 *
 *   npx tsx scratchpad/dashboard-screenshot.ts [out.png]
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { chromium } from "playwright-core"
import * as Baton from "../src/Baton.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { RunService } from "../src/RunService.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { writeCorpus } from "../test/fixtures/workflow-corpus.js"

const root = path.resolve(import.meta.dirname, "..")
const out = path.resolve(process.argv[2] ?? path.join(root, "docs/dashboard.png"))
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-shot-"))
const db = path.join(dir, "baton.db")
const children: Array<ChildProcess> = []

const baton = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, [path.join(root, "dist/bin.js"), ...args, "--db", db], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.push(child)
  let text = ""
  child.stdout!.on("data", (chunk: Buffer) => void (text += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => void (text += chunk.toString()))
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setInterval(() => {
        const match = text.match(pattern)
        if (match) {
          clearInterval(timer)
          resolve(match)
        } else if (child.exitCode !== null) {
          clearInterval(timer)
          reject(new Error(`baton ${args.join(" ")} exited:\n${text}`))
        }
      }, 50)
    })
  const done = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  return { child, waitFor, done, output: () => text }
}

const Thumbnail = Task.make("media.thumbnail", {
  payload: Schema.Struct({ image: Schema.String, width: Schema.Number }),
  success: Schema.String,
  handler: ({ image }) => Effect.succeed(image)
})
const Album = Task.make("media.album.publish", {
  payload: ChordRegistry.callbackPayload(Schema.String, { album: Schema.String }),
  success: Schema.Void,
  handler: () => Effect.void
})

const seed = Effect.gen(function* () {
  const queue = yield* TaskQueue
  const chords = yield* ChordRegistry.ChordRegistry
  // A chord whose third body task dies.
  const album = yield* chords.chord({
    body: ["beach.jpg", "dunes.jpg", "sunset.cr3", "pier.jpg"].map((image) =>
      Task.call(Thumbnail, { image, width: 512 }, { queue: "media" })
    ),
    callback: ChordRegistry.callback(Album, { album: "Holidays 2026" }, { queue: "media" })
  })
  const body = yield* queue.claim({ queues: ["media"], limit: 10, leaseMs: 60_000, workerId: "media-1" })
  const byImage = (i: number) =>
    body.find((t) => JSON.parse(t.payload).image.includes(["beach", "dunes", "sunset"][i]!))!
  yield* queue.complete([0, 1].map((i) => ({ id: byImage(i).id, leaseId: byImage(i).leaseId, result: "ok" })))
  const bad = byImage(2)
  yield* queue.fail(
    bad.id,
    bad.leaseId,
    { kind: "failure", message: "ImageDecodeError: unsupported raw format (.cr3)", attempt: bad.attempt },
    { _tag: "Dead" }
  )
  void album
  // Dead e-mails, and a backlog of e-mails waiting.
  const mails = yield* queue.enqueueRaw(
    ["ops@example.org", "billing@example.org", "<script>alert(1)</script>@example.org"].map((to) => ({
      name: "email.send",
      payload: { to, template: "invoice", locale: "en-GB" },
      queue: "email",
      maxAttempts: 5
    }))
  )
  const claimed = yield* queue.claim({ queues: ["email"], limit: 10, leaseMs: 60_000, workerId: "mailer-2" })
  for (const task of claimed) {
    const to = JSON.parse(task.payload).to as string
    yield* queue.fail(
      task.id,
      task.leaseId,
      { kind: "failure", message: `SMTP 550 5.1.1 <${to}>: mailbox unavailable`, attempt: task.attempt },
      { _tag: "Dead" }
    )
  }
  yield* queue.enqueueRaw(
    Array.from({ length: 240 }, (_, i) => ({
      name: i % 4 === 0 ? "email.digest" : "email.send",
      payload: { to: `user${i}@example.org`, template: "weekly" },
      queue: "email"
    }))
  )
  void mails
  const runs = yield* RunService
  return (yield* runs.listRuns()).length
})

const main = async () => {
  // 1. A finished run (chords dispatched: the histogram has data).
  const demo = baton(["demo", "--limit", "120", "--batch-size", "8", "--concurrency", "4"])
  await demo.done
  // 2. A run in progress: its driver waits for workers; a worker does part of it, then stops.
  const corpus = writeCorpus(path.join(dir, "corpus"), 300)
  const driver = baton([
    "run",
    "extract",
    corpus,
    "--run-id",
    "nightly-2026-11-23",
    "--batch-size",
    "12",
    "--workers",
    "0"
  ])
  await driver.waitFor(/batches of up to/)
  const worker = baton(["worker", "--concurrency", "2"])
  const seen = async () => {
    for (;;) {
      const status = spawn(process.execPath, [path.join(root, "dist/bin.js"), "status", "--json", "--db", db], {
        cwd: root
      })
      let json = ""
      status.stdout.on("data", (c: Buffer) => void (json += c.toString()))
      await new Promise((resolve) => status.on("exit", resolve))
      const run = JSON.parse(json).runs.find((r: { id: string }) => r.id === "nightly-2026-11-23")
      if (run && run.completedBatches >= 11) return
    }
  }
  await seen()
  worker.child.kill("SIGTERM")
  await worker.done
  // 3. A failed chord, dead e-mails, a backlog.
  await Effect.runPromise(Effect.scoped(seed).pipe(Effect.provide(Baton.layerSqlite({ filename: db }))))
  // 4. The dashboard and the screenshot.
  const dashboard = baton(["dashboard", "--port", "0", "--allow-actions"])
  const [, url] = (await dashboard.waitFor(/on (http:\/\/\S+\/)/)) as unknown as [string, string]
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
  })
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 })
    await page.goto(url)
    await page.locator("#live", { hasText: "live" }).waitFor()
    await page.locator('#runs tr[data-run="nightly-2026-11-23"]').click()
    await page.locator("#batches tbody tr").first().waitFor()
    await page.selectOption("#f-state", "dead")
    await page.click('#task-filters button[type="submit"]')
    await page.locator("#tasks tbody tr", { hasText: "email.send" }).first().click()
    await page.locator("#task-payload", { hasText: "invoice" }).waitFor()
    await page.waitForTimeout(300)
    await page.screenshot({ path: out, fullPage: true })
    console.log(`wrote ${out}`)
  } finally {
    await browser.close()
    for (const child of children) if (child.exitCode === null) child.kill("SIGTERM")
    await dashboard.done
    await driver.done
  }
}

main().catch((error) => {
  console.error(error)
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL")
  process.exit(1)
})
