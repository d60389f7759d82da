/**
 * The dashboard's HTTP API against SQLite and Postgres: auth (401), read-only (403), paging, filters, the retry
 * action, run / chord / queue views, the event stream, and a page request over 100,000 tasks (timed and printed, not
 * asserted: speed belongs in bench/).
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as http from "node:http"
import * as Baton from "../src/Baton.js"
import { CheckpointCoordinator } from "../src/CheckpointCoordinator.js"
import * as ChordRegistry from "../src/ChordRegistry.js"
import { RunService } from "../src/RunService.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import * as Dashboard from "../src/dashboard/Dashboard.js"
import * as Backends from "./support/backends.js"

const Echo = Task.make("echo", {
  payload: Schema.Struct({ text: Schema.String }),
  success: Schema.String,
  handler: ({ text }) => Effect.succeed(text)
})
const Sum = Task.make("sum", {
  payload: ChordRegistry.callbackPayload(Schema.String, {}),
  success: Schema.Number,
  handler: ({ results }) => Effect.succeed(results.length)
})

const backends = [Backends.sqlite, ...(Backends.pgAvailable() ? [Backends.postgres] : [])]

const request = (url: string, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const res = await fetch(url, { redirect: "manual", ...init })
    const text = await res.text()
    let body: any = undefined
    try {
      body = JSON.parse(text)
    } catch {
      body = text
    }
    return { status: res.status, headers: res.headers, body }
  })

/** A task that ran out of attempts (its lease expired with no attempts left). */
const deadTask = (name: string, payload: unknown = {}) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    const [id] = yield* queue.enqueueRaw([{ name, payload, maxAttempts: 1, queue: "dead-letters" }])
    yield* queue.claim({ queues: ["dead-letters"], limit: 1, leaseMs: -1, workerId: "test" })
    yield* queue.reclaimExpired
    return id!
  })

