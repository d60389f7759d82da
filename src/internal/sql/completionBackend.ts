/**
 * `CompletionBackend` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (same code, two dialects).
 *
 * Every subscriber reads the durable completions log after its own cursor; live channels only tell it when to read
 * again, so a lost wake-up costs latency, never an event:
 * - Postgres: the log is read in `(xid, seq)` order, and only rows whose writer's transaction id is below the
 *   horizon: the oldest transaction of this database still in progress in the reading statement's snapshot (the
 *   snapshot's xmin, minus transactions positively seen in other databases), i.e. rows no still-running transaction
 *   can precede. A `seq` taken before a commit that lands late can therefore never be overtaken
 *   (docs/completion-backend.md).
 *   Wake-ups come from the process's one shared LISTEN connection (`internal/pgListener`); while it is down, the
 *   subscriber polls; when it is back, the subscriber re-reads (back-fill). Committed rows held back by an older
 *   open transaction are polled for quickly until the horizon passes them.
 * - SQLite: one writer at a time, so `seq` order is commit order and the cursor is `seq`. Subscribers poll with an
 *   adaptive interval (fast after events, backing off when idle) and are woken at once by appends of this process.
 * - Filters compile to the query's WHERE clause; anything else fails with `FilterUnsupported`.
 * - Retention: `prune` deletes the oldest rows by age and/or count and advances a watermark in the same
 *   transaction; a resume point below the watermark fails with `CursorExpired` (checked in the same snapshot as
 *   each read, so pruning can never make a subscriber skip silently).
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import {
  CompletionBackend,
  type CompletionEvent,
  type CompletionFilter,
  type CompletionKind,
  CompletionKind as CompletionKindSchema,
  CursorExpired,
  type Cursor,
  FilterUnsupported,
  InvalidCursor,
  type SubscribeOptions
} from "../../CompletionBackend.js"
import { completionsChannel, onAppend } from "./wakes.js"
import * as PgListener from "./pgListener.js"
import * as Validate from "../validate.js"
import { Storage } from "../../Storage.js"
import { InvalidInput, type TaskId } from "../../TaskQueue.js"

/** Settings of the SQL completion backend. */
export interface Options {
  /**
   * How long the log is kept, applied by `prune` (which the `Reconciler` runs). Omitted: 7 days. An omitted field
   * is no limit (`{}` keeps everything).
   */
  readonly retention?:
    | {
        /** Delete events older than this. */
        readonly maxAge?: Duration.DurationInput | undefined
        /** Keep at most this many events. */
        readonly maxRows?: number | undefined
        /** Rows deleted per transaction (default 5000). */
        readonly batchSize?: number | undefined
      }
    | undefined
  /**
   * Polling when no live wake-up is available (SQLite across processes, Postgres while LISTEN is down or while an
   * open transaction holds committed rows back): starts at `min` after activity, doubles up to `max` when idle
   * (default 5 ms .. 500 ms).
   */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /** Postgres with LISTEN up: re-read at least this often anyway (default 10 s). */
  readonly safetyInterval?: Duration.DurationInput | undefined
  /** Postgres: the longest wait between reads while committed rows wait for an older open transaction (100 ms). */
  readonly heldBackInterval?: Duration.DurationInput | undefined
}

/** Default retention: events are kept for a week. */
export const defaultRetention: NonNullable<Options["retention"]> = { maxAge: Duration.days(7) }

const filterFields = new Set(["namespace", "tags", "taskName", "kinds"])
const knownKinds = new Set<string>(CompletionKindSchema.literals)

/**
 * Postgres: the delivery horizon of the snapshot `s.snap` — the lowest transaction id in progress when it was taken
 * that may belong to THIS database (or the snapshot's xmax when none). Rows below it can no longer be preceded by a
 * row that is not visible yet. An in-progress id is skipped only when it is positively seen, after the snapshot, in a
 * session or prepared transaction of another database (which can never write here); one that finished meanwhile, or
 * that `pg_stat_activity` does not show, counts. `backend_xid` is a 32-bit xid: compared with the low 32 bits of the
 * xid8 (in-progress ids are within 2^31 of each other, so this is unambiguous). Static SQL, no input.
 */
