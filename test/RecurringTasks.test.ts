/**
 * Recurring tasks: the crontab parser, the runner's occurrences and missed-occurrence policies (in process, on the
 * TestClock), and the once-only guarantee with three real processes running the runner on one database.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Cron from "effect/Cron"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import * as RecurringTasks from "../src/RecurringTasks.js"
import * as SqlTaskQueue from "../src/SqlTaskQueue.js"
import * as Storage from "../src/Storage.js"
import * as Task from "../src/Task.js"
import { TaskQueue } from "../src/TaskQueue.js"
import { eventually, pgAvailable, sharedStorage } from "./support/backends.js"
import { type Child, spawnFixture } from "./support/process.js"

const Ping = Task.make("ping", {
  payload: Schema.Struct({ target: Schema.String }),
  success: Schema.Void,
  handler: () => Effect.void
})

const memoryQueue = () => SqlTaskQueue.layer.pipe(Layer.provideMerge(Storage.layerMemory))

const iso = (seconds: number) => new Date(seconds * 1000).toISOString()

// Occurrences enqueued so far (by idempotency key), sorted, with their runAt.
const enqueued = (name: string) =>
  Effect.gen(function* () {
    const queue = yield* TaskQueue
    const page = yield* queue.list({ name }, { limit: 1000 })
    const infos = yield* Effect.forEach(page.items, (item) => queue.get(item.id))
    return infos
      .map((info) => ({ key: info.idempotencyKey, runAt: info.runAt.toISOString(), payload: info.payload }))
      .sort((a, b) => (a.runAt < b.runAt ? -1 : 1))
  })

const keys = (name: string) => Effect.map(enqueued(name), (rows) => rows.map((row) => row.key))

// Waits until `n` fibers sleep on the TestClock (each runner fiber sleeps once it has enqueued what was due).
const sleeping = (n: number): Effect.Effect<void> =>
  Effect.flatMap(Effect.zipRight(Effect.yieldNow(), TestClock.sleeps()), (sleeps) =>
    sleeps.length >= n
      ? Effect.void
      : Effect.zipRight(
          Effect.promise(() => new Promise((r) => setTimeout(r, 1))),
          sleeping(n)
        )
  )

// Moves the TestClock to `seconds` one wake-up at a time, letting the runners enqueue at each.
const advanceTo = (seconds: number, runners: number) =>
  Effect.gen(function* () {
    while (true) {
      yield* sleeping(runners)
      const now = (yield* TestClock.currentTimeMillis) / 1000
      if (now >= seconds) return
      const sleeps = yield* TestClock.sleeps()
      const wake = Math.min(seconds * 1000, ...Chunk.toReadonlyArray(sleeps))
      yield* TestClock.setTime(wake)
    }
  })

describe("RecurringTasks.parse", () => {
  it("reads schedules, comments, zones, 5 and 6 fields, macros and JSON payloads", () => {
    const text = [
      "# nightly jobs",
      "",
      "0 3 * * * cleanup",
      "TZ=Europe/Berlin",
      '*/15 * * * * * report {"format": "pdf", "to": ["a@b.c"]}',
      "  @hourly   heartbeat  [1, 2]  ",
      "0 0 * * mon weekly"
    ].join("\n")
    const tasks = Either.getOrThrow(RecurringTasks.parse(text, { timeZone: "UTC", missed: { backfill: 2 } }))
    assert.deepStrictEqual(
      tasks.map((t) => [t.name, t.target._tag === "Raw" ? t.target.request.payload : undefined, t.missed]),
      [
        ["cleanup", null, { backfill: 2 }],
        ["report", { format: "pdf", to: ["a@b.c"] }, { backfill: 2 }],
        ["heartbeat", [1, 2], { backfill: 2 }],
        ["weekly", null, { backfill: 2 }]
      ]
    )
    const from = new Date("2024-01-01T00:00:00Z")
    assert.strictEqual(Cron.next(tasks[0]!.cron, from).toISOString(), "2024-01-01T03:00:00.000Z", "UTC")
    assert.strictEqual(Cron.next(tasks[1]!.cron, from).toISOString(), "2024-01-01T00:00:15.000Z", "6 fields")
    assert.strictEqual(Cron.next(tasks[2]!.cron, from).toISOString(), "2024-01-01T01:00:00.000Z", "@hourly")
    // Berlin is UTC+1 in January: midnight on Monday 2024-01-01 there is 23:00 UTC on Sunday.
    assert.strictEqual(Cron.next(tasks[3]!.cron, from).toISOString(), "2024-01-07T23:00:00.000Z", "TZ applies")
  })

  it("reports every bad line with its line number in one InvalidCrontab", () => {
    const text = [
      "0 3 * * * ok",
      "61 * * * * bad-minute",
      "0 3 * * *",
      "TZ=Mars/Olympus",
      "@fortnightly sometimes",
      "0 3 * * * broken {not json",
      "0 0 30 2 * never",
      "0 4 * * * ok"
    ].join("\n")
    const result = RecurringTasks.parse(text)
    assert.isTrue(Either.isLeft(result))
    if (Either.isRight(result)) return
    assert.strictEqual(result.left._tag, "InvalidCrontab")
    assert.deepStrictEqual(
      result.left.problems.map((p) => p.line),
      [2, 3, 4, 5, 6, 7, 8]
    )
    assert.include(result.left.problems[0]!.message, "bad cron expression")
    assert.include(result.left.problems[2]!.message, "unknown time zone")
    assert.include(result.left.problems[4]!.message, "not JSON")
    assert.include(result.left.problems[5]!.message, "no next occurrence")
    assert.include(result.left.problems[6]!.message, "already scheduled on line 1")
    assert.include(result.left.message, "line 6:")
  })

  it("make checks its definition like Task.make: a bad expression throws", () => {
    assert.throws(() => RecurringTasks.make({ cron: "not a cron", task: Ping, payload: { target: "x" } }), TypeError)
    assert.throws(
      () => RecurringTasks.make({ cron: "* * * * *", task: Ping, payload: { target: "x" }, timeZone: "Nowhere/Zone" }),
      TypeError
    )
  })

  it("due: a late wake-up enqueues the latest occurrence plus the missed ones the policy allows", () => {
    const cron = Either.getOrThrow(Cron.parse("*/10 * * * * *", "UTC"))
    const at = (dates: ReadonlyArray<Date>) => dates.map((d) => d.getTime() / 1000)
    assert.deepStrictEqual(at(RecurringTasks.due(cron, 1000_000, 1055_000, "skip")), [1050])
    assert.deepStrictEqual(at(RecurringTasks.due(cron, 1000_000, 1055_000, { backfill: 2 })), [1030, 1040, 1050])
    assert.deepStrictEqual(
      at(RecurringTasks.due(cron, 1000_000, 1055_000, { backfill: 99 })),
      [1010, 1020, 1030, 1040, 1050]
    )
    assert.deepStrictEqual(at(RecurringTasks.due(cron, 1050_000, 1055_000, { backfill: 2 })), [], "nothing new")
    assert.deepStrictEqual(at(RecurringTasks.due(cron, undefined, 1055_000, "skip")), [], "first look, skip")
    assert.deepStrictEqual(at(RecurringTasks.due(cron, undefined, 1055_000, { backfill: 2 })), [1040, 1050])
  })
})

