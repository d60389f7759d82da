/**
 * The chord coordinator: the background part of the SQL chord registry, one per registry (i.e. per process that
 * provides the layer). It shares nothing with the registry's public operations but this module's interface
 * (`ChordCoordinator`): they ask it to watch a chord, to latch an outcome they read, or to look again.
 *
 * - Watched chords: re-reads the chords someone in this process awaits (`await`, handles) and latches their
 *   `Continuations` — woken by `chord.*` completion events when a `CompletionBackend` is provided, else by polling.
 * - Events: when a `CompletionBackend` is provided, checks the chord of every body-task event it sees (batched): a
 *   running chord whose body is complete at that point was skipped by the normal path, and is dispatched.
 * - Deadlines: a timer sleeps until the earliest deadline of a running chord (at most `reconcileInterval`, so that it
 *   finds chords other processes created) and fails the chords past theirs (`chordLedger.expireChord`, under the
 *   dispatch guard: one process wins). The reconciler pass expires them too.
 * - The reconciler pass, every `reconcileInterval` (as a step of the `Reconciler` service when one is provided — its
 *   runner, `Reconciler.run`, then drives it — else on its own schedule): chords whose counters say "complete" (or
 *   "failed") but that are not dispatched, chords with no body progress for `staleAfter` and no live body task
 *   (counters recounted from the task rows), and leftover body tasks of failed chords. Every dispatch it makes goes
 *   through the same guard as the normal path (`chordLedger.settleChord`) and counts in the healed-chords metric.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { ChordFailed, ChordFailure } from "../../ChordRegistry.js"
import { CompletionBackend, type CompletionEvent, type StreamError } from "../../CompletionBackend.js"
import * as Continuations from "../../Continuations.js"
import { Reconciler } from "../../Reconciler.js"
import { TaskId } from "../../TaskQueue.js"
import { type ChordRow, expireChord, type LedgerContext, lockRunning, settleChord, sweepBody } from "./chordLedger.js"

/** Settings of the registry's coordinator. */
export interface Options {
  /**
   * Period of the reconciler pass in this process (default 5 s; 0 disables it). With a `Reconciler` service in the
   * context the pass is registered as its step `chord.dispatch-undispatched` (at most this often) instead.
   */
  readonly reconcileInterval?: Duration.DurationInput | undefined
  /** A running chord whose body made no progress for this long and has no live body task is recounted (default 1 min). */
  readonly staleAfter?: Duration.DurationInput | undefined
  /**
   * How often awaited chords are re-read: from `min`, doubling to `max` while nothing changes. Defaults: 10 ms .. 250 ms
   * without a CompletionBackend; with one, `chord.*` events wake awaits and the re-read is only a safety net: every
   * 2 s (`min` defaults to `max`), so an await on the happy path does not poll.
   */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /** Chords handled per reconciler query (default 100). */
  readonly reconcileBatch?: number | undefined
}

/** The name of the chord step when a `Reconciler` service drives the reconciler pass. */
export const reconcileStepName = "chord.dispatch-undispatched"

/** The stored failure of a chord, decoded. */
export const decodeFailure = Schema.decodeUnknownOption(Schema.parseJson(ChordFailure))

/** Milliseconds of an optional duration. */
export const millis = (input: Duration.DurationInput | undefined): number | undefined =>
  input === undefined ? undefined : Duration.toMillis(Duration.decode(input))

/** How a chord ended, as its awaiters see it. */
export type Outcome = Exit.Exit<TaskId, ChordFailed>

/** The latched outcome of an ended chord row; undefined while it runs. */
export const outcomeOf = (
  row: Pick<ChordRow, "id" | "state" | "callback_task_id" | "failure">
): Outcome | undefined => {
  if (row.state === "running") return undefined
  if (row.state === "completed") {
    // callback_task_id is written in the dispatching transaction, so a completed row always has it.
    return Exit.succeed(TaskId.make(row.callback_task_id ?? ""))
  }
  const failure = row.failure === null ? Option.none() : decodeFailure(row.failure)
  return Exit.fail(
    new ChordFailed(
      Option.getOrElse(failure, () => ({
        chordId: row.id,
        reason: row.state === "cancelled" ? ("cancelled" as const) : ("body_failed" as const)
      }))
    )
  )
}

interface Watch {
  readonly continuations: Continuations.Continuations<TaskId, ChordFailed>
  readonly scope: Scope.CloseableScope
}

