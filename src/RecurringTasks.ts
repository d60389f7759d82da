/**
 * RecurringTasks: cron schedules that enqueue tasks, registered in code (`make`) or read from a crontab-like text
 * (`parse`), and a scoped runner (`run`) that every worker process may run at once.
 *
 * Contract:
 * - Each occurrence of a schedule named `name` at time `t` is enqueued as ONE task, with idempotency key
 *   `cron:<name>:<t as ISO 8601>` and `runAt = t`, however many processes run the same schedules: every runner
 *   computes the same occurrences, and the TaskQueue's idempotency key turns every enqueue after the first into a
 *   no-op (the unique index decides, inside the database).
 * - Missed occurrences (before the runner started, or skipped over by a late wake-up: a suspended host, a long pause)
 *   follow the schedule's policy: `"skip"` (the default) enqueues none of them; `{ backfill: n }` enqueues the last
 *   `n` of them. The most recent due occurrence at a wake-up is never "missed": it is the one the runner woke for.
 * - The durable memory is the idempotency keys themselves: a backfilled occurrence that some process already
 *   enqueued is a no-op, so only occurrences nobody enqueued become tasks. No table of its own.
 * - `parse` reports every bad line at once, each with its line number, in one typed `InvalidCrontab`.
 *
 * Limits: a pruned task no longer holds its key, so backfilling an occurrence older than the retention of finished
 * tasks enqueues it again; occurrences are computed to the second (Effect's `Cron`); enqueue errors (the database is
 * down) are retried with backoff and the occurrence is enqueued late, with its own `runAt`, once storage is back.
 *
 * @since 0.2.0
 */
import * as Clock from "effect/Clock"
import * as Cron from "effect/Cron"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Validate from "./internal/validate.js"
import * as Task from "./Task.js"
import { TaskQueue } from "./TaskQueue.js"
import type * as TaskQueueTypes from "./TaskQueue.js"

/** What to do with occurrences that passed while no runner was there to enqueue them. */
export type Missed = "skip" | { readonly backfill: number }

/** Enqueue options a recurring task may set (the runner sets `runAt` and `idempotencyKey` itself). */
export type EnqueueOptions = Omit<Task.EnqueueOptions, "runAt" | "delay" | "idempotencyKey">

/** The already-encoded request a crontab line makes (name and JSON payload), with its enqueue options. */
export type RawRequest = Omit<
  TaskQueueTypes.RawEnqueue,
  "runAt" | "idempotencyKey" | "chordId" | "chordIndex" | "runId"
>

/** A schedule: its name (part of every occurrence's key), its `Cron`, and what it enqueues. */
export interface RecurringTask {
  readonly _tag: "RecurringTask"
  /** The schedule's name; keys are `cron:<name>:<occurrence>`, so renaming a schedule starts a new series. */
  readonly name: string
  readonly cron: Cron.Cron
  /** The policy for missed occurrences; `undefined`: the runner's default. */
  readonly missed: Missed | undefined
  readonly target:
    { readonly _tag: "Call"; readonly call: Task.TaskCall } | { readonly _tag: "Raw"; readonly request: RawRequest }
}

/** One bad line of a crontab text. */
export interface CrontabProblem {
  /** 1-based line number. */
  readonly line: number
  readonly message: string
}

/** A crontab text had bad lines; `problems` lists each with its line number. Nothing was registered. */
export class InvalidCrontab extends Data.TaggedError("InvalidCrontab")<{
  readonly problems: ReadonlyArray<CrontabProblem>
}> {
  override get message(): string {
    return `invalid crontab: ${this.problems.map((p) => `line ${p.line}: ${p.message}`).join("; ")}`
  }
}

/** The idempotency key of the occurrence of schedule `name` at `occurrence`. */
export const occurrenceKey = (name: string, occurrence: Date): string => `cron:${name}:${occurrence.toISOString()}`

// The longest ISO time is 24 characters, plus "cron:" and ":": the key must fit the TaskQueue's name limit.
const maxScheduleNameLength = Validate.maxNameLength - 30

