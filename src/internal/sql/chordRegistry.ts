/**
 * `ChordRegistry` on `@effect/sql` (Postgres, a SQLite file, SQLite `:memory:`), with the chord coordinator.
 *
 * - `chord` encodes everything first (an invalid payload writes nothing), then in one transaction inserts the chord row
 *   (`ON CONFLICT DO NOTHING` on `(namespace, idempotency_key)`: a repeated key returns the existing chord) and the
 *   body tasks through `TaskQueue.enqueueRaw`, which joins the transaction. An empty body is dispatched in that same
 *   transaction.
 * - Counting and dispatch happen in the transaction that completes a body task (see `internal/chordLedger.ts`), in
 *   whatever process completes it: the producer may be long gone.
 * - The coordinator (a fiber per registry, i.e. per process that provides this layer):
 *   - re-reads the chords someone in this process awaits (`await`, handles) and latches their `Continuations` —
 *     woken by `chord.*` completion events when a `CompletionBackend` is provided, else by polling;
 *   - when a `CompletionBackend` is provided, checks the chord of every body-task event it sees (batched): a running
 *     chord whose body is complete at that point was skipped by the normal path, and is dispatched;
 *   - runs the reconciler pass every `reconcileInterval` (as a step of the `Reconciler` service when one is provided —
 *     its runner, `Reconciler.run`, then drives it — else on its own schedule): chords whose counters say "complete"
 *     (or "failed") but that are not dispatched, chords with no body progress for `staleAfter` and no live body task (counters recounted
 *     from the task rows), and leftover body tasks of failed chords. Every dispatch it makes goes through the same
 *     guard as the normal path and counts in `baton_chords_healed_total`.
 *
 * @since 0.1.0
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
import {
  ChordFailed,
  ChordFailure,
  type ChordHandle,
  ChordId,
  type ChordInfo,
  ChordNotFound,
  type ChordPage,
  ChordRegistry,
  type ChordSpec,
  type ChordState,
  type FailurePolicy,
  type ListOptions
} from "../../ChordRegistry.js"
import { CompletionBackend, type CompletionEvent, type StreamError } from "../../CompletionBackend.js"
import * as Continuations from "../../Continuations.js"
import {
  cancelChord,
  type ChordRow,
  type LedgerContext,
  lockRunning,
  type SealedCall,
  settleChord,
  sweepBody
} from "./chordLedger.js"
import { makeLedgerContext } from "./chordLedger.js"
import { encodeCall } from "../request.js"
import { Reconciler } from "../../Reconciler.js"
import { Storage } from "../../Storage.js"
import type * as Task from "../../Task.js"
import { InvalidInput, InvalidPayload, type RawEnqueue, TaskId, TaskQueue } from "../../TaskQueue.js"
import * as Validate from "../validate.js"

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
   * without a CompletionBackend; 10 ms .. 2 s with one (events wake awaits; polling is the safety net).
   */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /** Chords handled per reconciler query (default 100). */
  readonly reconcileBatch?: number | undefined
}

/** The chord's own fields (its body tasks and callbacks are checked when they are encoded and enqueued). */
const checkSpec = (spec: ChordSpec<ReadonlyArray<Task.TaskCall>, Task.Any, Task.Any, FailurePolicy>) => {
  const invalid = (field: string, message: string | undefined) =>
    message === undefined ? undefined : new InvalidInput({ field, message })
  if (!Array.isArray(spec.body))
    return new InvalidInput({ field: "body", message: "body must be an array of Task.call(...)" })
  if (spec.body.length > Validate.maxChordSize) {
    return new InvalidInput({
      field: "body",
      message: `a chord has at most ${Validate.maxChordSize} body tasks, got ${spec.body.length}`
    })
  }
  return (
    (spec.namespace === undefined ? undefined : invalid("namespace", Validate.name("namespace", spec.namespace))) ??
    (spec.tags === undefined ? undefined : invalid("tags", Validate.tags("tags", spec.tags))) ??
    (spec.idempotencyKey === undefined
      ? undefined
      : invalid("idempotencyKey", Validate.name("idempotencyKey", spec.idempotencyKey))) ??
    (spec.failurePolicy === undefined || spec.failurePolicy === "fail" || spec.failurePolicy === "continue"
      ? undefined
      : new InvalidInput({
          field: "failurePolicy",
          message: `failurePolicy must be "fail" or "continue", got ${JSON.stringify(String(spec.failurePolicy))}`
        }))
  )
}