const horizonSql = `coalesce((
  SELECT min(x.id) FROM pg_snapshot_xip(s.snap) AS x(id)
  WHERE NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.backend_xid IS NOT NULL
      AND a.datid <> (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND a.backend_xid::text::bigint = x.id::text::bigint % 4294967296
  ) AND NOT EXISTS (
    SELECT 1 FROM pg_prepared_xacts p
    WHERE p.database <> current_database() AND p.transaction::text::bigint = x.id::text::bigint % 4294967296
  )
), pg_snapshot_xmax(s.snap))`

interface Position {
  /** The writer's transaction id (Postgres; 0 on SQLite). */
  readonly xid: bigint
  readonly seq: number
}

const comparePositions = (a: Position, b: Position): number =>
  a.xid < b.xid ? -1 : a.xid > b.xid ? 1 : a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0

const maxPosition = (a: Position, b: Position): Position => (comparePositions(a, b) >= 0 ? a : b)

interface LogRow {
  readonly seq: number | null
  readonly xid?: string | null
  readonly kind: string | null
  readonly task_id: string | null
  readonly task_name: string | null
  readonly queue: string | null
  readonly namespace: string | null
  readonly tags: string | null
  readonly outcome: string | null
  readonly chord_id: string | null
  readonly run_id: string | null
  readonly at: number | null
  readonly progress?: number | null
  readonly progress_message?: string | null
}

interface ReadRow extends LogRow {
  readonly top_xid?: string | null
  readonly top_seq: number | null
  readonly pending?: boolean
  readonly pruned_xid?: string | null
  readonly pruned_seq: number
  readonly pruned_max_seq: number
}

interface Watermark {
  /** Newest pruned position in delivery order (None: nothing pruned). */
  readonly position: Option.Option<Position>
  /** Highest pruned `seq`. */
  readonly maxSeq: number
}

interface ReadResult {
  readonly rows: ReadonlyArray<LogRow>
  /** The newest position readable now (ignoring the filter); None when the log is empty. */
  readonly top: Option.Option<Position>
  /** Postgres: committed rows exist above the horizon (held back by an open transaction). */
  readonly pending: boolean
  readonly watermark: Watermark
}

/** Where a subscription starts: strictly after `cursor`, and only rows with `seq >= minSeq`. */
interface Start {
  readonly cursor: Position
  readonly minSeq: number
  /** How the start was asked for (for errors). */
  readonly requested: string
  /**
   * Postgres, live start: the snapshot taken at subscribe. Rows of transactions it saw as committed are skipped, so a
   * live subscription delivers exactly what commits after it started, although its cursor starts at the horizon.
   */
  readonly exclude?: string | undefined
}

const num = (value: unknown): number => (typeof value === "number" ? value : Number(value))