const checkName = (name: string): string | undefined =>
  Validate.name("the schedule name", name, { maxLength: maxScheduleNameLength })

const checkMissed = (missed: Missed | undefined): string | undefined =>
  missed === undefined || missed === "skip"
    ? undefined
    : Number.isSafeInteger(missed.backfill) && missed.backfill >= 0
      ? undefined
      : `backfill must be a non-negative integer, got ${String(missed.backfill)}`

const parseCron = (expression: string | Cron.Cron, timeZone: string | undefined): Either.Either<Cron.Cron, string> => {
  if (Cron.isCron(expression)) return Either.right(expression)
  const macro = macros[expression.trim()]
  return Either.flatMap(
    Either.mapLeft(
      Cron.parse(macro ?? expression, timeZone),
      (error) => `${error.message}: ${JSON.stringify(error.input)}`
    ),
    (cron) => {
      // `Cron.next` throws when it finds no occurrence (e.g. February 30th): refuse such a schedule up front, rather
      // than let its runner fiber die.
      try {
        Cron.next(cron)
        return Either.right(cron)
      } catch {
        return Either.left(`the expression ${JSON.stringify(expression)} has no next occurrence`)
      }
    }
  )
}

const macros: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *"
}

/**
 * Defines a recurring task in code: `task` with `payload` on `cron` (a 5-field or 6-field expression, seconds first,
 * an `@daily`-style macro, or a `Cron`) in `timeZone` (an IANA name; default: the process's local zone). A
 * definition-time check, like `Task.make`: a bad expression, zone, name or policy throws a `TypeError`.
 */
export const make = <T extends Task.Any>(options: {
  readonly cron: string | Cron.Cron
  readonly task: T
  readonly payload: Task.Payload<T>
  /** The schedule's name (default: the task's name); unique among the schedules one runner runs. */
  readonly name?: string | undefined
  readonly timeZone?: string | undefined
  readonly missed?: Missed | undefined
  readonly options?: EnqueueOptions | undefined
}): RecurringTask => {
  const name = options.name ?? options.task.name
  const cron = parseCron(options.cron, options.timeZone)
  const problem = Either.isLeft(cron) ? cron.left : (checkName(name) ?? checkMissed(options.missed))
  if (problem !== undefined || Either.isLeft(cron)) throw new TypeError(`RecurringTasks.make: ${problem}`)
  return {
    _tag: "RecurringTask",
    name,
    cron: cron.right,
    missed: options.missed,
    target: {
      _tag: "Call",
      // Widened to `TaskCall<Any>` (whose payload type is `never`): the runner only hands it back to `enqueue`.
      call: Task.call(options.task, options.payload, options.options ?? {}) as unknown as Task.TaskCall
    }
  }
}

