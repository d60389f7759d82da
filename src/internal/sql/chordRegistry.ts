/**
 * The public operations of `ChordRegistry` on `@effect/sql` (the public module `SqlChordRegistry.ts` builds its layers
 * from `make`); the background part is `chordCoordinator.ts`, started by `make`.
 *
 * - `chord` encodes everything first (an invalid payload writes nothing), then in one transaction inserts the chord row
 *   (`ON CONFLICT DO NOTHING` on `(namespace, idempotency_key)`: a repeated key returns the existing chord) and the
 *   body tasks through `TaskQueue.enqueueRaw`, which joins the transaction. An empty body is dispatched in that same
 *   transaction.
 * - Counting and dispatch happen in the transaction that completes a body task (`finishPath.ts`, `chordLedger.ts`), in
 *   whatever process completes it: the producer may be long gone.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import {
  type BodyEntry,
  ChordFailed,
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
import * as Continuations from "../../Continuations.js"
import { Storage } from "../../Storage.js"
import type * as Task from "../../Task.js"
import { InvalidInput, InvalidPayload, type RawEnqueue, TaskId, TaskQueue } from "../../TaskQueue.js"
import { encodeCall } from "../request.js"
import * as Validate from "../validate.js"
import { decodeFailure, makeCoordinator, millis, type Options, outcomeOf } from "./chordCoordinator.js"
import {
  cancelChord,
  type ChordRow,
  type LedgerContext,
  lockRunning,
  makeLedgerContext,
  dispatchTemplate,
  type SealedCall,
  settleChord
} from "./chordLedger.js"

export { type Options, reconcileStepName } from "./chordCoordinator.js"

type AnySpec = ChordSpec<ReadonlyArray<BodyEntry>, Task.Any, Task.Any, FailurePolicy>

/** The chord's own fields (its body tasks and callbacks are checked when they are encoded and enqueued). */
const checkSpec = (spec: AnySpec) => {
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
  dispatchedAt: row.dispatched_at === null ? undefined : new Date(Number(row.dispatched_at)),
  deadlineAt: row.deadline_at === null || row.deadline_at === undefined ? undefined : new Date(Number(row.deadline_at)),
  parentChordId: row.parent_id === null || row.parent_id === undefined ? undefined : ChordId.make(row.parent_id),
  parentIndex: row.parent_index === null || row.parent_index === undefined ? undefined : Number(row.parent_index)
})

/** A chord ready to be written: its row, its body tasks, and its inner chords (written after it, in its transaction). */
interface Plan {
  readonly row: Record<string, unknown> & { readonly id: string; readonly idempotency_key: string | null }
  readonly body: ReadonlyArray<RawEnqueue>
  readonly inner: ReadonlyArray<Plan>
  readonly deadlineAt: number | undefined
}

/** Every deadline of a plan and its inner chords. */
const deadlines = (plan: Plan): ReadonlyArray<number> => [
  ...(plan.deadlineAt === undefined ? [] : [plan.deadlineAt]),
  ...plan.inner.flatMap(deadlines)
]

/** The chord's deadline as epoch ms (undefined: none), or why it is invalid. */
const deadlineOf = (
  deadline: AnySpec["deadline"],
  now: number
): { readonly at: number | undefined; readonly problem?: undefined } | { readonly problem: InvalidInput } => {
  if (deadline === undefined) return { at: undefined }
  if (deadline instanceof Date) {
    const at = deadline.getTime()
    return Number.isFinite(at) && at >= 0 && at <= Validate.maxEpochMs
      ? { at }
      : { problem: new InvalidInput({ field: "deadline", message: "deadline must be a valid Date" }) }
  }
  const checked = Validate.duration("deadline", deadline, 1, Validate.maxDurationMs)
  return checked.problem === undefined
    ? { at: now + checked.ms }
    : { problem: new InvalidInput({ field: "deadline", message: checked.problem }) }
}

