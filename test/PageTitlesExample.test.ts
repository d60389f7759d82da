/**
 * The page-titles example (examples/page-titles/): a user's own workflow on BatchWorkflow. Against a local HTTP
 * server, an uninterrupted run stores each page's title and size; a run whose driver process (with its in-process
 * worker) is SIGKILLed at seeded random points and restarted ends with exactly the same pages and batches.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Storage from "../src/Storage.js"
import { exitOrKill, root, seededRandom, startScript } from "./support/cli.js"

const main = path.join(root, "examples/page-titles/main.ts")

// Pages of different sizes, some without a title, answered after a short delay so that batches take a while.
const pageCount = 40
const html = (i: number) =>
  i % 7 === 3
    ? `<html><body>${"untitled ".repeat(i)}</body></html>`
    : `<html><head><title> Page  ${i} </title></head><body>${"word ".repeat(i * 3)}</body></html>`

const startServer = () =>
  new Promise<{ server: http.Server; base: string }>((resolve) => {
    const server = http.createServer((req, res) => {
      const i = Number(req.url?.split("/").pop())
      setTimeout(() => res.end(html(i)), 10 + (i % 5) * 10)
    })
    server.listen(0, "127.0.0.1", () =>
      resolve({ server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })
    )
  })

const runMain = (args: ReadonlyArray<string>) => startScript(main, args)

const read = (filename: string, runId: string) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const pages = yield* sql<Record<string, unknown>>`SELECT item_index, url, title, bytes FROM page_titles
        WHERE run_id = ${runId} ORDER BY item_index`
      const batches = yield* sql<Record<string, unknown>>`SELECT batch_index, pages, titled, bytes
        FROM page_title_batches WHERE run_id = ${runId} ORDER BY batch_index`
      const runs = yield* sql<{ state: string; completed_batches: number }>`SELECT state, completed_batches
        FROM baton_runs WHERE id = ${runId}`
      return { pages, batches, run: runs[0] }
    }).pipe(Effect.provide(Storage.layerSqlite({ filename })))
  )

describe("examples/page-titles", () => {
  it("SIGKILL of the driver at random points, restarted: exactly the pages of an uninterrupted run", async () => {
    const { base, server } = await startServer()
    try {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "baton-pages-"))
      const db = path.join(dir, "pages.db")
      const urls = Array.from({ length: pageCount }, (_, i) => `${base}/page/${i}`)

      // The uninterrupted reference run has a database of its own, so that it runs while the victim is being killed.
      const refDb = path.join(dir, "reference.db")
      const referenceRun = runMain([refDb, "ref", ...urls]).done

      // Seeded kill points, the seed printed first: BATON_TEST_SEED=<seed> replays a failure.
      const { random, seed } = seededRandom("page-titles SIGKILL delays")
      let kills = 0
      let finished = false
      for (let i = 0; i < 4 && !finished; i++) {
        const running = runMain([db, "victim", ...urls])
        await running.waitFor("workers ready")
        const { killed, result } = await exitOrKill(running, Math.floor(random() * 500))
        if (!killed) {
          finished = result.code === 0
          continue
        }
        assert.strictEqual(result.code, "SIGKILL")
        kills++
      }
      if (!finished) {
        const last = await runMain([db, "victim", ...urls]).done
        assert.strictEqual(last.code, 0, last.stderr)
      }
      assert.isAtLeast(kills, 3, `seed ${seed}`)
      const reference = await referenceRun
      assert.strictEqual(reference.code, 0, reference.stderr)
      assert.include(reference.stdout, `run ref succeeded: ${pageCount}/${pageCount} pages`)
      const expected = await read(refDb, "ref")
      assert.strictEqual(expected.pages.length, pageCount)
      assert.deepStrictEqual(expected.pages[4], { item_index: 4, url: urls[4], title: "Page 4", bytes: html(4).length })
      assert.strictEqual(expected.pages[3]!.title, null)
      assert.strictEqual(expected.batches.length, pageCount / 5)
      const actual = await read(db, "victim")
      assert.deepStrictEqual(actual.pages, expected.pages, `seed ${seed}`)
      assert.deepStrictEqual(actual.batches, expected.batches, `seed ${seed}`)
      assert.deepStrictEqual(actual.run, { state: "succeeded", completed_batches: pageCount / 5 })
    } finally {
      server.close()
    }
  }, 300_000)
})