const looksLikeJson = (token: string) => /^[[{"]/.test(token)

const splitFirst = (text: string, count: number): [Array<string>, string] => {
  const tokens: Array<string> = []
  let rest = text.trimStart()
  while (tokens.length < count && rest.length > 0) {
    const match = /^(\S+)\s*/.exec(rest)!
    tokens.push(match[1]!)
    rest = rest.slice(match[0].length)
  }
  return [tokens, rest.trimEnd()]
}

/**
 * Parses a crontab-like text, one schedule a line: `<cron expression> <task name> [JSON payload]`.
 *
 * - The expression has 5 fields (minute first), 6 fields (second first), or is a macro (`@hourly`, `@daily`,
 *   `@midnight`, `@weekly`, `@monthly`, `@yearly`). Six fields are read only when a task name follows them.
 * - The payload is the rest of the line, JSON (default `null`); `#` starts a comment only at the start of a line.
 * - `TZ=<IANA zone>` (or `CRON_TZ=`) sets the zone of the lines below it (default: `options.timeZone`, else local).
 * - The schedule's name is the task's name, so a task appears on at most one line (use `make` for more).
 *
 * Every line is checked; all problems come back together in `InvalidCrontab`.
 */
export const parse = (
  text: string,
  options: {
    readonly timeZone?: string | undefined
    readonly missed?: Missed | undefined
    readonly enqueue?: Omit<RawRequest, "name" | "payload"> | undefined
  } = {}
): Either.Either<ReadonlyArray<RecurringTask>, InvalidCrontab> => {
  const problems: Array<CrontabProblem> = []
  const tasks: Array<RecurringTask> = []
  const seen = new Map<string, number>()
  let timeZone = options.timeZone
  const policyProblem = checkMissed(options.missed)
  if (policyProblem !== undefined) problems.push({ line: 0, message: policyProblem })
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1
    const trimmed = raw.trim()
    if (trimmed === "" || trimmed.startsWith("#")) return
    const zone = /^(?:CRON_)?TZ\s*=\s*(\S+)$/.exec(trimmed)
    if (zone !== null) {
      if (Either.isLeft(Cron.parse("* * * * *", zone[1]!))) {
        problems.push({ line, message: `unknown time zone ${JSON.stringify(zone[1])}` })
      } else timeZone = zone[1]
      return
    }
    const [tokens] = splitFirst(trimmed, 7)
    // How many tokens the expression takes: a macro 1; else 6 when the 6 parse and a task name follows; else 5.
    const fields = tokens[0]!.startsWith("@")
      ? 1
      : tokens.length >= 7 && !looksLikeJson(tokens[6]!) && Either.isRight(Cron.parse(tokens.slice(0, 6).join(" ")))
        ? 6
        : 5
    const [head, payloadText] = splitFirst(trimmed, fields + 1)
    if (head.length < fields + 1) {
      problems.push({ line, message: "expected `<cron expression> <task name> [JSON payload]`" })
      return
    }
    const expression = head.slice(0, fields).join(" ")
    const taskName = head[fields]!
    if (fields === 1 && macros[expression] === undefined) {
      problems.push({ line, message: `unknown macro ${JSON.stringify(expression)}` })
      return
    }
    const cron = parseCron(expression, timeZone)
    if (Either.isLeft(cron)) {
      problems.push({ line, message: `bad cron expression: ${cron.left}` })
      return
    }
    const nameProblem = checkName(taskName)
    if (nameProblem !== undefined) {
      problems.push({ line, message: nameProblem.replace("the schedule name", "the task name") })
      return
    }
    let payload: unknown = null
    if (payloadText !== "") {
      try {
        payload = JSON.parse(payloadText)
      } catch (error) {
        problems.push({ line, message: `the payload is not JSON: ${(error as Error).message}` })
        return
      }
    }
    const previous = seen.get(taskName)
    if (previous !== undefined) {
      problems.push({ line, message: `task ${JSON.stringify(taskName)} is already scheduled on line ${previous}` })
      return
    }
    seen.set(taskName, line)
    tasks.push({
      _tag: "RecurringTask",
      name: taskName,
      cron: cron.right,
      missed: options.missed,
      target: { _tag: "Raw", request: { ...options.enqueue, name: taskName, payload } }
    })
  })
  return problems.length > 0 ? Either.left(new InvalidCrontab({ problems })) : Either.right(tasks)
}

/** The latest occurrence at or before `time` (Effect's `Cron.prev` works to the second and is strict). */
const latestAtOrBefore = (cron: Cron.Cron, time: number): Date => Cron.prev(cron, Math.floor(time / 1000) * 1000 + 1000)

/**
 * The occurrences a runner enqueues when it looks at `now` having handled everything up to `cursor` (exclusive of
 * `cursor`): the latest due one (if any falls in `(cursor, now]`) plus, by policy, up to `backfill` of the missed
 * ones before it, oldest first. `cursor` undefined: the first look, where every earlier occurrence counts as missed
 * and the latest one too (the runner did not wake for it). Exported for tests and tools.
 */
export const due = (cron: Cron.Cron, cursor: number | undefined, now: number, missed: Missed): ReadonlyArray<Date> => {
  const backfill = missed === "skip" ? 0 : missed.backfill
  const latest = latestAtOrBefore(cron, now)
  const result: Array<Date> = []
  if (cursor === undefined) {
    for (let at = latest; result.length < backfill; at = Cron.prev(cron, at)) result.push(at)
  } else {
    if (latest.getTime() <= cursor) return []
    result.push(latest)
    for (let at = Cron.prev(cron, latest); result.length <= backfill && at.getTime() > cursor;) {
      result.push(at)
      at = Cron.prev(cron, at)
    }
  }
  return result.reverse()
}

// Storage errors are transient (a restart, a failover): retried with backoff capped at 30 s, never given up, so the
// occurrence is enqueued late rather than lost. Bad input cannot get better: logged, and the occurrence skipped.
const storageRetry = Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("30 seconds")))