/** What the registry's public operations may ask of the coordinator. */
export interface ChordCoordinator {
  /** Registers an awaiter of `chordId` (before the caller reads the row, so an end in between is not missed). */
  readonly watch: (chordId: string) => Effect.Effect<Continuations.Continuations<TaskId, ChordFailed>>
  /** Latches an outcome the caller read. */
  readonly latch: (chordId: string, outcome: Outcome) => Effect.Effect<void>
  /** Drops the watch of a chord that does not exist. */
  readonly forget: (chordId: string) => Effect.Effect<void>
  /** Asks the watcher to re-read the watched chords now. */
  readonly nudge: Effect.Effect<void>
  /** One reconciler pass; the number of chords it dispatched or failed. */
  readonly reconcile: Effect.Effect<number, SqlError>
  /** A chord with this deadline (epoch ms) was created here: the deadline timer looks again. */
  readonly deadlineAdded: (at: number) => Effect.Effect<void>
}

/** Starts the coordinator in the current scope. */
export const makeCoordinator = (
  options: Options,
  ctx: LedgerContext
): Effect.Effect<ChordCoordinator, never, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const backend = yield* Effect.serviceOption(CompletionBackend)
    const reconcileEvery = Duration.decode(options.reconcileInterval ?? Duration.seconds(5))
    const staleMs = millis(options.staleAfter) ?? 60_000
    const batch = Math.max(1, options.reconcileBatch ?? 100)
    const pollMax = Duration.decode(
      options.pollInterval?.max ?? (Option.isSome(backend) ? Duration.seconds(2) : Duration.millis(250))
    )
    // With a completion stream, events wake awaits (not held back by open transactions on Postgres): no fast polling.
    const pollMin = Duration.min(
      Duration.decode(options.pollInterval?.min ?? (Option.isSome(backend) ? pollMax : Duration.millis(10))),
      pollMax
    )

    // ---- watched chords: awaits and handles in this process --------------------------------------------------------

    const watched = new Map<string, Watch>()
    const wakeWatcher = yield* Queue.sliding<void>(1)

    yield* Effect.addFinalizer(() =>
      Effect.forEach(watched.values(), (watch) => Scope.close(watch.scope, Exit.void), { discard: true })
    )

    const latch = (chordId: string, outcome: Outcome) =>
      Effect.suspend(() => {
        const watch = watched.get(chordId)
        if (watch === undefined) return Effect.void
        watched.delete(chordId)
        return watch.continuations.complete(outcome)
      })

    // Registers first; the caller (or the watcher) reads the state after, so an end in between is not missed.
    const watch = (chordId: string): Effect.Effect<Continuations.Continuations<TaskId, ChordFailed>> =>
      Effect.uninterruptible(
        Effect.suspend(() => {
          const existing = watched.get(chordId)
          if (existing !== undefined) return Effect.succeed(existing.continuations)
          return Effect.gen(function* () {
            // A scope of its own, not a child of the registry's: a handle's callbacks must not pile up finalizers in a
            // long-lived registry. Still-watched ones are closed when the registry shuts down.
            const scope = yield* Scope.make()
            const continuations = yield* Continuations.make<TaskId, ChordFailed>().pipe(Scope.extend(scope))
            const raced = watched.get(chordId)
            if (raced !== undefined) return raced.continuations
            watched.set(chordId, { continuations, scope })
            yield* Queue.offer(wakeWatcher, undefined)
            return continuations
          })
        })
      )

    const checkWatched = Effect.gen(function* () {
      const ids = [...watched.keys()]
      let ended = 0
      for (let i = 0; i < ids.length; i += 500) {
        const rows = yield* sql<Pick<ChordRow, "id" | "state" | "callback_task_id" | "failure">>`
          SELECT id, state, callback_task_id, failure FROM baton_chords
          WHERE id IN ${sql.in(ids.slice(i, i + 500))} AND state <> 'running'`
        for (const row of rows) {
          const outcome = outcomeOf(row)
          if (outcome !== undefined) {
            ended++
            yield* latch(row.id, outcome)
          }
        }
      }
      return ended
    })

    const watcher = Effect.gen(function* () {
      let idle = pollMin
      while (true) {
        if (watched.size === 0) {
          yield* Queue.take(wakeWatcher)
          idle = pollMin
        }
        const ended = yield* checkWatched.pipe(
          Effect.catchAll((error) => Effect.as(Effect.logWarning("reading awaited chords failed", error), 0))
        )
        if (ended > 0) idle = pollMin
        if (watched.size === 0) continue
        const woken = yield* Effect.raceFirst(
          Effect.as(Queue.take(wakeWatcher), true),
          Effect.as(Effect.sleep(idle), false)
        )
        idle = woken ? pollMin : Duration.min(Duration.times(idle, 2), pollMax)
      }
    })

    // ---- the reconciler ------------------------------------------------------------------------------------------------

    /** Locks a running chord and settles it; true if this dispatched (or failed) it. */
    const heal = (chordId: string) =>
      sql.withTransaction(
        Effect.gen(function* () {
          const chord = yield* lockRunning(ctx, chordId)
          if (chord === undefined) return false
          const now = yield* Clock.currentTimeMillis
          const settled = yield* settleChord(ctx, chord, now, true)
          return settled === "completed" || settled === "failed"
        })
      )

    const healAll = (ids: ReadonlyArray<string>) =>
      Effect.reduce(ids, 0, (n, id) =>
        heal(id).pipe(
          Effect.map((healed) => (healed ? n + 1 : n)),
          Effect.tap((healed) =>
            healed > n ? Effect.logWarning("reconciler dispatched a chord", { chordId: id }) : Effect.void
          )
        )
      )

    // ---- deadlines -----------------------------------------------------------------------------------------------------

    /** Fails (or settles) the running chords past their deadline; how many this process ended. */
    const expireDue = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const due = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE state = 'running'
        AND deadline_at IS NOT NULL AND deadline_at <= ${now} ORDER BY deadline_at LIMIT ${batch}`
      let ended = 0
      for (const row of due) {
        const settled = yield* sql.withTransaction(
          Effect.gen(function* () {
            const chord = yield* lockRunning(ctx, row.id)
            if (chord === undefined) return "not-running" as const
            return yield* expireChord(ctx, chord, yield* Clock.currentTimeMillis)
          })
        )
        if (settled === "completed" || settled === "failed") ended++
      }
      if (ended > 0) yield* Queue.offer(wakeWatcher, undefined)
      return { ended, full: due.length === batch }
    })

    const wakeDeadlines = yield* Queue.sliding<void>(1)

    // Sleeps until the earliest deadline of a running chord (or the reconcile interval, to find chords other processes
    // created), then expires what is due. Every process runs this; the dispatch guard makes one of them win.
    const deadlineTimer = Effect.gen(function* () {
      while (true) {
        const pass = yield* expireDue.pipe(
          Effect.catchAll((error) =>
            Effect.as(Effect.logWarning("chord deadlines: pass failed", error), { ended: 0, full: false })
          )
        )
        if (pass.full) continue
        const now = yield* Clock.currentTimeMillis
        const next = yield* sql<{ next: number | null }>`SELECT min(deadline_at) AS next FROM baton_chords
          WHERE state = 'running' AND deadline_at IS NOT NULL`.pipe(
          Effect.map((rows) =>
            rows[0]?.next === null || rows[0]?.next === undefined ? undefined : Number(rows[0].next)
          ),
          Effect.catchAll(() => Effect.succeed(undefined))
        )
        const everyMs = Duration.toMillis(reconcileEvery)
        const waitMs = next === undefined ? everyMs : Math.min(Math.max(0, next - now), everyMs)
        yield* Effect.raceFirst(Queue.take(wakeDeadlines), Effect.sleep(Duration.millis(waitMs)))
      }
    })

    const reconcile = Effect.gen(function* () {
      const expired = yield* expireDue
      const now = yield* Clock.currentTimeMillis
      // 1. Counters say "complete" or "failed" but nobody dispatched (the normal path never leaves this state behind).
      const due = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE state = 'running'
        AND (succeeded + failed + cancelled >= expected OR (failure_policy = 'fail' AND failed + cancelled > 0))
        ORDER BY created_at LIMIT ${batch}`
      // 2. No body progress for a while and no live body task (nor running inner chord): the counters missed something;
      // recount and settle.
      const stale = yield* sql<{ id: string }>`SELECT c.id FROM baton_chords c WHERE c.state = 'running'
        AND COALESCE(c.last_body_at, c.created_at) < ${now - staleMs}
        AND c.succeeded + c.failed + c.cancelled < c.expected
        AND NOT EXISTS (SELECT 1 FROM baton_tasks t WHERE t.chord_id = c.id AND t.state IN ('pending', 'running'))
        AND NOT EXISTS (SELECT 1 FROM baton_chords k WHERE k.parent_id = c.id AND k.state = 'running')
        ORDER BY c.created_at LIMIT ${batch}`
      const healed = yield* healAll([...new Set([...due, ...stale].map((row) => row.id))])
      // 3. Failed / cancelled chords whose body still had live tasks (rows another transaction held at the time).
      const open = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE body_open = 1
        ORDER BY created_at LIMIT ${batch}`
      yield* Effect.forEach(open, (row) => sql.withTransaction(sweepBody(ctx, row.id, now)), { discard: true })
      if (healed > 0) yield* Queue.offer(wakeWatcher, undefined)
      return healed + expired.ended
    }).pipe(Effect.withSpan("ChordRegistry.reconcile"))

    // ---- events (when a CompletionBackend is provided) -----------------------------------------------------------------

    const onEvents = (events: Chunk.Chunk<{ readonly kind: string; readonly chordId?: string | undefined }>) =>
      Effect.gen(function* () {
        let wake = false
        const bodies = new Set<string>()
        for (const event of events) {
          if (event.chordId === undefined) continue
          if (event.kind === "task") bodies.add(event.chordId)
          // A body task's progress decides nothing about its chord.
          else if (event.kind !== "task.progress" && watched.has(event.chordId)) wake = true
        }
        if (wake) yield* Queue.offer(wakeWatcher, undefined)
        if (bodies.size === 0) return
        // The transaction that committed a body completion also settled its chord; a running chord whose body is
        // complete here was skipped by that path.
        const due = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE id IN ${sql.in([...bodies])}
          AND state = 'running'
          AND (succeeded + failed + cancelled >= expected OR (failure_policy = 'fail' AND failed + cancelled > 0))`
        if (due.length > 0) {
          yield* healAll(due.map((row) => row.id))
          yield* Queue.offer(wakeWatcher, undefined)
        }
      })

    if (Option.isSome(backend)) {
      const completions = backend.value
      let cursor: string | undefined
      const consume = (stream: Stream.Stream<CompletionEvent, StreamError>) =>
        stream.pipe(
          Stream.groupedWithin(1000, Duration.millis(20)),
          Stream.runForEach((events) =>
            onEvents(events).pipe(
              Effect.catchAll((error) => Effect.logWarning("chord coordinator: handling events failed", error)),
              Effect.zipRight(
                Effect.sync(() => {
                  cursor = Chunk.last(events).pipe(Option.getOrThrow).cursor
                })
              )
            )
          )
        )
      // The first subscription is active before the registry is handed out, so no event committed after this layer
      // was built is missed; later ones resume after the last handled event.
      const first = yield* Effect.either(completions.subscribe())
      const resubscribe = Effect.scoped(
        Effect.flatMap(
          completions
            .subscribe(cursor === undefined ? {} : { after: cursor })
            .pipe(Effect.catchTag("CursorExpired", () => completions.subscribe())),
          consume
        )
      )
      let streamFailures = 0
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          if (Either.isRight(first)) yield* consume(first.right)
          else yield* Effect.fail(first.left)
        }).pipe(
          // A stream that ends or fails once is routine (a dropped LISTEN connection, or the storage closing while
          // the process shuts down, before this fiber is interrupted): debug. Three failures in a row: a warning.
          Effect.catchAllCause((cause) =>
            Effect.logDebug("chord coordinator: completion stream ended; resubscribing", Cause.pretty(cause))
          ),
          Effect.zipRight(
            Effect.suspend(() => resubscribe).pipe(
              Effect.tapErrorCause((cause) =>
                ++streamFailures >= 3
                  ? Effect.logWarning("chord coordinator: completion stream failed; resubscribing", Cause.pretty(cause))
                  : Effect.logDebug("chord coordinator: completion stream failed; resubscribing", Cause.pretty(cause))
              ),
              Effect.retry(
                Schedule.exponential(Duration.millis(100)).pipe(Schedule.union(Schedule.spaced("5 seconds")))
              ),
              Effect.forever
            )
          ),
          Effect.ignore
        )
      )
    }

    yield* Effect.forkScoped(watcher)
    if (Duration.toMillis(reconcileEvery) > 0) yield* Effect.forkScoped(deadlineTimer)
    const reconciler = yield* Effect.serviceOption(Reconciler)
    if (Duration.toMillis(reconcileEvery) > 0 && Option.isSome(reconciler)) {
      // A Reconciler service is present: the pass is one of its steps (its runner drives it, measured per step).
      yield* reconciler.value.register({ name: reconcileStepName, run: reconcile, interval: reconcileEvery })
    } else if (Duration.toMillis(reconcileEvery) > 0) {
      yield* Effect.forkScoped(
        reconcile.pipe(
          Effect.catchAll((error) => Effect.as(Effect.logWarning("chord reconciler pass failed", error), 0)),
          Effect.repeat(Schedule.spaced(reconcileEvery)),
          Effect.delay(reconcileEvery)
        )
      )
    }

    const latchNotFound = (chordId: string) =>
      Effect.suspend(() => {
        const entry = watched.get(chordId)
        if (entry === undefined) return Effect.void
        watched.delete(chordId)
        return Scope.close(entry.scope, Exit.void)
      })

    return {
      watch,
      latch,
      forget: latchNotFound,
      nudge: Effect.asVoid(Queue.offer(wakeWatcher, undefined)),
      reconcile,
      deadlineAdded: () => Effect.asVoid(Queue.offer(wakeDeadlines, undefined))
    }
  })