/** Builds the registry and starts its coordinator in the current scope. */
export const make = (
  options: Options = {}
): Effect.Effect<ChordRegistry["Type"], never, SqlClient.SqlClient | Storage | TaskQueue | Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const storage = yield* Storage
    const queue = yield* TaskQueue
    const ctx: LedgerContext = makeLedgerContext(sql, storage.dialect, storage.channelPrefix)
    const coordinator = yield* makeCoordinator(options, ctx)

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
        const continuations = yield* coordinator.watch(chordId)
        const row = yield* findRow(chordId).pipe(Effect.tapError(() => coordinator.forget(chordId)))
        const outcome = outcomeOf(row)
        if (outcome !== undefined) yield* coordinator.latch(chordId, outcome)
        return toHandle(chordId, false, continuations)
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

    /**
     * Checks and encodes a chord and its inner chords, before any transaction: an invalid payload or option anywhere
     * fails here and nothing is written. An inner chord's own idempotency key and its callback's are ignored.
     */
    const prepare = (
      spec: AnySpec,
      now: number,
      parent:
        | {
            readonly chordId: string
            readonly index: number
            readonly namespace: string
            readonly tags: ReadonlyArray<string>
          }
        | undefined
    ): Effect.Effect<Plan, InvalidPayload | InvalidInput> =>
      Effect.gen(function* () {
        const namespace = spec.namespace ?? parent?.namespace ?? "default"
        const tags = parent === undefined ? (spec.tags ?? []) : union(parent.tags, spec.tags)
        const policy: FailurePolicy = spec.failurePolicy ?? "fail"
        const problem = checkSpec(spec)
        if (problem !== undefined) return yield* problem
        const deadline = deadlineOf(spec.deadline, now)
        if (deadline.problem !== undefined) return yield* deadline.problem
        const chordId = crypto.randomUUID()
        const body: Array<RawEnqueue> = []
        const inner: Array<Plan> = []
        for (let index = 0; index < spec.body.length; index++) {
          const entry = spec.body[index]!
          if (entry._tag === "ChordCall") {
            inner.push(yield* prepare(entry.spec, now, { chordId, index, namespace, tags }))
            continue
          }
          const request = yield* encodeCall(
            entry.task,
            entry.payload,
            {
              ...entry.options,
              idempotencyKey: undefined,
              namespace: entry.options.namespace ?? namespace,
              tags: union(tags, entry.options.tags)
            },
            now
          )
          body.push({ ...request, chordId, chordIndex: index })
        }
        const callback = yield* seal(
          spec.callback.task,
          spec.callback.args,
          // An inner chord's callback is a body task of the outer chord: a key could resolve to a task outside it.
          parent === undefined ? spec.callback.options : { ...spec.callback.options, idempotencyKey: undefined },
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
          idempotency_key: parent === undefined ? (spec.idempotencyKey ?? null) : null,
          state: "running",
          failure_policy: policy,
          expected: spec.body.length,
          succeeded: 0,
          failed: 0,
          cancelled: 0,
          callback_name: spec.callback.task.name,
          // With its dispatch template: the one-call finish of body tasks on Postgres dispatches from it.
          callback: JSON.stringify({
            ...callback,
            fast: dispatchTemplate(callback, {
              parent_id: parent?.chordId ?? null,
              parent_index: parent?.index ?? null
            })
          }),
          on_error: onError === undefined ? null : JSON.stringify(onError),
          healed: 0,
          body_open: 0,
          created_at: now,
          deadline_at: deadline.at ?? null,
          parent_id: parent?.chordId ?? null,
          parent_index: parent?.index ?? null
        }
        return { row, body, inner, deadlineAt: deadline.at }
      })

    /** After the chord row is inserted (same transaction): its body tasks, then its inner chords, recursively. */
    const writeRest = (plan: Plan, now: number): Effect.Effect<void, InvalidPayload | InvalidInput | SqlError> =>
      Effect.gen(function* () {
        yield* queue.enqueueRaw(plan.body)
        for (const inner of plan.inner) {
          yield* sql`INSERT INTO baton_chords ${sql.insert(inner.row)}`
          yield* writeRest(inner, now)
        }
        if (Number(plan.row.expected) === 0) {
          const locked = yield* lockRunning(ctx, plan.row.id)
          if (locked !== undefined) yield* settleChord(ctx, locked, now, false)
        }
      })

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
        const plan = yield* prepare(spec, now, undefined)
        yield* Effect.annotateCurrentSpan({
          chordId: plan.row.id,
          callback: spec.callback.task.name,
          bodyTasks: [...new Set(spec.body.map((entry) => entry.task.name))].join(","),
          size: spec.body.length
        })
        const result = yield* sql.withTransaction(
          Effect.gen(function* () {
            const inserted = yield* sql<{ id: string }>`INSERT INTO baton_chords ${sql.insert(plan.row)}
              ON CONFLICT DO NOTHING RETURNING id`
            if (inserted.length === 0) {
              const existing = yield* sql<{ id: string }>`SELECT id FROM baton_chords
                WHERE namespace = ${plan.row.namespace as string} AND idempotency_key = ${plan.row.idempotency_key}`
              if (existing[0] === undefined) {
                return yield* Effect.dieMessage(`chord ${plan.row.id} was neither inserted nor found`)
              }
              return { id: existing[0].id, created: false }
            }
            yield* writeRest(plan, now)
            return { id: plan.row.id, created: true }
          })
        )
        // The coordinator of this process times the deadlines (others find them on their own schedule).
        if (result.created && deadlines(plan).length > 0) yield* coordinator.deadlineAdded(Math.min(...deadlines(plan)))
        const continuations = yield* coordinator.watch(result.id)
        return toHandle(result.id, result.created, continuations)
      }).pipe(Effect.withSpan("ChordRegistry.chord"))

    const cancel = (chordId: string) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const cancelled = yield* sql.withTransaction(cancelChord(ctx, chordId, now))
        if (cancelled) yield* coordinator.nudge
        return cancelled
      }).pipe(Effect.withSpan("ChordRegistry.cancel", { attributes: { chordId } }))

    const list = (options: ListOptions = {}) =>
      Effect.gen(function* () {
        const limit = pageLimit(options.limit)
        const offset = Math.max(0, Math.floor(options.offset ?? 0))
        const byState = options.state === undefined ? sql`1 = 1` : sql`state = ${options.state}`
        const inParent = options.parent === undefined ? sql`1 = 1` : sql`parent_id = ${options.parent}`
        const order = options.parent === undefined ? sql`created_at DESC, id DESC` : sql`parent_index`
        const rows = yield* sql<ChordRow>`SELECT * FROM baton_chords WHERE ${byState} AND ${inParent}
          ORDER BY ${order} LIMIT ${limit} OFFSET ${offset}`
        const countRows = yield* sql<{ state: ChordState; n: number }>`SELECT state, count(*) AS n FROM baton_chords
          WHERE ${inParent} GROUP BY state`
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
      reconcile: coordinator.reconcile
    })
  })