describe("RecurringTasks.run (TestClock)", () => {
  it.scoped("enqueues each occurrence once, at its time, with runAt and the occurrence key", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(1005_000)
      const schedule = RecurringTasks.make({
        cron: "*/10 * * * * *",
        timeZone: "UTC",
        task: Ping,
        payload: { target: "db" },
        options: { queue: "cron" }
      })
      // Two runners in one process stand in for two workers: the keys keep one task per occurrence.
      yield* RecurringTasks.run([schedule])
      yield* RecurringTasks.run([schedule])
      yield* advanceTo(1005, 2)
      assert.deepStrictEqual(yield* keys("ping"), [], "skip (the default): nothing from before the start")
      yield* advanceTo(1035, 2)
      const rows = yield* enqueued("ping")
      assert.deepStrictEqual(
        rows,
        [1010, 1020, 1030].map((s) => ({ key: `cron:ping:${iso(s)}`, runAt: iso(s), payload: { target: "db" } }))
      )
    }).pipe(Effect.provide(memoryQueue()))
  )

  it.effect("after downtime: skip enqueues nothing missed, backfill n the last n; keys dedupe what exists", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(1005_000)
      const make = (name: string, missed: RecurringTasks.Missed) =>
        RecurringTasks.make({
          name,
          cron: "*/10 * * * * *",
          timeZone: "UTC",
          task: Ping,
          payload: { target: name },
          missed
        })
      const schedules = [make("skip", "skip"), make("three", { backfill: 3 }), make("ten", { backfill: 10 })]
      const names = (schedule: string) =>
        Effect.map(enqueued("ping"), (rows) =>
          rows.filter((r) => r.key!.startsWith(`cron:${schedule}:`)).map((r) => Number(new Date(r.runAt)) / 1000)
        )

      // First life: 1005 → 1025, with backfill on the first start too.
      yield* Effect.scoped(Effect.zipRight(RecurringTasks.run(schedules), advanceTo(1025, 3)))
      assert.deepStrictEqual(yield* names("skip"), [1010, 1020])
      assert.deepStrictEqual(yield* names("three"), [980, 990, 1000, 1010, 1020])
      // Downtime: nobody runs from 1025 to 1085.
      yield* TestClock.setTime(1085_000)
      yield* Effect.scoped(Effect.zipRight(RecurringTasks.run(schedules), advanceTo(1095, 3)))
      assert.deepStrictEqual(yield* names("skip"), [1010, 1020, 1090], "1030..1080 skipped")
      assert.deepStrictEqual(yield* names("three"), [980, 990, 1000, 1010, 1020, 1060, 1070, 1080, 1090])
      const range = (from: number, to: number) => Array.from({ length: (to - from) / 10 + 1 }, (_, i) => from + 10 * i)
      // backfill 10: 910..1000 at the first start; after downtime 990..1080, of which 990..1020 already existed.
      assert.deepStrictEqual(yield* names("ten"), range(910, 1090))
    }).pipe(Effect.provide(memoryQueue()))
  )
})