const enqueueOccurrence = (queue: TaskQueue["Type"], task: RecurringTask, occurrence: Date) => {
  const idempotencyKey = occurrenceKey(task.name, occurrence)
  const enqueue =
    task.target._tag === "Call"
      ? queue.enqueue(task.target.call.task, task.target.call.payload, {
          ...task.target.call.options,
          runAt: occurrence,
          idempotencyKey
        })
      : Effect.map(
          queue.enqueueRaw([{ ...task.target.request, runAt: occurrence.getTime(), idempotencyKey }]),
          (ids) => ids[0]!
        )
  return enqueue.pipe(
    Effect.tapErrorTag("SqlError", (error) =>
      Effect.logWarning("RecurringTasks: enqueue failed; retrying", error.message)
    ),
    Effect.retry({ schedule: storageRetry, while: (error) => error._tag === "SqlError" }),
    Effect.tap((taskId) => Effect.logDebug(`RecurringTasks: occurrence enqueued as task ${taskId}`)),
    Effect.catchAll((error) => Effect.logError("RecurringTasks: occurrence not enqueued", error)),
    Effect.annotateLogs({ schedule: task.name, occurrence: occurrence.toISOString() })
  )
}

// One schedule's loop: look (enqueue what is due), sleep until the next occurrence, look again. `next` is strictly
// after the cursor, so a wake-up a little early just sleeps again.
const runOne = (queue: TaskQueue["Type"], task: RecurringTask, missed: Missed) =>
  Effect.gen(function* () {
    let cursor: number | undefined = undefined
    while (true) {
      const now = yield* Clock.currentTimeMillis
      for (const occurrence of due(task.cron, cursor, now, missed)) yield* enqueueOccurrence(queue, task, occurrence)
      // Everything up to `now` has been looked at (on the first look too, so `skip` never enqueues the past).
      cursor = now
      const next = Cron.next(task.cron, cursor).getTime()
      yield* Effect.sleep(Duration.millis(Math.max(0, next - (yield* Clock.currentTimeMillis))))
    }
  }).pipe(Effect.annotateLogs("schedule", task.name))

/**
 * Runs the schedules until the scope closes: one fiber per schedule, each enqueueing its occurrences as they come
 * due (with `runAt` = the occurrence and the occurrence's idempotency key). Safe to run in every worker process at
 * once. `missed` is the policy of the schedules that set none (default `"skip"`). Duplicate schedule names are a
 * defect: two schedules would share keys.
 */
export const run = (
  tasks: Iterable<RecurringTask>,
  options: { readonly missed?: Missed | undefined } = {}
): Effect.Effect<void, never, TaskQueue | Scope.Scope> =>
  Effect.gen(function* () {
    const list = Array.from(tasks)
    const names = new Set<string>()
    for (const task of list) {
      if (names.has(task.name)) return yield* Effect.dieMessage(`RecurringTasks.run: duplicate schedule ${task.name}`)
      names.add(task.name)
    }
    const policyProblem = checkMissed(options.missed)
    if (policyProblem !== undefined) return yield* Effect.dieMessage(`RecurringTasks.run: ${policyProblem}`)
    const queue = yield* TaskQueue
    for (const task of list) {
      yield* Effect.forkScoped(runOne(queue, task, task.missed ?? options.missed ?? "skip"))
    }
  }).pipe(Effect.withSpan("RecurringTasks.run"))