for (const backend of backends) {
  const layer = () => Baton.layerWith(backend.storage())

  describe(`dashboard API [${backend.name}]`, () => {
    it.live("with a token: 401 without it (page and API), the Bearer header or the ?token= cookie let in", () =>
      Effect.gen(function* () {
        const { url } = yield* Dashboard.make({ port: 0, token: "s3cret" })
        const api = `${url}api/runs`
        assert.strictEqual((yield* request(api)).status, 401)
        assert.strictEqual((yield* request(api, { headers: { authorization: "Bearer wrong" } })).status, 401)
        assert.strictEqual((yield* request(url)).status, 401)
        assert.strictEqual((yield* request(`${url}app.js`)).status, 401)
        assert.strictEqual((yield* request(`${url}api/events`)).status, 401)
        const ok = yield* request(api, { headers: { authorization: "Bearer s3cret" } })
        assert.strictEqual(ok.status, 200)
        assert.deepStrictEqual(ok.body, { items: [] })
        // The browser path: ?token= sets an HttpOnly cookie and redirects to / without the token.
        assert.strictEqual((yield* request(`${url}?token=wrong`)).status, 401)
        const redirect = yield* request(`${url}?token=s3cret`)
        assert.strictEqual(redirect.status, 303)
        assert.strictEqual(redirect.headers.get("location"), "/")
        const cookie = redirect.headers.get("set-cookie")!
        assert.match(cookie, /^baton_dashboard_token=s3cret;/)
        assert.match(cookie, /HttpOnly/)
        assert.match(cookie, /SameSite=Strict/)
        const withCookie = { headers: { cookie: cookie.split(";")[0]! } }
        const page = yield* request(url, withCookie)
        assert.strictEqual(page.status, 200)
        assert.match(page.body, /<title>Baton dashboard<\/title>/)
        assert.match(page.headers.get("content-security-policy")!, /script-src 'self'/)
        assert.strictEqual((yield* request(api, withCookie)).status, 200)
        assert.strictEqual((yield* request(`${url}app.js`, withCookie)).status, 200)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("read-only by default: retry answers 403; loopback Host only", () =>
      Effect.gen(function* () {
        const id = yield* deadTask("doomed")
        const { url } = yield* Dashboard.make({ port: 0 })
        const refused = yield* request(`${url}api/tasks/${id}/retry`, {
          method: "POST",
          headers: { "x-baton-action": "1" }
        })
        assert.strictEqual(refused.status, 403)
        assert.match(refused.body.error, /--allow-actions/)
        assert.strictEqual((yield* Effect.flatMap(TaskQueue, (q) => q.get(id))).state, "dead")
        const config = yield* request(`${url}api/config`)
        assert.strictEqual(config.body.allowActions, false)
        // DNS rebinding: a foreign Host is refused on a loopback bind.
        // (fetch cannot set Host: node:http can.)
        const withHost = (host: string) =>
          Effect.async<number>((resume) => {
            const req = http.get(`${url}api/runs`, { headers: { host } }, (res) => {
              res.resume()
              resume(Effect.succeed(res.statusCode!))
            })
            req.on("error", (error) => resume(Effect.die(error)))
          })
        assert.strictEqual(yield* withHost("attacker.example"), 403)
        assert.strictEqual(yield* withHost("attacker.example:80"), 403)
        assert.strictEqual(yield* withHost(`localhost:${new URL(url).port}`), 200)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("--allow-actions: retry needs X-Baton-Action and a same Origin; dead → pending; others 409 / 404", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const id = yield* deadTask("doomed", { n: 1 })
        const live = yield* queue.enqueue(Echo, { text: "hi" })
        const { url } = yield* Dashboard.make({ port: 0, allowActions: true })
        const post = (taskId: string, headers: Record<string, string>) =>
          request(`${url}api/tasks/${taskId}/retry`, { method: "POST", headers })
        assert.strictEqual((yield* post(id, {})).status, 403)
        assert.strictEqual((yield* post(id, { "x-baton-action": "1", origin: "http://evil.example" })).status, 403)
        assert.strictEqual((yield* queue.get(id)).state, "dead")
        const origin = new URL(url).origin
        const ok = yield* post(id, { "x-baton-action": "1", origin })
        assert.strictEqual(ok.status, 200)
        assert.deepStrictEqual(ok.body, { retried: true, taskId: id })
        const after = yield* queue.get(id)
        assert.strictEqual(after.state, "pending")
        assert.strictEqual(after.attempts, 0)
        const again = yield* post(id, { "x-baton-action": "1" })
        assert.strictEqual(again.status, 409)
        assert.strictEqual((yield* post(live, { "x-baton-action": "1" })).status, 409)
        assert.strictEqual((yield* post("no-such-task", { "x-baton-action": "1" })).status, 404)
        // GET on an action route does not run it.
        assert.strictEqual((yield* request(`${url}api/tasks/${id}/retry`)).status, 404)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("tasks: paging, server-side filters (state, queue, name substring with wildcards escaped), detail", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        yield* queue.enqueueRaw(
          Array.from({ length: 120 }, (_, i) => ({
            name: i % 3 === 0 ? "report.build" : "mail.send",
            payload: { i },
            queue: i % 2 === 0 ? "even" : "odd"
          }))
        )
        yield* queue.enqueueRaw([{ name: "odd%name_<script>", payload: { x: "<b>" } }])
        const dead = yield* deadTask("doomed", { why: "because" })
        const { url } = yield* Dashboard.make({ port: 0 })
        const get = (query: string) => Effect.map(request(`${url}api/tasks${query}`), (res) => res.body)

        const first = yield* get("?limit=50")
        assert.strictEqual(first.total, 122)
        assert.strictEqual(first.items.length, 50)
        const last = yield* get("?limit=50&offset=100")
        assert.strictEqual(last.items.length, 22)
        const ids = new Set(
          [...first.items, ...(yield* get("?limit=50&offset=50")).items, ...last.items].map((t: any) => t.id)
        )
        assert.strictEqual(ids.size, 122)

        const even = yield* get("?queue=even&limit=200")
        assert.strictEqual(even.total, 60)
        assert.isTrue(even.items.every((t: any) => t.queue === "even"))
        const reports = yield* get("?q=report&limit=200")
        assert.strictEqual(reports.total, 40)
        const evenReports = yield* get("?q=report&queue=even")
        assert.strictEqual(evenReports.total, 20)
        // `%` and `_` are matched literally, not as LIKE wildcards.
        assert.strictEqual((yield* get("?q=%25")).total, 1)
        assert.strictEqual((yield* get("?q=d_n")).total, 0)
        assert.strictEqual((yield* get("?q=" + encodeURIComponent("<script>"))).items[0].name, "odd%name_<script>")
        const deadOnes = yield* get("?state=dead")
        assert.strictEqual(deadOnes.total, 1)
        assert.strictEqual(deadOnes.items[0].id, dead)
        assert.strictEqual(deadOnes.items[0].error.kind, "lease_expired")
        assert.strictEqual((yield* get(`?q=${dead}`)).total, 1)

        assert.strictEqual((yield* request(`${url}api/tasks?limit=201`)).status, 400)
        assert.strictEqual((yield* request(`${url}api/tasks?limit=0`)).status, 400)
        assert.strictEqual((yield* request(`${url}api/tasks?offset=-1`)).status, 400)
        assert.strictEqual((yield* request(`${url}api/tasks?state=bogus`)).status, 400)
        assert.strictEqual((yield* request(`${url}api/tasks?offset=1e300`)).status, 400)
        assert.strictEqual((yield* request(`${url}api/tasks?limit=abc`)).status, 400)

        const detail = (yield* request(`${url}api/tasks/${dead}`)).body
        assert.strictEqual(detail.id, dead)
        assert.strictEqual(detail.name, "doomed")
        assert.strictEqual(detail.state, "dead")
        assert.deepStrictEqual(detail.payload, { why: "because" })
        assert.strictEqual(detail.attempts, 1)
        assert.isTrue(detail.retryable)
        assert.strictEqual((yield* request(`${url}api/tasks/nope`)).status, 404)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("runs with progress and batches with checkpoint state; chords with counts, failure and histogram", () =>
      Effect.gen(function* () {
        const runs = yield* RunService
        const checkpoints = yield* CheckpointCoordinator
        const queue = yield* TaskQueue
        const chords = yield* ChordRegistry.ChordRegistry
        const sql = yield* SqlClient.SqlClient
        yield* runs.createRun({ kind: "custom", totalBatches: 4, id: "r1" })
        const t0 = yield* checkpoints.createCheckpoint("r1", 0)
        yield* checkpoints.completeCheckpoint(t0, { ok: true })
        yield* runs.updateProgress("r1", 1, 4)
        const t1 = yield* checkpoints.createCheckpoint("r1", 1)
        yield* checkpoints.failCheckpoint(t1, { message: "disk full" })
        yield* checkpoints.createCheckpoint("r1", 2)

        // One chord completes (its body succeeded), one fails (its body task failed for good), one stays pending.
        const done = yield* chords.chord({
          body: [Task.call(Echo, { text: "a" })],
          callback: ChordRegistry.callback(Sum, {})
        })
        const failing = yield* chords.chord({
          body: [Task.call(Echo, { text: "b" })],
          callback: ChordRegistry.callback(Sum, {})
        })
        const pending = yield* chords.chord({
          body: [Task.call(Echo, { text: "c" }), Task.call(Echo, { text: "d" })],
          callback: ChordRegistry.callback(Sum, {})
        })
        const claimed = yield* queue.claim({ queues: ["default"], limit: 10, leaseMs: 60_000, workerId: "t" })
        const byChord = (chordId: string) => claimed.filter((task) => task.chordId === chordId)
        yield* queue.complete(byChord(done.chordId).map((t) => ({ id: t.id, leaseId: t.leaseId, result: "a" })))
        const bad = byChord(failing.chordId)[0]!
        yield* queue.fail(bad.id, bad.leaseId, { kind: "failure", message: "no <b>", attempt: 1 }, { _tag: "Failed" })
        const [p0] = byChord(pending.chordId)
        yield* queue.complete([{ id: p0!.id, leaseId: p0!.leaseId, result: "c" }])
        yield* Backends.eventually(
          Effect.map(
            sql<{ n: number }>`SELECT count(*) AS n FROM baton_chords WHERE state <> 'running'`,
            (rows) => Number(rows[0]!.n) === 2
          ),
          "two chords decided"
        )

        const { url } = yield* Dashboard.make({ port: 0 })
        const list = (yield* request(`${url}api/runs`)).body.items
        assert.strictEqual(list.length, 1)
        assert.strictEqual(list[0].completedBatches, 1)
        assert.strictEqual(list[0].totalBatches, 4)
        assert.strictEqual(list[0].state, "running")
        const detail = (yield* request(`${url}api/runs/r1?limit=2`)).body
        assert.strictEqual(detail.batches.total, 3)
        assert.deepStrictEqual(
          detail.batches.items.map((b: any) => [b.batchIndex, b.status]),
          [
            [0, "completed"],
            [1, "failed"]
          ]
        )
        assert.deepStrictEqual(detail.batches.items[1].error, { message: "disk full" })
        assert.isNumber(detail.batches.items[0].durationMs)
        const page2 = (yield* request(`${url}api/runs/r1?limit=2&offset=2`)).body
        assert.deepStrictEqual(
          page2.batches.items.map((b: any) => [b.batchIndex, b.status, b.completedAt]),
          [[2, "pending", null]]
        )
        assert.strictEqual((yield* request(`${url}api/runs/nope`)).status, 404)

        const all = (yield* request(`${url}api/chords`)).body
        assert.deepStrictEqual(all.counts, { running: 1, completed: 1, failed: 1, cancelled: 0 })
        assert.strictEqual(all.total, 3)
        const completed = (yield* request(`${url}api/chords?state=completed`)).body
        assert.strictEqual(completed.items.length, 1)
        assert.strictEqual(completed.items[0].id, done.chordId)
        assert.isNumber(completed.items[0].timeToCallbackMs)
        assert.isString(completed.items[0].callbackTaskId)
        assert.strictEqual(completed.histogram.samples, 1)
        assert.strictEqual(
          completed.histogram.buckets.reduce((n: number, b: any) => n + b.count, 0),
          1
        )
        const failed = (yield* request(`${url}api/chords?state=failed`)).body.items[0]
        assert.strictEqual(failed.id, failing.chordId)
        assert.strictEqual(failed.failure.taskId, bad.id)
        assert.strictEqual(failed.failure.error.message, "no <b>")
        const running = (yield* request(`${url}api/chords?state=running`)).body.items[0]
        assert.deepStrictEqual([running.succeeded, running.expected], [1, 2])
        assert.strictEqual((yield* request(`${url}api/chords?state=nope`)).status, 400)
        const one = (yield* request(`${url}api/chords/${pending.chordId}`)).body
        assert.deepStrictEqual([one.id, one.state], [pending.chordId, "running"])
        assert.strictEqual((yield* request(`${url}api/chords/nope`)).status, 404)

        const queues = (yield* request(`${url}api/queues`)).body
        const main = queues.queues.find((q: any) => q.queue === "default")
        assert.strictEqual(main.depth.running, 1)
        assert.strictEqual(main.depth.failed, 1)
        assert.isAtLeast(main.depth.pending, 1) // the completed chord's callback
        assert.strictEqual(main.oldestWaiting.name, "sum")
        assert.strictEqual(main.throughput.lastMinute.succeeded, 2)
        assert.strictEqual(main.throughput.lastMinute.failed, 1)
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live("the event stream announces completions as they commit", () =>
      Effect.gen(function* () {
        const queue = yield* TaskQueue
        const { url } = yield* Dashboard.make({ port: 0 })
        const controller = new AbortController()
        yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
        const res = yield* Effect.promise(() => fetch(`${url}api/events`, { signal: controller.signal }))
        assert.strictEqual(res.headers.get("content-type"), "text/event-stream")
        const reader = res.body!.getReader()
        const decoder = new TextDecoder()
        let text = ""
        const readUntil = (marker: string) =>
          Effect.promise(async () => {
            while (!text.includes(marker)) {
              const { done, value } = await reader.read()
              if (done) break
              text += decoder.decode(value)
            }
            return text.includes(marker)
          })
        assert.isTrue(yield* readUntil("event: hello"))
        const id = yield* queue.enqueue(Echo, { text: "x" })
        const [claimed] = yield* queue.claim({ queues: ["default"], limit: 1, leaseMs: 60_000, workerId: "t" })
        assert.strictEqual(claimed!.id, id)
        yield* queue.complete([{ id, leaseId: claimed!.leaseId, result: "x" }])
        assert.isTrue(yield* readUntil("event: change"))
        const data = text.slice(text.indexOf("event: change")).split("\n")[1]!
        assert.deepStrictEqual(JSON.parse(data.slice("data: ".length)), { events: 1, kinds: { task: 1 } })
      }).pipe(Effect.scoped, Effect.provide(layer()))
    )

    it.live(
      "100,000 tasks: pages and filters stay paged (timings printed, not asserted)",
      () =>
        Effect.gen(function* () {
          const queue = yield* TaskQueue
          const n = 100_000
          const names = ["ingest.parse", "ingest.fetch", "mail.send", "report.build"]
          for (let i = 0; i < n; i += 10_000) {
            yield* queue.enqueueRaw(
              Array.from({ length: 10_000 }, (_, j) => ({
                name: names[(i + j) % names.length]!,
                payload: { i: i + j },
                queue: (i + j) % 10 === 0 ? "slow" : "default"
              }))
            )
          }
          yield* deadTask("needle", { needle: true })
          const { url } = yield* Dashboard.make({ port: 0 })
          const timed = (path: string) =>
            Effect.gen(function* () {
              const started = performance.now()
              const res = yield* request(`${url}${path}`)
              const ms = performance.now() - started
              assert.strictEqual(res.status, 200, path)
              return { ms, body: res.body }
            })
          // Warm-up (first query plans, connections).
          yield* timed("api/tasks?limit=50")
          const samples: Array<[string, number]> = []
          const measure = (path: string) =>
            Effect.tap(timed(path), ({ ms }) => Effect.sync(() => samples.push([path, ms])))
          const first = yield* measure("api/tasks?limit=50")
          assert.strictEqual(first.body.total, n + 1)
          assert.strictEqual(first.body.items.length, 50)
          const deep = yield* measure("api/tasks?limit=50&offset=99950")
          assert.strictEqual(deep.body.items.length, 50)
          const byState = yield* measure("api/tasks?state=dead")
          assert.strictEqual(byState.body.total, 1)
          assert.strictEqual(byState.body.items[0].name, "needle")
          const byQueue = yield* measure("api/tasks?queue=slow&limit=50")
          assert.strictEqual(byQueue.body.total, n / 10)
          const search = yield* measure("api/tasks?q=mail&limit=50")
          assert.strictEqual(search.body.total, n / 4)
          yield* measure("api/queues")
          yield* measure("api/chords")
          yield* measure("api/runs")
          console.log(
            `dashboard API over ${n.toLocaleString()} tasks [${backend.name}]:\n` +
              samples.map(([path, ms]) => `  GET /${path}  ${ms.toFixed(1)} ms`).join("\n")
          )
        }).pipe(Effect.scoped, Effect.provide(layer())),
      180_000
    )
  })
}