const kinds: ReadonlyArray<"sqlite" | "pg"> = pgAvailable() ? ["sqlite", "pg"] : ["sqlite"]

for (const kind of kinds) {
  describe(`RecurringTasks processes [${kind}]`, () => {
    it.live(
      "three processes running the same every-second schedule enqueue exactly one task per occurrence",
      () => {
        const shared = sharedStorage(kind)
        const layer = SqlTaskQueue.layer.pipe(Layer.provideMerge(shared.layer))
        const children: Array<Child> = []
        return Effect.gen(function* () {
          // Migrations run once here, before the children start.
          yield* keys("tick")
          for (let i = 0; i < 3; i++) children.push(spawnFixture("recurring-runner.ts", shared.descriptor))
          yield* Effect.promise(() => Promise.all(children.map((c) => c.waitForLine(/^ready/, 60_000))))
          // Occurrences all three processes enqueued (each logs every occurrence it enqueued, with the task id).
          const attempts = () => {
            const byOccurrence = new Map<string, Array<string>>()
            for (const child of children) {
              for (const line of child.lines) {
                const match = /enqueued as task (\S+?)".*occurrence=(\S+)/.exec(line)
                if (match === null) continue
                byOccurrence.set(match[2]!, [...(byOccurrence.get(match[2]!) ?? []), match[1]!])
              }
            }
            return [...byOccurrence].filter(([, ids]) => ids.length === 3)
          }
          yield* eventually(
            Effect.sync(() => attempts().length >= 4),
            "four occurrences enqueued by all three processes",
            45_000
          )
          for (const child of children) child.kill()
          yield* Effect.promise(() => Promise.all(children.map((c) => c.exited)))

          const rows = yield* enqueued("tick")
          const rowKeys = rows.map((r) => r.key!)
          assert.strictEqual(new Set(rowKeys).size, rows.length, "one task per occurrence key")
          for (const row of rows) {
            assert.strictEqual(row.key, `cron:tick:${row.runAt}`, "runAt is the occurrence")
            assert.deepStrictEqual(row.payload, { from: "crontab" })
          }
          // No gap: every second from the first to the last occurrence has its task.
          const seconds = rows.map((r) => Date.parse(r.runAt) / 1000)
          assert.strictEqual(seconds.at(-1)! - seconds[0]! + 1, seconds.length, JSON.stringify(rowKeys))
          // Every process that enqueued an occurrence got the one task id back.
          for (const [occurrence, ids] of attempts()) {
            assert.strictEqual(new Set(ids).size, 1, `occurrence ${occurrence}: ${ids.join(", ")}`)
            assert.include(rowKeys, `cron:tick:${occurrence}`)
          }
        }).pipe(Effect.ensuring(Effect.sync(() => children.forEach((c) => c.kill()))), Effect.provide(layer))
      },
      90_000
    )
  })
}
