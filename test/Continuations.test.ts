import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberStatus from "effect/FiberStatus"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"
import * as Continuations from "../src/Continuations.js"

interface LogLine {
  readonly level: string
  readonly message: string
  readonly continuation: unknown
  readonly cause: string
}

// Collects the log lines written by the effect it wraps (and by the fibers that effect forks).
const withCapturedLogs = <A, E, R>(f: (logs: ReadonlyArray<LogLine>) => Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const logs: Array<LogLine> = []
    const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
      logs.push({
        level: logLevel.label,
        message: Array.isArray(message) ? message.join(" ") : String(message),
        continuation: Option.getOrUndefined(HashMap.get(annotations, "continuation")),
        cause: Cause.pretty(cause)
      })
    })
    return Effect.provide(f(logs), Logger.add(logger))
  })

// Waits until `fiber` is blocked (here: waiting on the handle), so what follows happens after it subscribed.
const suspended = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): Effect.Effect<void> =>
  Effect.flatMap(Effect.zipRight(Effect.yieldNow(), Fiber.status(fiber)), (status) =>
    FiberStatus.isSuspended(status) ? Effect.void : suspended(fiber)
  )

// Waits until some fiber sleeps on the TestClock, so that a following `TestClock.adjust` wakes it.
const sleeping: Effect.Effect<void> = Effect.flatMap(Effect.zipRight(Effect.yieldNow(), TestClock.sleeps()), (s) =>
  s.length > 0 ? Effect.void : sleeping
)

const counterValue = (counter: typeof Continuations.callbacksFired) =>
  Effect.map(Metric.value(counter), (state) => state.count)

const failureOf = <A, E>(exit: Exit.Exit<A, E>): Option.Option<E> =>
  Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()