/** The name of the chord step when a `Reconciler` service drives the reconciler pass. */
export const reconcileStepName = "chord.dispatch-undispatched"

const decodeFailure = Schema.decodeUnknownOption(Schema.parseJson(ChordFailure))

const millis = (input: Duration.DurationInput | undefined): number | undefined =>
  input === undefined ? undefined : Duration.toMillis(Duration.decode(input))

const union = (a: ReadonlyArray<string>, b: ReadonlyArray<string> | undefined): ReadonlyArray<string> =>
  b === undefined || b.length === 0 ? a : [...new Set([...a, ...b])]

// Page size of `list`: default 50, 1 to 1,000.
const pageLimit = (limit: number | undefined) => Math.min(1000, Math.max(1, Math.floor(limit ?? 50)))

const toInfo = (row: ChordRow): ChordInfo => ({
  chordId: ChordId.make(row.id),
  state: row.state,
  namespace: row.namespace,
  tags: JSON.parse(row.tags) as ReadonlyArray<string>,
  failurePolicy: row.failure_policy,
  idempotencyKey: row.idempotency_key ?? undefined,
  expected: Number(row.expected),
  succeeded: Number(row.succeeded),
  failed: Number(row.failed),
  cancelled: Number(row.cancelled),
  callbackName: row.callback_name,
  callbackTaskId: row.callback_task_id === null ? undefined : TaskId.make(row.callback_task_id),
  errorTaskId: row.error_task_id === null ? undefined : TaskId.make(row.error_task_id),
  failure: row.failure === null ? Option.none() : decodeFailure(row.failure),
  healed: Number(row.healed) === 1,
  createdAt: new Date(Number(row.created_at)),
  lastBodyAt: row.last_body_at === null ? undefined : new Date(Number(row.last_body_at)),
  dispatchedAt: row.dispatched_at === null ? undefined : new Date(Number(row.dispatched_at))
})

type Outcome = Exit.Exit<TaskId, ChordFailed>