const parseTags = (text: string | null): ReadonlyArray<string> => {
  if (text === null) return []
  try {
    const parsed: unknown = JSON.parse(text)
    return Array.isArray(parsed) ? parsed.filter((tag): tag is string => typeof tag === "string") : []
  } catch {
    return []
  }
}

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const isPg = storage.dialect === "pg"
  const channel = completionsChannel(storage.channelPrefix)
  const pollMin = Duration.toMillis(Duration.decode(options.pollInterval?.min ?? Duration.millis(5)))
  const pollMax = Math.max(
    pollMin,
    Duration.toMillis(Duration.decode(options.pollInterval?.max ?? Duration.millis(500)))
  )
  const safetyMs = Duration.toMillis(Duration.decode(options.safetyInterval ?? Duration.seconds(10)))
  const heldBackMax = Duration.toMillis(Duration.decode(options.heldBackInterval ?? Duration.millis(100)))
  const retention = options.retention ?? defaultRetention
  const maxAgeMs = retention.maxAge === undefined ? undefined : Duration.toMillis(Duration.decode(retention.maxAge))
  const maxRows = retention.maxRows
  const pruneBatch = Math.max(1, Math.floor(retention.batchSize ?? 5000))

  // -- cursors ------------------------------------------------------------------------------------------------------

  const encodeCursor = (position: Position): Cursor =>
    // Cast, not `Cursor.make`: built here by construction, and validating per event costs on a hot path.
    (isPg ? `p.${position.xid}.${position.seq}` : `s.${position.seq}`) as Cursor

  const decodeCursor = (cursor: string): Effect.Effect<Position, InvalidCursor> => {
    const match = isPg ? /^p\.(\d{1,20})\.(\d{1,16})$/.exec(cursor) : /^s\.(\d{1,16})$/.exec(cursor)
    if (match === null) {
      return Effect.fail(
        new InvalidCursor({
          cursor,
          message: `not a cursor of this ${isPg ? "Postgres" : "SQLite"} completion log (use an event's cursor)`
        })
      )
    }
    return Effect.succeed(
      isPg ? { xid: BigInt(match[1]!), seq: Number(match[2]!) } : { xid: 0n, seq: Number(match[1]!) }
    )
  }

  // -- filters: compiled to SQL or refused ---------------------------------------------------------------------------

  const unsupported = (field: string, message: string) => Effect.fail(new FilterUnsupported({ field, message }))

  const compileFilter = (
    filter: CompletionFilter | undefined
  ): Effect.Effect<ReadonlyArray<Statement.Fragment>, FilterUnsupported> =>
    Effect.suspend(() => {
      if (filter === undefined || filter === null) return Effect.succeed([])
      if (typeof filter !== "object" || Array.isArray(filter)) {
        return unsupported("filter", "the filter must be an object of namespace, tags, taskName and kinds")
      }
      const clauses: Array<Statement.Fragment> = []
      for (const [field, value] of Object.entries(filter)) {
        if (!filterFields.has(field)) {
          return unsupported(
            field,
            `the completion log cannot filter on "${field}" (supported: namespace, tags, taskName, kinds)`
          )
        }
        if (value === undefined) continue
        switch (field) {
          case "namespace":
          case "taskName": {
            if (typeof value !== "string") {
              return unsupported(field, `${field} must be a string (exact match); patterns are not supported`)
            }
            // The same rule as enqueue: no stored name can contain NUL or a lone surrogate, and Postgres would refuse
            // the parameter where SQLite would not (one behaviour on every backend).
            const problem = Validate.name(field, value)
            if (problem !== undefined) return unsupported(field, problem)
            clauses.push(field === "namespace" ? sql`c.namespace = ${value}` : sql`c.task_name = ${value}`)
            break
          }
          case "tags": {
            if (!Array.isArray(value) || !value.every((tag) => typeof tag === "string")) {
              return unsupported("tags", "tags must be an array of strings (events carrying all of them match)")
            }
            const problem = Validate.tags("tags", value)
            if (problem !== undefined) return unsupported("tags", problem)
            const tags = [...new Set(value as ReadonlyArray<string>)]
            if (tags.length === 0) break
            if (isPg) clauses.push(sql`c.tags::jsonb @> ${JSON.stringify(tags)}::jsonb`)
            else {
              for (const tag of tags) {
                clauses.push(sql`EXISTS (SELECT 1 FROM json_each(c.tags) AS t WHERE t.value = ${tag})`)
              }
            }
            break
          }
          case "kinds": {
            if (!Array.isArray(value) || value.length === 0) {
              return unsupported("kinds", "kinds must be a non-empty array of completion kinds")
            }
            const unknown = value.find((kind) => typeof kind !== "string" || !knownKinds.has(kind))
            if (unknown !== undefined) return unsupported("kinds", `unknown completion kind ${JSON.stringify(unknown)}`)
            clauses.push(sql`c.kind IN ${sql.in(value as ReadonlyArray<CompletionKind>)}`)
            break
          }
        }
      }
      return Effect.succeed(clauses)
    })

  // -- reading the log ------------------------------------------------------------------------------------------------

  const horizon = sql.literal(horizonSql)
  const columns = sql.literal(
    "c.seq, c.kind, c.task_id, c.task_name, c.queue, c.namespace, c.tags, c.outcome, c.chord_id, c.run_id, c.at, " +
      "c.progress, c.progress_message"
  )

  const toWatermark = (row: ReadRow | undefined): Watermark => {
    if (row === undefined) return { position: Option.none(), maxSeq: 0 }
    const seq = num(row.pruned_seq)
    const position = isPg
      ? row.pruned_xid == null
        ? Option.none()
        : Option.some({ xid: BigInt(row.pruned_xid), seq })
      : seq > 0
        ? Option.some({ xid: 0n, seq })
        : Option.none()
    return { position, maxSeq: num(row.pruned_max_seq) }
  }

  const toResult = (rows: ReadonlyArray<ReadRow>): ReadResult => {
    const first = rows[0]
    const top =
      first === undefined || first.top_seq === null
        ? Option.none<Position>()
        : Option.some({ xid: isPg ? BigInt(first.top_xid ?? "0") : 0n, seq: num(first.top_seq) })
    return {
      rows: rows.filter((row) => row.seq !== null),
      top,
      pending: first?.pending === true,
      watermark: toWatermark(first)
    }
  }

  // One statement (one snapshot): the rows after the cursor, the newest readable position, and the watermark.
  const read = (
    cursor: Position,
    minSeq: number,
    where: ReadonlyArray<Statement.Fragment>,
    limit: number
  ): Effect.Effect<ReadResult, SqlError> => {
    const filter = where.length === 0 ? sql.literal("TRUE") : sql.and(where)
    if (isPg) {
      // The meta row is MATERIALIZED: computed once, not once per returned row.
      return sql<ReadRow>`WITH meta AS MATERIALIZED (
          SELECT h.horizon, t.top_xid, t.top_seq,
            EXISTS (SELECT 1 FROM baton_completions c WHERE c.xid >= h.horizon) AS pending,
            p.xid AS pruned_xid, p.seq AS pruned_seq, p.max_seq AS pruned_max_seq
          FROM (SELECT ${horizon} AS horizon FROM (SELECT pg_current_snapshot() AS snap) s) h
          CROSS JOIN baton_completions_pruned p
          LEFT JOIN LATERAL (
            SELECT c.xid AS top_xid, c.seq AS top_seq FROM baton_completions c WHERE c.xid < h.horizon
            ORDER BY c.xid DESC, c.seq DESC LIMIT 1
          ) t ON TRUE
          WHERE p.id = 1
        )
        SELECT meta.top_xid, meta.top_seq, meta.pending, meta.pruned_xid, meta.pruned_seq, meta.pruned_max_seq, r.*
        FROM meta LEFT JOIN LATERAL (
          SELECT c.xid, ${columns} FROM baton_completions c
          WHERE c.xid < meta.horizon AND (c.xid, c.seq) > (${cursor.xid.toString()}::xid8, ${cursor.seq})
            AND c.seq >= ${minSeq} AND ${filter}
          ORDER BY c.xid, c.seq LIMIT ${limit}
        ) r ON TRUE
        ORDER BY r.xid, r.seq`.pipe(Effect.map(toResult))
    }
    return sql<ReadRow>`SELECT t.top_seq, p.seq AS pruned_seq, p.max_seq AS pruned_max_seq, r.*
      FROM (SELECT max(seq) AS top_seq FROM baton_completions) t
      CROSS JOIN baton_completions_pruned p
      LEFT JOIN (
        SELECT ${columns} FROM baton_completions c
        WHERE c.seq > ${cursor.seq} AND c.seq >= ${minSeq} AND ${filter}
        ORDER BY c.seq LIMIT ${limit}
      ) r ON 1
      WHERE p.id = 1
      ORDER BY r.seq`.pipe(Effect.map(toResult))
  }

  const readWatermark = sql<ReadRow>`SELECT ${sql.literal(isPg ? "xid AS pruned_xid, " : "")}seq AS pruned_seq,
    max_seq AS pruned_max_seq FROM baton_completions_pruned WHERE id = 1`.pipe(
    Effect.map((rows) => toWatermark(rows[0]))
  )

  const positionOf = (row: LogRow): Position => ({ xid: isPg ? BigInt(row.xid ?? "0") : 0n, seq: num(row.seq) })

  const toEvent = (row: LogRow): CompletionEvent => ({
    sequence: num(row.seq),
    cursor: encodeCursor(positionOf(row)),
    kind: row.kind as CompletionKind,
    taskId: row.task_id === null ? undefined : (row.task_id as TaskId),
    taskName: row.task_name ?? undefined,
    queue: row.queue ?? undefined,
    namespace: row.namespace ?? "",
    tags: parseTags(row.tags),
    outcome: row.outcome as CompletionEvent["outcome"],
    chordId: row.chord_id ?? undefined,
    runId: row.run_id ?? undefined,
    // `task.progress` events only (NULL on every other row).
    ...(row.progress == null ? {} : { progress: num(row.progress) }),
    ...(row.progress_message == null ? {} : { message: row.progress_message }),
    at: new Date(num(row.at))
  })

  // Rows after `cursor` may have been pruned: the watermark is past it (and past the first seq asked for).
  const isExpired = (watermark: Watermark, cursor: Position, minSeq: number): boolean =>
    Option.isSome(watermark.position) &&
    comparePositions(watermark.position.value, cursor) > 0 &&
    watermark.maxSeq >= minSeq

  const expired = (requested: string) =>
    new CursorExpired({
      requested,
      message: `events after ${requested} were pruned by the retention policy; resume from a newer point`
    })

  // -- where a subscription starts -------------------------------------------------------------------------------------

  const resolveStart = (subscribe: SubscribeOptions): Effect.Effect<Start, InvalidCursor | CursorExpired | SqlError> =>
    Effect.gen(function* () {
      const { after, fromSequence } = subscribe
      if (after !== undefined && fromSequence !== undefined) {
        return yield* new InvalidCursor({ cursor: String(after), message: "give `after` or `fromSequence`, not both" })
      }
      const watermark = yield* readWatermark
      if (after !== undefined) {
        const cursor = yield* decodeCursor(String(after))
        if (isExpired(watermark, cursor, 0)) return yield* expired(`cursor ${after}`)
        return { cursor, minSeq: 0, requested: `cursor ${after}` }
      }
      if (fromSequence === "oldest") {
        // Right after the newest pruned event: the longest suffix of the log with no gap.
        const cursor = Option.getOrElse(watermark.position, () => ({ xid: 0n, seq: 0 }))
        return { cursor, minSeq: 0, requested: "the oldest retained event" }
      }
      if (fromSequence !== undefined) {
        if (typeof fromSequence !== "number" || !Number.isSafeInteger(fromSequence) || fromSequence < 0) {
          return yield* new InvalidCursor({
            cursor: String(fromSequence),
            message: 'fromSequence must be a non-negative integer or "oldest"'
          })
        }
        const requested = `sequence ${fromSequence}`
        if (Option.isSome(watermark.position) && watermark.maxSeq >= fromSequence) return yield* expired(requested)
        if (!isPg) return { cursor: { xid: 0n, seq: Math.max(0, fromSequence - 1) }, minSeq: 0, requested }
        // (xid, seq) order is not seq order: start at the lowest xid that holds a seq >= n, or that may still
        // commit one (the horizon), and keep only seq >= n.
        const rows = yield* sql<{ xid: string }>`SELECT LEAST(
            (SELECT min(xid) FROM baton_completions WHERE seq >= ${fromSequence}),
            pg_snapshot_xmin(pg_current_snapshot())
          ) AS xid`
        return { cursor: { xid: BigInt(rows[0]?.xid ?? "0"), seq: 0 }, minSeq: fromSequence, requested }
      }
      // Live: from the current end of the log. Everything committing after this is after the cursor.
      if (isPg) {
        const [row] = yield* sql<{ xid: string; snapshot: string }>`SELECT pg_snapshot_xmin(s)::text AS xid,
          s::text AS snapshot FROM (SELECT pg_current_snapshot() AS s) t`
        return {
          cursor: { xid: BigInt(row?.xid ?? "0"), seq: 0 },
          minSeq: 0,
          requested: "the live position",
          exclude: row?.snapshot
        }
      }
      const rows = yield* sql<{ seq: number | null }>`SELECT max(seq) AS seq FROM baton_completions`
      const end = { xid: 0n, seq: num(rows[0]?.seq ?? 0) }
      const cursor = Option.match(watermark.position, { onNone: () => end, onSome: (w) => maxPosition(w, end) })
      return { cursor, minSeq: 0, requested: "the live position" }
    })

  // A read that hit a broken connection is retried for a while before the stream fails.
  const readRetry = Schedule.exponential(Duration.millis(50)).pipe(
    Schedule.either(Schedule.spaced(Duration.seconds(2))),
    Schedule.upTo(Duration.seconds(30))
  )

  const subscribe = (subscribeOptions: SubscribeOptions = {}) =>
    Effect.gen(function* () {
      const where = yield* compileFilter(subscribeOptions.filter)
      const batchProblem =
        subscribeOptions.batchSize === undefined
          ? undefined
          : Validate.integer("batchSize", subscribeOptions.batchSize, 1, 100_000)
      if (batchProblem !== undefined) return yield* new InvalidInput({ field: "batchSize", message: batchProblem })
      const limit = subscribeOptions.batchSize ?? 1000
      // Wake-ups first, then the start position: whatever commits after the position is read is after the cursor,
      // and the stream reads once before it ever waits.
      const wake = yield* Effect.acquireRelease(PubSub.sliding<void>(1), PubSub.shutdown)
      let live = false
      if (isPg && storage.pg !== undefined) {
        const events = yield* PgListener.listen(storage.pg, [channel])
        yield* events.pipe(
          Stream.runForEach((event) =>
            Effect.suspend(() => {
              if (event._tag !== "Notification") live = event._tag === "Up"
              return PubSub.publish(wake, undefined)
            })
          ),
          Effect.forkScoped
        )
      } else {
        yield* Effect.acquireRelease(
          Effect.sync(() => onAppend(sql, () => void wake.unsafeOffer(undefined))),
          (unregister) => Effect.sync(unregister)
        )
      }
      const start = yield* resolveStart(subscribeOptions)
      const conditions =
        start.exclude === undefined
          ? where
          : [...where, sql`NOT pg_visible_in_snapshot(c.xid, ${start.exclude}::pg_snapshot)`]

      const run = Effect.gen(function* () {
        const woken = yield* PubSub.subscribe(wake)
        let cursor = start.cursor
        let idle = pollMin
        let caughtUp = false
        let pending = false

        const waitForMore = Effect.suspend(() => {
          const timeout = !isPg ? idle : pending ? Math.min(idle, heldBackMax) : live ? safetyMs : idle
          return Queue.take(woken).pipe(
            Effect.timeout(Duration.millis(timeout)),
            Effect.option,
            Effect.map((signal) => {
              idle = Option.isSome(signal) ? pollMin : Math.min(idle * 2, pollMax)
            })
          )
        })

        const next = Effect.gen(function* () {
          if (caughtUp) yield* waitForMore
          while (true) {
            const result = yield* read(cursor, start.minSeq, conditions, limit).pipe(
              Effect.tapError((error) => Effect.logWarning("reading the completions log failed; retrying", { error })),
              Effect.retry(readRetry)
            )
            if (isExpired(result.watermark, cursor, start.minSeq)) {
              return yield* expired(cursor === start.cursor ? start.requested : `cursor ${encodeCursor(cursor)}`)
            }
            pending = result.pending
            const rows = result.rows
            if (rows.length > 0) {
              const last = positionOf(rows[rows.length - 1]!)
              const full = rows.length >= limit
              // A short batch read everything up to `top`: skip past rows the filter left out, so an idle filtered
              // subscriber's cursor keeps up with the log (and is not overtaken by pruning).
              cursor = full
                ? last
                : Option.match(result.top, { onNone: () => last, onSome: (t) => maxPosition(last, t) })
              caughtUp = !full
              idle = pollMin
              return Chunk.unsafeFromArray(rows.map(toEvent))
            }
            if (Option.isSome(result.top)) cursor = maxPosition(cursor, result.top.value)
            caughtUp = true
            yield* waitForMore
          }
        })
        return Stream.repeatEffectChunk(next)
      })
      return Stream.unwrapScoped(run)
    }).pipe(Effect.withSpan("CompletionBackend.subscribe"))

  const stream = (subscribeOptions?: SubscribeOptions) => Stream.unwrapScoped(subscribe(subscribeOptions))

  // -- retention -------------------------------------------------------------------------------------------------------

  const pruneBatchPg = (cutoffAt: number | null) =>
    sql.withTransaction(
      Effect.gen(function* () {
        // One pruner at a time across processes; the others skip this round.
        const [lock] = yield* sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(
          hashtext(current_schema() || '.baton_completions_prune')) AS ok`
        if (lock?.ok !== true) return 0
        const cutoffSeq =
          maxRows === undefined
            ? null
            : ((yield* sql<{ seq: number }>`SELECT seq FROM baton_completions ORDER BY seq DESC
                OFFSET ${maxRows} LIMIT 1`)[0]?.seq ?? null)
        if (cutoffAt === null && cutoffSeq === null) return 0
        // Only rows below the horizon: a committed row still held back from subscribers is never pruned.
        const [result] = yield* sql<{ n: number }>`WITH h AS MATERIALIZED (
            SELECT ${horizon} AS horizon FROM (SELECT pg_current_snapshot() AS snap) s
          ), victims AS (
            SELECT c.seq FROM baton_completions c, h
            WHERE c.xid < h.horizon AND (c.at < ${cutoffAt} OR c.seq <= ${cutoffSeq})
            ORDER BY c.seq LIMIT ${pruneBatch}
          ), del AS (
            DELETE FROM baton_completions c USING victims v WHERE c.seq = v.seq RETURNING c.xid, c.seq
          ), top AS (
            SELECT xid, seq FROM del ORDER BY xid DESC, seq DESC LIMIT 1
          ), upd AS (
            UPDATE baton_completions_pruned p SET
              xid = CASE WHEN p.xid IS NULL OR (top.xid, top.seq) > (p.xid, p.seq) THEN top.xid ELSE p.xid END,
              seq = CASE WHEN p.xid IS NULL OR (top.xid, top.seq) > (p.xid, p.seq) THEN top.seq ELSE p.seq END,
              max_seq = GREATEST(p.max_seq, (SELECT max(seq) FROM del)),
              rows = p.rows + (SELECT count(*) FROM del)
            FROM top WHERE p.id = 1 RETURNING 1
          )
          SELECT (SELECT count(*) FROM del)::int AS n`
        return num(result?.n ?? 0)
      })
    )

  const pruneBatchSqlite = (cutoffAt: number | null) =>
    sql.withTransaction(
      Effect.gen(function* () {
        const cutoffSeq =
          maxRows === undefined
            ? null
            : ((yield* sql<{ seq: number }>`SELECT seq FROM baton_completions ORDER BY seq DESC
                LIMIT 1 OFFSET ${maxRows}`)[0]?.seq ?? null)
        if (cutoffAt === null && cutoffSeq === null) return 0
        const [victims] = yield* sql<{ top: number | null; n: number }>`SELECT max(seq) AS top, count(*) AS n FROM (
            SELECT seq FROM baton_completions WHERE at < ${cutoffAt} OR seq <= ${cutoffSeq}
            ORDER BY seq LIMIT ${pruneBatch}
          )`
        const n = num(victims?.n ?? 0)
        if (victims === undefined || victims.top === null || n === 0) return 0
        yield* sql`DELETE FROM baton_completions WHERE seq <= ${victims.top}
          AND (at < ${cutoffAt} OR seq <= ${cutoffSeq})`
        yield* sql`UPDATE baton_completions_pruned SET seq = max(seq, ${victims.top}),
          max_seq = max(max_seq, ${victims.top}), rows = rows + ${n} WHERE id = 1`
        return n
      })
    )

  const prune = Effect.gen(function* () {
    if (maxAgeMs === undefined && maxRows === undefined) return 0
    const now = yield* Clock.currentTimeMillis
    const cutoffAt = maxAgeMs === undefined ? null : now - maxAgeMs
    let total = 0
    // Short transactions: a batch at a time, until a batch comes back short.
    while (true) {
      const n = yield* isPg ? pruneBatchPg(cutoffAt) : pruneBatchSqlite(cutoffAt)
      total += n
      if (n < pruneBatch) return total
    }
  }).pipe(Effect.withSpan("CompletionBackend.prune"))

  return CompletionBackend.of({ subscribe, stream, prune })
})