describe("Continuations", () => {
  it.scoped("latches the first exit; poll and await observe it", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<number, string>()
      assert.isTrue(Option.isNone(yield* c.poll))
      const waiter = yield* Effect.fork(c.await)
      const settler = yield* Effect.fork(c.settled)
      yield* suspended(waiter)
      yield* suspended(settler)

      // Members work unbound, as `Effect.onExit(job, c.complete)` would use them.
      const { complete, poll } = c
      assert.isTrue(yield* complete(Exit.succeed(1)))
      assert.deepStrictEqual(yield* poll, Option.some(Exit.succeed(1)))
      assert.deepStrictEqual(yield* Fiber.join(waiter), Exit.succeed(1))
      assert.deepStrictEqual(yield* Fiber.join(settler), Exit.succeed(1))
      assert.deepStrictEqual(yield* c.await, Exit.succeed(1))
    })
  )

  it.scoped("a second complete changes nothing and fires nothing again", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<number, string>()
      const seen: Array<Exit.Exit<number, string>> = []
      yield* c.addOrRunNow("a", (exit) => Effect.sync(() => seen.push(exit)))

      assert.isTrue(yield* c.complete(Exit.succeed(1)))
      assert.isFalse(yield* c.complete(Exit.fail("late")))
      assert.isFalse(yield* c.complete(Exit.succeed(2)))
      yield* c.settled

      assert.deepStrictEqual(seen, [Exit.succeed(1)])
      assert.deepStrictEqual(yield* c.poll, Option.some(Exit.succeed(1)))
    })
  )

  it.scoped("complete fires every registered callback exactly once with the exit, then drops the map", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<string, never>()
      const seen: Array<string> = []
      for (const name of ["a", "b", "c"]) {
        const result = yield* c.addOrRunNow(name, (exit) =>
          Effect.sync(() => seen.push(`${name}:${Exit.isSuccess(exit) ? exit.value : "?"}`))
        )
        assert.strictEqual(result._tag, "Registered")
      }
      yield* c.addOrFailIfDone("d", (exit) =>
        Effect.sync(() => seen.push(`d:${Exit.isSuccess(exit) ? exit.value : "?"}`))
      )
      assert.strictEqual(yield* c.size, 4)
      assert.deepStrictEqual(seen, [], "nothing fires before completion")

      yield* c.complete(Exit.succeed("ok"))
      yield* c.settled

      assert.deepStrictEqual(seen.sort(), ["a:ok", "b:ok", "c:ok", "d:ok"])
      assert.strictEqual(yield* c.size, 0)
    })
  )

  it.scoped("addOrRunNow after completion forks the callback once with the latched exit", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<number, string>()
      yield* c.complete(Exit.fail("boom"))
      const seen: Array<Exit.Exit<number, string>> = []

      const result = yield* c.addOrRunNow("late", (exit) => Effect.sync(() => seen.push(exit)))
      assert.strictEqual(result._tag, "Fired")
      if (result._tag !== "Fired") return
      assert.deepStrictEqual(result.exit, Exit.fail("boom"))
      yield* Fiber.join(result.fiber!)
      yield* c.settled

      assert.deepStrictEqual(seen, [Exit.fail("boom")])
      assert.strictEqual(yield* c.size, 0, "a late callback is not kept")
    })
  )

  it.scoped("addOrFailIfDone after completion fails with AlreadyStopped carrying the exit and never runs it", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<number, string>()
      yield* c.complete(Exit.succeed(7))
      let runs = 0

      const error = yield* Effect.flip(c.addOrFailIfDone("late", () => Effect.sync(() => runs++)))
      yield* c.settled

      assert.instanceOf(error, Continuations.AlreadyStopped)
      assert.strictEqual(error._tag, "AlreadyStopped")
      assert.strictEqual(error.continuation, "late")
      assert.deepStrictEqual(error.exit, Exit.succeed(7))
      assert.include(error.message, "late")
      assert.strictEqual(runs, 0)
    })
  )

  it.scoped("remove tells whether the name was present; a removed callback does not fire", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<void, never>()
      const fired: Array<string> = []
      yield* c.addOrRunNow("keep", () => Effect.sync(() => fired.push("keep")))
      yield* c.addOrRunNow("drop", () => Effect.sync(() => fired.push("drop")))

      assert.isTrue(yield* c.remove("drop"))
      assert.isFalse(yield* c.remove("drop"))
      assert.isFalse(yield* c.remove("never-added"))
      assert.strictEqual(yield* c.size, 1)

      yield* c.complete(Exit.void)
      yield* c.settled
      assert.deepStrictEqual(fired, ["keep"])
      assert.isFalse(yield* c.remove("keep"), "nothing is registered once done")
    })
  )

  it.scoped("re-adding a name replaces its callback", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<void, never>()
      const fired: Array<string> = []
      yield* c.addOrRunNow("x", () => Effect.sync(() => fired.push("first")))
      yield* c.addOrFailIfDone("x", () => Effect.sync(() => fired.push("second")))
      assert.strictEqual(yield* c.size, 1)

      yield* c.complete(Exit.void)
      yield* c.settled
      assert.deepStrictEqual(fired, ["second"])
    })
  )

  it.scoped("failing, dying and slow callbacks neither block nor stop the others; failures are logged by name", () =>
    withCapturedLogs((logs) =>
      Effect.gen(function* () {
        const c = yield* Continuations.make<number, string>()
        const gate = yield* Deferred.make<void>()
        const slowStarted = yield* Deferred.make<void>()
        const slowFinished = yield* Deferred.make<void>()
        const okRan = yield* Deferred.make<number>()
        const laterRan = yield* Deferred.make<number>()

        yield* c.addOrRunNow("slow", () =>
          Deferred.succeed(slowStarted, undefined).pipe(
            Effect.zipRight(Deferred.await(gate)),
            Effect.zipRight(Deferred.succeed(slowFinished, undefined))
          )
        )
        yield* c.addOrRunNow("fails", () => Effect.fail("callback error"))
        yield* c.addOrRunNow("dies", () => Effect.die("callback defect"))
        yield* c.addOrRunNow("throws", () => {
          throw new Error("thrown while building the callback")
        })
        yield* c.addOrRunNow("ok", (exit) => Deferred.succeed(okRan, Exit.isSuccess(exit) ? exit.value : -1))
        yield* c.addOrRunNow("later", (exit) => Deferred.succeed(laterRan, Exit.isSuccess(exit) ? exit.value : -1))

        // complete returns without waiting for any callback, and the others finish while "slow" is still blocked.
        assert.isTrue(yield* c.complete(Exit.succeed(42)))
        assert.strictEqual(yield* Deferred.await(okRan), 42)
        assert.strictEqual(yield* Deferred.await(laterRan), 42)
        yield* Deferred.await(slowStarted)
        assert.isFalse(yield* Deferred.isDone(slowFinished))

        yield* Deferred.succeed(gate, undefined)
        yield* c.settled
        assert.isTrue(yield* Deferred.isDone(slowFinished))

        const warnings = logs.filter((line) => line.level === "WARN")
        assert.deepStrictEqual(warnings.map((line) => line.continuation).sort(), ["dies", "fails", "throws"])
        assert.isTrue(warnings.every((line) => line.message === "Continuations callback failed"))
        assert.include(warnings.find((line) => line.continuation === "fails")?.cause, "callback error")
        assert.include(warnings.find((line) => line.continuation === "dies")?.cause, "callback defect")
        assert.include(warnings.find((line) => line.continuation === "throws")?.cause, "thrown while building")
      })
    )
  )

  it.scoped("a callback may add and remove callbacks, poll and complete on the handle that fired it", () =>
    Effect.gen(function* () {
      const c = yield* Continuations.make<string, never>()
      const fired: Array<string> = []
      const results: Array<string> = []

      yield* c.addOrRunNow("adder", () =>
        Effect.gen(function* () {
          const added = yield* c.addOrRunNow("nested", (exit) =>
            Effect.sync(() => fired.push(`nested:${Exit.isSuccess(exit) ? exit.value : "?"}`))
          )
          results.push(`addOrRunNow:${added._tag}`)
          const refused = yield* Effect.either(c.addOrFailIfDone("refused", () => Effect.sync(() => fired.push("x"))))
          results.push(`addOrFailIfDone:${Either.isLeft(refused) ? refused.left._tag : "Registered"}`)
          results.push(`remove:${yield* c.remove("remover")}`)
          results.push(`complete:${yield* c.complete(Exit.succeed("again"))}`)
          results.push(`poll:${Option.isSome(yield* c.poll)}`)
          fired.push("adder")
        })
      )
      // Removing a callback after `complete` took the map cannot un-fire it.
      yield* c.addOrRunNow("remover", () => Effect.sync(() => fired.push("remover")))

      yield* c.complete(Exit.succeed("v"))
      yield* c.settled // also waits for "nested", forked by a callback

      assert.deepStrictEqual(fired.sort(), ["adder", "nested:v", "remover"])
      assert.deepStrictEqual(results, [
        "addOrRunNow:Fired",
        "addOrFailIfDone:AlreadyStopped",
        "remove:false",
        "complete:false",
        "poll:true"
      ])
    })
  )

  describe("fork", () => {
    it.scoped("a success becomes Done(success) and reaches the callbacks", () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const job = yield* Continuations.fork(Effect.as(Deferred.await(gate), 5))
        const seen: Array<Exit.Exit<number, never>> = []
        assert.strictEqual(
          (yield* job.addOrRunNow("cb", (exit) => Effect.sync(() => seen.push(exit))))._tag,
          "Registered"
        )

        yield* Deferred.succeed(gate, undefined)
        assert.deepStrictEqual(yield* job.settled, Exit.succeed(5))
        assert.deepStrictEqual(seen, [Exit.succeed(5)])
        assert.deepStrictEqual(yield* Fiber.join(job.fiber), 5)
      })
    )

    it.scoped("a typed failure becomes Done(fail)", () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const job = yield* Continuations.fork(Effect.zipRight(Deferred.await(gate), Effect.fail("boom" as const)))
        const seen: Array<Option.Option<string>> = []
        yield* job.addOrRunNow("cb", (exit) => Effect.sync(() => seen.push(failureOf(exit))))

        yield* Deferred.succeed(gate, undefined)
        const exit = yield* job.settled
        assert.deepStrictEqual(failureOf(exit), Option.some("boom"))
        assert.deepStrictEqual(seen, [Option.some("boom")])
      })
    )

    it.scoped("a defect becomes Done(die)", () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const job = yield* Continuations.fork(Effect.zipRight(Deferred.await(gate), Effect.dieMessage("kaput")))
        const seen: Array<boolean> = []
        yield* job.addOrRunNow("cb", (exit) =>
          Effect.sync(() => seen.push(Exit.isFailure(exit) && Cause.isDie(exit.cause)))
        )

        yield* Deferred.succeed(gate, undefined)
        const exit = yield* job.settled
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const defect = Cause.dieOption(exit.cause)
          assert.isTrue(Option.isSome(defect))
          assert.include(String(Option.getOrUndefined(defect)), "kaput")
        }
        assert.deepStrictEqual(seen, [true])
      })
    )

    it.scoped("interrupting the job becomes Done(interrupted) and reaches failure callbacks", () =>
      Effect.gen(function* () {
        const started = yield* Deferred.make<void>()
        const job = yield* Continuations.fork(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
        const seen: Array<boolean> = []
        yield* job.addOrRunNow("cb", (exit) => Effect.sync(() => seen.push(Exit.isInterrupted(exit))), {
          on: "failure"
        })

        yield* Deferred.await(started)
        yield* Fiber.interrupt(job.fiber)
        const exit = yield* job.settled
        assert.isTrue(Exit.isInterrupted(exit))
        assert.deepStrictEqual(seen, [true])
      })
    )

    it.effect("closing the scope before the job even started still latches the interruption", () =>
      Effect.gen(function* () {
        let ran = false
        const job = yield* Effect.scoped(Continuations.fork(Effect.sync(() => (ran = true))))
        const exit = yield* job.poll
        assert.isFalse(ran, "the job fiber was interrupted before its first step")
        assert.isTrue(Option.isSome(exit) && Exit.isInterrupted(exit.value))
      })
    )

    it.effect("a job that interrupts itself becomes Done(interrupted)", () =>
      Effect.gen(function* () {
        const job = yield* Effect.scoped(
          Effect.tap(Continuations.fork(Effect.interrupt), (job) => Effect.asVoid(Fiber.await(job.fiber)))
        )
        const exit = yield* job.await
        assert.isTrue(Exit.isInterrupted(exit))
      })
    )
  })

  it.scoped("on: success / failure restrict which outcome fires a callback", () =>
    Effect.gen(function* () {
      const outcomes = [Exit.succeed(1), Exit.fail("e"), Exit.die("d"), Exit.interrupt(FiberId.none)] as const
      const fired: Array<string> = []
      for (const [i, exit] of outcomes.entries()) {
        const c = yield* Continuations.make<number, string>()
        for (const on of ["success", "failure", "both"] as const) {
          yield* c.addOrRunNow(on, () => Effect.sync(() => fired.push(`${i}:${on}`)), { on })
        }
        yield* c.complete(exit)
        yield* c.settled
      }
      assert.deepStrictEqual(fired.sort(), [
        "0:both",
        "0:success",
        "1:both",
        "1:failure",
        "2:both",
        "2:failure",
        "3:both",
        "3:failure"
      ])

      // Late: the filter also applies, and the caller is told the callback was skipped.
      const c = yield* Continuations.make<number, string>()
      yield* c.complete(Exit.succeed(1))
      const skipped = yield* c.addOrRunNow("f", () => Effect.sync(() => fired.push("late failure")), { on: "failure" })
      const ran = yield* c.addOrRunNow("s", () => Effect.sync(() => fired.push("late success")), { on: "success" })
      yield* c.settled
      assert.strictEqual(skipped._tag, "Skipped")
      assert.strictEqual(ran._tag, "Fired")
      assert.isTrue(fired.includes("late success"))
      assert.isFalse(fired.includes("late failure"))
    })
  )

  it.scoped("a callback that outlives its timeout is interrupted and logged; the others are unaffected", () =>
    withCapturedLogs((logs) =>
      Effect.gen(function* () {
        const c = yield* Continuations.make<void, never>()
        const started = yield* Deferred.make<void>()
        const interrupted = yield* Deferred.make<void>()
        const quickDone = yield* Deferred.make<void>()
        yield* c.addOrRunNow(
          "stuck",
          () =>
            Deferred.succeed(started, undefined).pipe(
              Effect.zipRight(Effect.never),
              Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
            ),
          { timeout: "1 second" }
        )
        yield* c.addOrRunNow("quick", () => Deferred.succeed(quickDone, undefined), { timeout: "1 second" })

        yield* c.complete(Exit.void)
        yield* Deferred.await(started)
        yield* Deferred.await(quickDone)
        yield* TestClock.adjust("999 millis")
        assert.isFalse(yield* Deferred.isDone(interrupted), "not before its timeout")

        yield* TestClock.adjust("1 millis")
        yield* Deferred.await(interrupted)
        yield* c.settled

        const warnings = logs.filter((line) => line.level === "WARN")
        assert.strictEqual(warnings.length, 1)
        assert.strictEqual(warnings[0]?.continuation, "stuck")
        assert.include(warnings[0]?.message, "timed out after 1s")
      })
    )
  )

  it.effect("closing the scope interrupts straggling callbacks; later callbacks no longer run", () =>
    Effect.gen(function* () {
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const c = yield* Effect.scoped(
        Effect.gen(function* () {
          const c = yield* Continuations.make<void, never>()
          yield* c.addOrRunNow("straggler", () =>
            Deferred.succeed(started, undefined).pipe(
              Effect.zipRight(Effect.never),
              Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
            )
          )
          yield* c.complete(Exit.void)
          yield* Deferred.await(started)
          return c
        })
      )
      assert.isTrue(yield* Deferred.isDone(interrupted))

      let lateRan = false
      const late = yield* c.addOrRunNow("late", () => Effect.sync(() => (lateRan = true)))
      assert.strictEqual(late._tag, "Fired")
      if (late._tag === "Fired") assert.isTrue(Exit.isInterrupted(yield* Fiber.await(late.fiber!)))
      assert.isFalse(lateRan)
    })
  )

  // The pooled variant runs fewer rounds: its atomic steps are the same, only the firing path differs.
  for (const { iterations, label, options } of [
    { iterations: 2_000, label: "", options: undefined },
    { iterations: 400, label: " (pool of 3)", options: { concurrency: 3 } }
  ]) {
    it.effect(
      `the race${label}: callbacks added concurrently with complete each run exactly once (or are refused and never run)`,
      () =>
        Effect.gen(function* () {
          const adders = 16
          const tally = { Registered: 0, Fired: 0, Refused: 0 }
          const problems: Array<string> = []

          for (let i = 0; i < iterations; i++) {
            yield* Effect.scoped(
              Effect.gen(function* () {
                const c = yield* Continuations.make<number, never>(options)
                const expected = Exit.succeed(i)
                const runs = new Array<number>(adders).fill(0)
                const outcomes = new Array<keyof typeof tally>(adders)
                const start = yield* Deferred.make<void>()
                const randomYields = Effect.flatMap(Random.nextIntBetween(0, 8), (n) =>
                  Effect.forEach(Array.from({ length: n }), () => Effect.yieldNow(), { discard: true })
                )
                const callback = (k: number) => (exit: Exit.Exit<number, never>) =>
                  Effect.sync(() => {
                    runs[k]! += 1
                    if (!Exit.isSuccess(exit) || exit.value !== i)
                      problems.push(`iteration ${i}: ${k} saw a wrong exit`)
                  })

                const fibers = yield* Effect.forEach(
                  Array.from({ length: adders }, (_, k) => k),
                  (k) =>
                    Effect.fork(
                      Effect.gen(function* () {
                        yield* Deferred.await(start)
                        yield* randomYields
                        if (k % 2 === 0) {
                          const result = yield* c.addOrRunNow(`cb-${k}`, callback(k))
                          if (result._tag === "Skipped") problems.push(`iteration ${i}: ${k} skipped`)
                          else outcomes[k] = result._tag
                        } else {
                          const result = yield* Effect.either(c.addOrFailIfDone(`cb-${k}`, callback(k)))
                          if (Either.isLeft(result) && result.left.exit !== expected) {
                            problems.push(`iteration ${i}: ${k} refused with a wrong exit`)
                          }
                          outcomes[k] = Either.isLeft(result) ? "Refused" : "Registered"
                        }
                      })
                    )
                )
                const completer = yield* Effect.fork(
                  Effect.zipRight(Effect.zipRight(Deferred.await(start), randomYields), c.complete(expected))
                )
                yield* Deferred.succeed(start, undefined)
                yield* Fiber.joinAll(fibers)
                yield* Fiber.join(completer)
                yield* c.settled

                for (let k = 0; k < adders; k++) {
                  const outcome = outcomes[k]!
                  const want = outcome === "Refused" ? 0 : 1
                  tally[outcome]++
                  if (runs[k] !== want) problems.push(`iteration ${i}: ${k} (${outcome}) ran ${runs[k]} times`)
                }
                if ((yield* c.size) !== 0) problems.push(`iteration ${i}: map kept after completion`)
              })
            )
          }

          assert.deepStrictEqual(problems.slice(0, 10), [])
          // The interleavings must really straddle `complete`, or this test proves nothing.
          const total = iterations * adders
          assert.isAbove(tally.Registered, total / 10, JSON.stringify(tally))
          assert.isAbove(tally.Fired, total / 20, JSON.stringify(tally))
          assert.isAbove(tally.Refused, total / 20, JSON.stringify(tally))
        }).pipe(Effect.withRandom(Random.make("baton-continuations-race"))),
      60_000
    )
  }

  describe("retries", () => {
    it.scoped("a callback's retry schedule re-runs it on failure, on the schedule's clock", () =>
      withCapturedLogs((logs) =>
        Effect.gen(function* () {
          const c = yield* Continuations.make<number, never>()
          const attempts = yield* Queue.unbounded<number>()
          let n = 0
          yield* c.addOrRunNow(
            "flaky",
            () => Effect.flatMap(Queue.offer(attempts, ++n), () => (n < 3 ? Effect.fail("not yet") : Effect.void)),
            { retry: Schedule.spaced("1 second") }
          )
          yield* c.complete(Exit.succeed(1))
          assert.strictEqual(yield* Queue.take(attempts), 1)
          yield* sleeping
          assert.strictEqual(yield* Queue.size(attempts), 0, "no second attempt before the schedule's delay")
          yield* TestClock.adjust("1 second")
          assert.strictEqual(yield* Queue.take(attempts), 2)
          yield* sleeping
          yield* TestClock.adjust("1 second")
          assert.strictEqual(yield* Queue.take(attempts), 3)
          yield* c.settled
          assert.strictEqual(n, 3)
          assert.deepStrictEqual(
            logs.filter((l) => l.level === "WARN"),
            [],
            "a callback that succeeds on a retry is not logged as failed"
          )
        })
      )
    )

    it.scoped("the handle's default retry applies to callbacks without their own; the last failure is logged", () =>
      withCapturedLogs((logs) =>
        Effect.gen(function* () {
          const c = yield* Continuations.make<number, never>({ retry: Schedule.recurs(2) })
          const failedBefore = yield* counterValue(Continuations.callbacksFailed)
          let always = 0
          let own = 0
          yield* c.addOrRunNow("always-fails", () => Effect.suspend(() => Effect.fail(`attempt ${++always}`)))
          yield* c.addOrRunNow("own-schedule", () => Effect.suspend(() => Effect.fail(`attempt ${++own}`)), {
            retry: Schedule.recurs(0)
          })
          yield* c.addOrRunNow("dies", () => Effect.dieMessage("defects are not retried"))
          yield* c.complete(Exit.succeed(1))
          yield* c.settled
          assert.strictEqual(always, 3, "one run plus recurs(2)")
          assert.strictEqual(own, 1, "the callback's own schedule wins over the handle's")
          const warnings = logs.filter((l) => l.level === "WARN")
          assert.deepStrictEqual(warnings.map((l) => l.continuation).sort(), ["always-fails", "dies", "own-schedule"])
          assert.include(warnings.find((l) => l.continuation === "always-fails")!.cause, "attempt 3")
          assert.strictEqual((yield* counterValue(Continuations.callbacksFailed)) - failedBefore, 3)
        })
      )
    )
  })

  describe("bounded execution", () => {
    it.scoped(
      "a pool of n runs at most n callbacks at once, in firing order, failures confined to their callback",
      () =>
        Effect.gen(function* () {
          const c = yield* Continuations.make<number, never>({ concurrency: 2 })
          const started = yield* Queue.unbounded<string>()
          const gates = new Map<string, Deferred.Deferred<void>>()
          let running = 0
          let maxRunning = 0
          const names = ["a", "b", "c", "d", "e", "f"]
          for (const name of names) {
            const gate = yield* Deferred.make<void>()
            gates.set(name, gate)
            yield* c.addOrRunNow(name, () =>
              Effect.gen(function* () {
                running++
                maxRunning = Math.max(maxRunning, running)
                yield* Queue.offer(started, name)
                yield* Deferred.await(gate).pipe(Effect.ensuring(Effect.sync(() => running--)))
                if (name === "c") return yield* Effect.fail("c fails")
                if (name === "d") return yield* Effect.die("d dies")
              })
            )
          }
          yield* c.complete(Exit.succeed(0))
          assert.deepStrictEqual([yield* Queue.take(started), yield* Queue.take(started)], ["a", "b"])

          // "a" never ends here: every other callback must still get through the second slot.
          for (const name of ["b", "c", "d", "e", "f"]) {
            yield* Deferred.succeed(gates.get(name)!, undefined)
            if (name !== "f") assert.strictEqual(yield* Queue.take(started), names[names.indexOf(name) + 1])
          }
          const late = yield* c.addOrRunNow("late", () => Queue.offer(started, "late"))
          assert.strictEqual(late._tag, "Fired")
          if (late._tag === "Fired") assert.isUndefined(late.fiber, "a pooled handle forks no fiber per callback")
          assert.strictEqual(yield* Queue.take(started), "late", "a late callback goes through the pool too")
          assert.strictEqual(maxRunning, 2)

          yield* Deferred.succeed(gates.get("a")!, undefined)
          yield* c.settled
          assert.strictEqual(running, 0)
          assert.strictEqual(maxRunning, 2)
        })
    )

    it.scoped("pool workers end with the queue and start again for callbacks fired later", () =>
      Effect.gen(function* () {
        const c = yield* Continuations.make<number, never>({ concurrency: 1 })
        const seen: Array<string> = []
        yield* c.addOrRunNow("first", () => Effect.sync(() => seen.push("first")))
        yield* c.complete(Exit.succeed(0))
        yield* c.settled
        yield* c.addOrRunNow("second", () => Effect.sync(() => seen.push("second")))
        yield* c.settled
        assert.deepStrictEqual(seen, ["first", "second"])
      })
    )

    it.effect("closing the scope interrupts the pool and drops what is still queued", () =>
      Effect.gen(function* () {
        const interrupted = yield* Deferred.make<void>()
        const started = yield* Deferred.make<void>()
        let queuedRan = false
        yield* Effect.scoped(
          Effect.gen(function* () {
            const c = yield* Continuations.make<void, never>({ concurrency: 1 })
            yield* c.addOrRunNow("blocks", () =>
              Deferred.succeed(started, undefined).pipe(
                Effect.zipRight(Effect.never),
                Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
              )
            )
            yield* c.addOrRunNow("queued", () => Effect.sync(() => (queuedRan = true)))
            yield* c.complete(Exit.void)
            yield* Deferred.await(started)
          })
        )
        assert.isTrue(yield* Deferred.isDone(interrupted))
        assert.isFalse(queuedRan)
      })
    )

    it.effect("concurrency below 1 is refused", () =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(Effect.scoped(Continuations.make({ concurrency: 0 })))
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
      })
    )
  })

  it.scoped("metrics count registered, removed, fired and failed callbacks and record their durations", () =>
    Effect.gen(function* () {
      const before = {
        registered: yield* counterValue(Continuations.callbacksRegistered),
        removed: yield* counterValue(Continuations.callbacksRemoved),
        fired: yield* counterValue(Continuations.callbacksFired),
        failed: yield* counterValue(Continuations.callbacksFailed),
        duration: yield* Metric.value(Continuations.callbackDuration)
      }
      const c = yield* Continuations.make<number, never>()
      yield* c.addOrRunNow("slow", () => Effect.sleep("3 seconds"))
      yield* c.addOrRunNow("removed", () => Effect.void)
      yield* c.addOrFailIfDone("fails", () => Effect.fail("no"))
      yield* c.addOrRunNow("fails", () => Effect.fail("no")) // replaces its namesake: registered again
      yield* c.addOrRunNow("only-on-failure", () => Effect.void, { on: "failure" })
      assert.isTrue(yield* c.remove("removed"))
      assert.isFalse(yield* c.remove("removed"))
      yield* c.complete(Exit.succeed(1))
      yield* sleeping
      yield* TestClock.adjust("3 seconds")
      yield* c.settled
      yield* c.addOrRunNow("late", () => Effect.void)
      yield* Effect.either(c.addOrFailIfDone("refused", () => Effect.void))
      yield* c.settled

      const after = yield* Metric.value(Continuations.callbackDuration)
      assert.deepStrictEqual(
        {
          registered: (yield* counterValue(Continuations.callbacksRegistered)) - before.registered,
          removed: (yield* counterValue(Continuations.callbacksRemoved)) - before.removed,
          fired: (yield* counterValue(Continuations.callbacksFired)) - before.fired,
          failed: (yield* counterValue(Continuations.callbacksFailed)) - before.failed,
          durations: after.count - before.duration.count,
          durationSumMs: after.sum - before.duration.sum
        },
        // registered: slow, removed, fails ×2, only-on-failure; fired: slow, fails, late (only-on-failure excluded)
        { registered: 5, removed: 1, fired: 3, failed: 1, durations: 3, durationSumMs: 3000 }
      )
    })
  )
})