/** The latched outcome of an ended chord row; undefined while it runs. */
const outcomeOf = (row: Pick<ChordRow, "id" | "state" | "callback_task_id" | "failure">): Outcome | undefined => {
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

/** Builds the registry and starts its coordinator in the current scope. */
export const make = (
  options: Options = {}
): Effect.Effect<ChordRegistry["Type"], never, SqlClient.SqlClient | Storage | TaskQueue | Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const storage = yield* Storage
    const queue = yield* TaskQueue
    const backend = yield* Effect.serviceOption(CompletionBackend)
    const ctx: LedgerContext = makeLedgerContext(sql, storage.dialect, storage.channelPrefix)
    const reconcileEvery = Duration.decode(options.reconcileInterval ?? Duration.seconds(5))
    const staleMs = millis(options.staleAfter) ?? 60_000
    const batch = Math.max(1, options.reconcileBatch ?? 100)
    const pollMin = Duration.decode(options.pollInterval?.min ?? Duration.millis(10))
    const pollMax = Duration.decode(
      options.pollInterval?.max ?? (Option.isSome(backend) ? Duration.seconds(2) : Duration.millis(250))
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

    const reconcile = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      // 1. Counters say "complete" or "failed" but nobody dispatched (the normal path never leaves this state behind).
      const due = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE state = 'running'
        AND (succeeded + failed + cancelled >= expected OR (failure_policy = 'fail' AND failed + cancelled > 0))
        ORDER BY created_at LIMIT ${batch}`
      // 2. No body progress for a while and no live body task: the counters missed something; recount and settle.
      const stale = yield* sql<{ id: string }>`SELECT c.id FROM baton_chords c WHERE c.state = 'running'
        AND COALESCE(c.last_body_at, c.created_at) < ${now - staleMs}
        AND c.succeeded + c.failed + c.cancelled < c.expected
        AND NOT EXISTS (SELECT 1 FROM baton_tasks t WHERE t.chord_id = c.id AND t.state IN ('pending', 'running'))
        ORDER BY c.created_at LIMIT ${batch}`
      const healed = yield* healAll([...new Set([...due, ...stale].map((row) => row.id))])
      // 3. Failed / cancelled chords whose body still had live tasks (rows another transaction held at the time).
      const open = yield* sql<{ id: string }>`SELECT id FROM baton_chords WHERE body_open = 1
        ORDER BY created_at LIMIT ${batch}`
      yield* Effect.forEach(open, (row) => sql.withTransaction(sweepBody(ctx, row.id, now)), { discard: true })
      if (healed > 0) yield* Queue.offer(wakeWatcher, undefined)
      return healed
    }).pipe(Effect.withSpan("ChordRegistry.reconcile"))

    // ---- events (when a CompletionBackend is provided) -----------------------------------------------------------------

    const onEvents = (events: Chunk.Chunk<{ readonly kind: string; readonly chordId?: string | undefined }>) =>
      Effect.gen(function* () {
        let wake = false
        const bodies = new Set<string>()
        for (const event of events) {
          if (event.chordId === undefined) continue
          if (event.kind === "task") bodies.add(event.chordId)
          else if (watched.has(event.chordId)) wake = true
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
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          if (Either.isRight(first)) yield* consume(first.right)
          else yield* Effect.fail(first.left)
        }).pipe(
          Effect.catchAllCause((cause) =>
            Effect.logWarning("chord coordinator: completion stream ended; resubscribing", Cause.pretty(cause))
          ),
          Effect.zipRight(
            Effect.suspend(() => resubscribe).pipe(
              Effect.tapErrorCause((cause) =>
                Effect.logWarning("chord coordinator: completion stream failed; resubscribing", Cause.pretty(cause))
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

    // ---- the public operations -----------------------------------------------------------------------------------------

    const toHandle = (
      chordId: string,
      created: boolean,
      continuations: Continuations.Continuations<TaskId, ChordFailed>
    ): ChordHandle => ({
      chordId: ChordId.make(chordId),
      created,
      await: Effect.flatten(continuations.await),
      continuations
    })

    const findRow = (chordId: string) =>
      sql<ChordRow>`SELECT * FROM baton_chords WHERE id = ${chordId}`.pipe(
        Effect.flatMap((rows) =>
          rows[0] === undefined ? Effect.fail(new ChordNotFound({ chordId })) : Effect.succeed(rows[0])
        )
      )

    const get = (chordId: string) =>
      Effect.map(findRow(chordId), toInfo).pipe(Effect.withSpan("ChordRegistry.get", { attributes: { chordId } }))

    // Subscribe (watch), then read, then wait.
    const handle = (chordId: string) =>
      Effect.gen(function* () {
        const continuations = yield* watch(chordId)
        const row = yield* findRow(chordId).pipe(Effect.tapError(() => latchNotFound(chordId)))
        const outcome = outcomeOf(row)
        if (outcome !== undefined) yield* latch(chordId, outcome)
        return toHandle(chordId, false, continuations)
      })

    const latchNotFound = (chordId: string) =>
      Effect.suspend(() => {
        const entry = watched.get(chordId)
        if (entry === undefined) return Effect.void
        watched.delete(chordId)
        return Scope.close(entry.scope, Exit.void)
      })

    const await_ = (chordId: string) =>
      Effect.flatMap(handle(chordId), (h) => h.await).pipe(
        Effect.withSpan("ChordRegistry.await", { attributes: { chordId } })
      )

    const seal = (
      task: Task.Any,
      args: unknown,
      options: Task.EnqueueOptions,
      field: "results" | "failure",
      placeholder: unknown,
      namespace: string,
      tags: ReadonlyArray<string>,
      now: number
    ): Effect.Effect<SealedCall, InvalidPayload | InvalidInput> =>
      encodeCall(
        task,
        { ...(args as object), [field]: placeholder },
        { ...options, delay: undefined, namespace: options.namespace ?? namespace, tags: union(tags, options.tags) },
        now
      ).pipe(
        Effect.flatMap((request) => {
          const { payload, ...rest } = request
          if (typeof payload !== "object" || payload === null || Array.isArray(payload) || !(field in payload)) {
            return Effect.fail(
              new InvalidPayload({
                task: task.name,
                message: `a chord ${field === "results" ? "callback" : "onError task"} needs a struct payload with a "${field}" field (see ChordRegistry.${field === "results" ? "callbackPayload" : "errorPayload"})`
              })
            )
          }
          const { [field]: _omitted, ...encodedArgs } = payload as Record<string, unknown>
          const delayMs = millis(options.delay)
          return Effect.succeed({
            request: rest,
            args: encodedArgs,
            ...(delayMs === undefined ? {} : { delayMs })
          })
        })
      )

    const chord = <
      Body extends ReadonlyArray<Task.TaskCall>,
      CB extends Task.Any,
      EB extends Task.Any,
      P extends FailurePolicy
    >(
      spec: ChordSpec<Body, CB, EB, P>
    ): Effect.Effect<ChordHandle, InvalidPayload | InvalidInput | SqlError> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const namespace = spec.namespace ?? "default"
        const tags = spec.tags ?? []
        const policy: FailurePolicy = spec.failurePolicy ?? "fail"
        const problem = checkSpec(spec)
        if (problem !== undefined) return yield* problem
        const chordId = crypto.randomUUID()
        yield* Effect.annotateCurrentSpan({
          chordId,
          callback: spec.callback.task.name,
          bodyTasks: [...new Set(spec.body.map((call) => call.task.name))].join(","),
          size: spec.body.length
        })
        // Everything is encoded before the transaction: an invalid payload fails here and nothing is written.
        const body = yield* Effect.forEach(spec.body, (call, index) =>
          encodeCall(
            call.task,
            call.payload,
            {
              ...call.options,
              idempotencyKey: undefined,
              namespace: call.options.namespace ?? namespace,
              tags: union(tags, call.options.tags)
            },
            now
          ).pipe(Effect.map((request): RawEnqueue => ({ ...request, chordId, chordIndex: index })))
        )
        const callback = yield* seal(
          spec.callback.task,
          spec.callback.args,
          spec.callback.options,
          "results",
          [],
          namespace,
          tags,
          now
        )
        const onError =
          spec.onError === undefined
            ? undefined
            : yield* seal(
                spec.onError.task,
                spec.onError.args,
                spec.onError.options,
                "failure",
                { chordId, reason: "cancelled" },
                namespace,
                tags,
                now
              )
        const row = {
          id: chordId,
          namespace,
          tags: JSON.stringify(tags),
          idempotency_key: spec.idempotencyKey ?? null,
          state: "running",
          failure_policy: policy,
          expected: body.length,
          succeeded: 0,
          failed: 0,
          cancelled: 0,
          callback_name: spec.callback.task.name,
          callback: JSON.stringify(callback),
          on_error: onError === undefined ? null : JSON.stringify(onError),
          healed: 0,
          body_open: 0,
          created_at: now
        }
        const result = yield* sql.withTransaction(
          Effect.gen(function* () {
            const inserted = yield* sql<{ id: string }>`INSERT INTO baton_chords ${sql.insert(row)}
              ON CONFLICT DO NOTHING RETURNING id`
            if (inserted.length === 0) {
              const existing = yield* sql<{ id: string }>`SELECT id FROM baton_chords
                WHERE namespace = ${namespace} AND idempotency_key = ${row.idempotency_key}`
              if (existing[0] === undefined) {
                return yield* Effect.dieMessage(`chord ${chordId} was neither inserted nor found`)
              }
              return { id: existing[0].id, created: false }
            }
            yield* queue.enqueueRaw(body)
            if (body.length === 0) {
              const locked = yield* lockRunning(ctx, chordId)
              if (locked !== undefined) yield* settleChord(ctx, locked, now, false)
            }
            return { id: chordId, created: true }
          })
        )
        const continuations = yield* watch(result.id)
        return toHandle(result.id, result.created, continuations)
      }).pipe(Effect.withSpan("ChordRegistry.chord"))

    const cancel = (chordId: string) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const cancelled = yield* sql.withTransaction(cancelChord(ctx, chordId, now))
        if (cancelled) yield* Queue.offer(wakeWatcher, undefined)
        return cancelled
      }).pipe(Effect.withSpan("ChordRegistry.cancel", { attributes: { chordId } }))

    const list = (options: ListOptions = {}) =>
      Effect.gen(function* () {
        const limit = pageLimit(options.limit)
        const offset = Math.max(0, Math.floor(options.offset ?? 0))
        const where = options.state === undefined ? sql`1 = 1` : sql`state = ${options.state}`
        const rows = yield* sql<ChordRow>`SELECT * FROM baton_chords WHERE ${where}
          ORDER BY created_at DESC, id DESC LIMIT ${limit} OFFSET ${offset}`
        const countRows = yield* sql<{ state: ChordState; n: number }>`SELECT state, count(*) AS n FROM baton_chords
          GROUP BY state`
        const counts: Record<ChordState, number> = { running: 0, completed: 0, failed: 0, cancelled: 0 }
        for (const row of countRows) counts[row.state] = Number(row.n)
        const total =
          options.state === undefined ? Object.values(counts).reduce((a, b) => a + b, 0) : counts[options.state]
        return { counts, total, items: rows.map(toInfo) } satisfies ChordPage
      }).pipe(Effect.withSpan("ChordRegistry.list"))

    return ChordRegistry.of({
      chord: chord as ChordRegistry["Type"]["chord"],
      get,
      list,
      handle,
      await: await_,
      cancel,
      reconcile
    })
  })
