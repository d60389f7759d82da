/**
 * `CompletionBackend` on `@effect/sql`: Postgres, a SQLite file, or SQLite `:memory:` (same code, two dialects).
 *
 * Every subscriber reads the durable completions log after its own cursor; live channels only tell it when to read
 * again, so a lost wake-up costs latency, never an event:
 * - Postgres: each read (one statement, one snapshot) delivers the rows committed since the previous read, whatever
 *   older transaction is still open: rows after the subscription's position that are visible now and were not in the
 *   previous read's snapshot, in `(xid, seq)` order. The position then moves up to the horizon (the oldest
 *   transaction of this database still in progress: nothing can still appear below it), and the snapshot replaces the
 *   previous one. A late committer's rows (a lower `seq`) are delivered when it commits, once; a cursor encodes the
 *   position and the snapshot(s), so a resume is exact (docs/completion-backend.md).
 *   Wake-ups come from the process's one shared LISTEN connection (`internal/pgListener`); while it is down, the
 *   subscriber polls; when it is back, the subscriber re-reads (back-fill).
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
import type * as Scope from "effect/Scope"
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
import { byDialect } from "./dialect.js"
import { completionsChannel, onAppend } from "./wakes.js"
import * as PgListener from "./pgListener.js"
import * as Validate from "../validate.js"
import { Storage } from "../../Storage.js"
import { InvalidInput, type TaskId } from "../../TaskQueue.js"
import * as Prepared from "./prepared.js"

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
   * Polling when no live wake-up is available (SQLite across processes, Postgres while LISTEN is down): starts at `min` after activity, doubles up to `max` when idle
   * (default 5 ms .. 500 ms).
   */
  readonly pollInterval?: { readonly min?: Duration.DurationInput; readonly max?: Duration.DurationInput } | undefined
  /** Postgres with LISTEN up: re-read at least this often anyway (default 10 s). */
  readonly safetyInterval?: Duration.DurationInput | undefined
  /**
   * Ignored: committed rows no longer wait for older open transactions, so there is nothing to re-read for.
   *
   * @deprecated accepted so existing configurations still build; it has no effect.
   */
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
 * It reads the functions behind the `pg_stat_activity` and `pg_prepared_xacts` views, not the views: expanding the
 * views (and their joins to pg_authid and pg_database) cost about 2 ms of parse and rewrite per read, against 0.35 ms
 * (`EXPLAIN (SUMMARY)` timed in psql), and every subscriber reads after every NOTIFY.
 */
const horizonSql = `coalesce((
  SELECT min(x.id) FROM pg_snapshot_xip(s.snap) AS x(id)
  WHERE NOT EXISTS (
    SELECT 1 FROM pg_stat_get_activity(NULL) a
    WHERE a.backend_xid IS NOT NULL
      AND a.datid <> (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND a.backend_xid::text::bigint = x.id::text::bigint % 4294967296
  ) AND NOT EXISTS (
    SELECT 1 FROM pg_prepared_xact() p(transaction, gid, prepared, ownerid, dbid)
    WHERE p.dbid <> (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
      AND p.transaction::text::bigint = x.id::text::bigint % 4294967296
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

/**
 * Where a subscription stands; a cursor encodes one exactly.
 * - every row at or before `cursor` that will ever be visible has been delivered (or left out by the filter);
 * - Postgres: every row after `cursor` whose transaction `seen` (a snapshot, as text) shows as finished has been
 *   delivered;
 * - Postgres: every row after `draining.after` that `draining.snapshot` shows as finished is still to deliver, those
 *   up to it were delivered (a snapshot's rows are delivered in batches of `batchSize`).
 */
interface Progress {
  readonly cursor: Position
  readonly seen?: string | undefined
  readonly draining?: { readonly snapshot: string; readonly after: Position } | undefined
}

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
  readonly top_seq?: number | null
  readonly snap?: string | null
  readonly horizon?: string | null
  readonly pruned_xid?: string | null
  readonly pruned_seq: number
  readonly pruned_max_seq: number
}

interface Watermark {
  /** Newest pruned position in delivery order (None: nothing pruned). */
  readonly position: Option.Option<Position>
  /** Highest pruned `seq`. */
  readonly maxSeq: number
  /** Postgres: the snapshot of the statement that read the watermark (which transactions were still running). */
  readonly snapshot?: string | undefined
}

/** One read of the log: the events in delivery order, each with its exact cursor, and where the subscription is then. */
interface Batch {
  readonly events: ReadonlyArray<CompletionEvent>
  readonly next: Progress
  /** There may be more to read now (the read stopped at `limit` rows, or finished an older snapshot): read again. */
  readonly more: boolean
  readonly watermark: Watermark
}

/** Where a subscription starts (strictly after `progress`, only rows with `seq >= minSeq`). */
interface Start {
  readonly progress: Progress
  readonly minSeq: number
  /** How the start was asked for (for errors). */
  readonly requested: string
}

/**
 * The dialect's half of the backend, chosen once with `byDialect`: cursors, reads, start positions, wake-ups and
 * pruning. Everything else (filters, the read loop, retention policy, errors) is shared.
 */
interface LogDialect {
  /** For error messages. */
  readonly name: string
  readonly decodeCursor: (cursor: string) => Option.Option<Progress>
  readonly encodeCursor: (progress: Progress) => Cursor
  /** `tags` filter clauses (the event carries all of them). */
  readonly tagClauses: (tags: ReadonlyArray<string>) => ReadonlyArray<Statement.Fragment>
  /** One statement (one snapshot): the rows after `progress`, and the watermark. */
  readonly read: (
    progress: Progress,
    minSeq: number,
    where: ReadonlyArray<Statement.Fragment>,
    limit: number
  ) => Effect.Effect<Batch, SqlError>
  readonly readWatermark: Effect.Effect<Watermark, SqlError>
  /** The start of `fromSequence: n` (n not pruned). */
  readonly fromSequence: (n: number) => Effect.Effect<Start, SqlError>
  /** The live start: everything that commits after this returns is after it. */
  readonly live: (watermark: Watermark) => Effect.Effect<Progress, SqlError>
  /** Publishes to `wake` whenever the log may have grown; returns whether a push channel is up right now. */
  readonly wakeUps: (wake: PubSub.PubSub<void>) => Effect.Effect<() => boolean, never, Scope.Scope>
  /** How long to wait for a wake-up before reading anyway. */
  readonly waitMillis: (channelUp: boolean, idle: number) => number
  /** Prunes one batch of rows matching the cutoffs; returns how many. */
  readonly pruneBatch: (cutoffAt: number | null) => Effect.Effect<number, SqlError>
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

const toEvent = (row: LogRow, cursor: Cursor): CompletionEvent => ({
  sequence: num(row.seq),
  cursor,
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

const columns =
  "c.seq, c.kind, c.task_id, c.task_name, c.queue, c.namespace, c.tags, c.outcome, c.chord_id, c.run_id, c.at, " +
  "c.progress, c.progress_message"

// -- Postgres snapshots in cursors (`xmin:xmax:xip,…`, the text form of pg_snapshot) ---------------------------------

const snapshotPattern = "\\d{1,20}:\\d{1,20}:(?:\\d{1,20}(?:,\\d{1,20})*)?"
const pgCursorPattern = new RegExp(
  `^p\\.(\\d{1,20})\\.(\\d{1,16})(?:\\.((?:${snapshotPattern})?)(?:\\.(${snapshotPattern})\\.(\\d{1,20})\\.(\\d{1,16}))?)?$`
)

interface Snapshot {
  readonly xmax: bigint
  /** In progress when it was taken. */
  readonly xip: ReadonlyArray<bigint>
}

/** A snapshot's text form parsed, or undefined when it is not a valid one (xmin <= xip ascending < xmax). */
const parseSnapshot = (text: string): Snapshot | undefined => {
  const [xmin, xmax, list] = text.split(":")
  if (xmin === undefined || xmax === undefined || list === undefined) return undefined
  const lo = BigInt(xmin)
  const hi = BigInt(xmax)
  if (lo > hi) return undefined
  const xip: Array<bigint> = []
  let previous = lo
  for (const part of list === "" ? [] : list.split(",")) {
    const id = BigInt(part)
    if (id < previous || id >= hi) return undefined
    xip.push(id)
    previous = id
  }
  return { xmax: hi, xip }
}

const snapshotXmax = (text: string): bigint | undefined => parseSnapshot(text)?.xmax

/**
 * Postgres: whether the pruned rows up to `watermark` (all at or before it, all committed when pruned) can include
 * none this subscription has yet to deliver. Those would lie after its cursor and belong to a transaction its `seen`
 * (or draining) snapshot did not show as finished: one at or above its xmax (may have committed and been pruned
 * since), or one in progress then — which cannot have been pruned if it is still in progress in `now` (the snapshot
 * the watermark was read in).
 */
const seenCovers = (progress: Progress, watermark: Position, now: string | undefined): boolean => {
  const running = now === undefined ? undefined : parseSnapshot(now)
  if (running === undefined) return false
  const still = new Set(running.xip)
  const covers = (text: string): boolean => {
    const snapshot = parseSnapshot(text)
    return (
      snapshot !== undefined &&
      watermark.xid < snapshot.xmax &&
      snapshot.xip.every((id) => id < progress.cursor.xid || id > watermark.xid || still.has(id))
    )
  }
  // Mid-snapshot: its rows up to `after` are delivered too (it is newer than `seen`, so it shows more as finished).
  const { draining } = progress
  if (draining !== undefined && comparePositions(watermark, draining.after) <= 0 && covers(draining.snapshot)) {
    return true
  }
  return progress.seen !== undefined && covers(progress.seen)
}

const encodePg = (progress: Progress): Cursor => {
  const { cursor, draining } = progress
  // A snapshot says nothing about rows after a cursor at or past its xmax: drop it (the common case, with no open
  // writer, is then the short `p.<xid>.<seq>` form).
  const seen =
    progress.seen !== undefined && cursor.xid < (snapshotXmax(progress.seen) ?? 0n) ? progress.seen : undefined
  const base = `p.${cursor.xid}.${cursor.seq}`
  if (draining !== undefined) {
    return `${base}.${seen ?? ""}.${draining.snapshot}.${draining.after.xid}.${draining.after.seq}` as Cursor
  }
  return (seen === undefined ? base : `${base}.${seen}`) as Cursor
}

const decodePg = (text: string): Option.Option<Progress> => {
  if (text.length > 65_536) return Option.none()
  const match = pgCursorPattern.exec(text)
  if (match === null) return Option.none()
  const cursor = { xid: BigInt(match[1]!), seq: Number(match[2]!) }
  const seen = match[3] === undefined || match[3] === "" ? undefined : match[3]
  if (seen !== undefined && snapshotXmax(seen) === undefined) return Option.none()
  if (match[4] === undefined) return Option.some({ cursor, seen })
  const snapshot = match[4]
  if (snapshotXmax(snapshot) === undefined) return Option.none()
  const after = { xid: BigInt(match[5]!), seq: Number(match[6]!) }
  if (comparePositions(after, cursor) < 0) return Option.none()
  return Option.some({ cursor, seen, draining: { snapshot, after } })
}

/** Builds the service. Requires the `SqlClient` and `Storage` of a storage layer. */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* Storage
  const channel = completionsChannel(storage.channelPrefix)
  const pollMin = Duration.toMillis(Duration.decode(options.pollInterval?.min ?? Duration.millis(5)))
  const pollMax = Math.max(
    pollMin,
    Duration.toMillis(Duration.decode(options.pollInterval?.max ?? Duration.millis(500)))
  )
  const safetyMs = Duration.toMillis(Duration.decode(options.safetyInterval ?? Duration.seconds(10)))
  const retention = options.retention ?? defaultRetention
  const maxAgeMs = retention.maxAge === undefined ? undefined : Duration.toMillis(Duration.decode(retention.maxAge))
  const maxRows = retention.maxRows
  const pruneBatch = Math.max(1, Math.floor(retention.batchSize ?? 5000))

  const toWatermark = (row: ReadRow | undefined, position: (row: ReadRow) => Option.Option<Position>): Watermark =>
    row === undefined
      ? { position: Option.none(), maxSeq: 0 }
      : { position: position(row), maxSeq: num(row.pruned_max_seq), snapshot: row.snap ?? undefined }

  const pgWatermark = (row: ReadRow) =>
    row.pruned_xid == null
      ? Option.none<Position>()
      : Option.some({ xid: BigInt(row.pruned_xid), seq: num(row.pruned_seq) })
  const sqliteWatermark = (row: ReadRow) => {
    const seq = num(row.pruned_seq)
    return seq > 0 ? Option.some<Position>({ xid: 0n, seq }) : Option.none<Position>()
  }
  const and = (where: ReadonlyArray<Statement.Fragment>) => (where.length === 0 ? sql.literal("TRUE") : sql.and(where))

  // -- Postgres ---------------------------------------------------------------------------------------------------------
  //
  // Each read delivers the rows of transactions committed in its snapshot that no earlier read delivered, however
  // old the oldest open transaction is (docs/completion-backend.md, "Log order on Postgres"). Rows below the horizon
  // are final, so the cursor moves up to it; above it, `seen` (the previous read's snapshot) says which rows were
  // delivered, so a late committer's rows (a lower `seq`) are delivered when it commits, and never twice.

  const pgDialect = (): LogDialect => {
    const horizon = sql.literal(horizonSql)
    const cols = sql.literal(columns)

    // Rows after `after` that `seen` does not show as finished (`xid >= xmax` or in progress), each half by index.
    const rowsAfter = (after: Position, seen: string | undefined, where: Statement.Fragment, limit: number) => {
      const head = sql`SELECT c.xid, ${cols} FROM baton_completions c
        WHERE (c.xid, c.seq) > (${after.xid.toString()}::xid8, ${after.seq}) AND ${where}`
      if (seen === undefined) return sql`${head} ORDER BY c.xid, c.seq LIMIT ${limit}`
      return sql`SELECT * FROM (
          (${head} AND c.xid >= pg_snapshot_xmax(${seen}::pg_snapshot) ORDER BY c.xid, c.seq LIMIT ${limit})
          UNION ALL
          (${head} AND c.xid = ANY(ARRAY(SELECT pg_snapshot_xip(${seen}::pg_snapshot)))
            ORDER BY c.xid, c.seq LIMIT ${limit})
        ) u ORDER BY u.xid, u.seq LIMIT ${limit}`
    }

    const read: LogDialect["read"] = (progress, minSeq, where, limit) => {
      const { cursor, seen, draining } = progress
      const conditions = [...where, sql`c.seq >= ${minSeq}`]
      if (draining !== undefined) conditions.push(sql`pg_visible_in_snapshot(c.xid, ${draining.snapshot}::pg_snapshot)`)
      const rows = rowsAfter(draining?.after ?? cursor, seen, and(conditions), limit)
      // The meta row is MATERIALIZED: computed once, not once per returned row.
      // A named prepared statement (`prepared.ts`): planning this statement took 0.3–2 ms of every read.
      return Prepared.run(
        sql,
        sql<ReadRow>`WITH meta AS MATERIALIZED (
          SELECT s.snap::text AS snap, (${horizon})::text AS horizon,
            p.xid AS pruned_xid, p.seq AS pruned_seq, p.max_seq AS pruned_max_seq
          FROM (SELECT pg_current_snapshot() AS snap) s CROSS JOIN baton_completions_pruned p
          WHERE p.id = 1
        )
        SELECT meta.snap, meta.horizon, meta.pruned_xid, meta.pruned_seq, meta.pruned_max_seq, r.*
        FROM meta LEFT JOIN LATERAL (${rows}) r ON TRUE
        ORDER BY r.xid, r.seq`
      ).pipe(
        Effect.map((result): Batch => {
          const first = result[0]
          const watermark = toWatermark(first, pgWatermark)
          const found = result.filter((row) => row.seq !== null)
          const full = found.length >= limit
          const positionOf = (row: LogRow): Position => ({ xid: BigInt(row.xid ?? "0"), seq: num(row.seq) })
          if (draining !== undefined) {
            // Delivering an older snapshot's rows: the cursor stays until all of them are out.
            const events = found.map((row) =>
              toEvent(
                row,
                encodePg({ cursor, seen, draining: { snapshot: draining.snapshot, after: positionOf(row) } })
              )
            )
            const last = found[found.length - 1]
            const next: Progress = full
              ? { cursor, seen, draining: { snapshot: draining.snapshot, after: positionOf(last!) } }
              : { cursor, seen: draining.snapshot }
            return { events, next, more: true, watermark }
          }
          const snapshot = first?.snap ?? ""
          const top: Position = { xid: BigInt(first?.horizon ?? "0"), seq: 0 }
          // Everything below the horizon is final: the cursor may move up to it.
          const raised = maxPosition(cursor, top)
          const progressAt = (position: Position): Progress =>
            position.xid < top.xid
              ? { cursor: position, seen }
              : { cursor: raised, seen, draining: { snapshot, after: position } }
          const events = found.map((row) => toEvent(row, encodePg(progressAt(positionOf(row)))))
          const next: Progress = full
            ? progressAt(positionOf(found[found.length - 1]!))
            : { cursor: raised, seen: snapshot }
          return { events, next, more: full, watermark }
        })
      )
    }

    return {
      name: "Postgres",
      decodeCursor: decodePg,
      encodeCursor: encodePg,
      tagClauses: (tags) => [sql`c.tags::jsonb @> ${JSON.stringify(tags)}::jsonb`],
      read,
      readWatermark: sql<ReadRow>`SELECT xid AS pruned_xid, seq AS pruned_seq, max_seq AS pruned_max_seq,
        pg_current_snapshot()::text AS snap FROM baton_completions_pruned WHERE id = 1`.pipe(
        Effect.map((rows) => toWatermark(rows[0], pgWatermark))
      ),
      fromSequence: (n) =>
        // (xid, seq) order is not seq order: start at the lowest xid that holds a seq >= n, or that may still commit
        // one (the oldest running transaction), and keep only seq >= n.
        sql<{ xid: string }>`SELECT LEAST(
            (SELECT min(xid) FROM baton_completions WHERE seq >= ${n}),
            pg_snapshot_xmin(pg_current_snapshot())
          ) AS xid`.pipe(
          Effect.map((rows) => ({
            progress: { cursor: { xid: BigInt(rows[0]?.xid ?? "0"), seq: 0 } },
            minSeq: n,
            requested: `sequence ${n}`
          }))
        ),
      // From the oldest running transaction, skipping what the start snapshot shows as committed: exactly what
      // commits after `subscribe` returned.
      live: () =>
        sql<{ xid: string; snapshot: string }>`SELECT pg_snapshot_xmin(s)::text AS xid, s::text AS snapshot
          FROM (SELECT pg_current_snapshot() AS s) t`.pipe(
          Effect.map(([row]) => ({ cursor: { xid: BigInt(row?.xid ?? "0"), seq: 0 }, seen: row?.snapshot }))
        ),
      wakeUps: (wake) =>
        Effect.gen(function* () {
          if (storage.pg === undefined) return () => false
          let up = false
          const events = yield* PgListener.listen(storage.pg, [channel])
          yield* events.pipe(
            Stream.runForEach((event) =>
              Effect.suspend(() => {
                if (event._tag !== "Notification") up = event._tag === "Up"
                return PubSub.publish(wake, undefined)
              })
            ),
            Effect.forkScoped
          )
          return () => up
        }),
      waitMillis: (up, idle) => (up ? safetyMs : idle),
      pruneBatch: (cutoffAt) =>
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
            // Only rows below the horizon: rows above it may still be ahead of a subscriber's cursor.
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
    }
  }

  // -- SQLite: one writer at a time, so `seq` order is commit order and the cursor is `seq` ---------------------------

  const sqliteDialect = (): LogDialect => {
    const cols = sql.literal(columns)
    const encode = (seq: number) => `s.${seq}` as Cursor
    return {
      name: "SQLite",
      encodeCursor: (progress) => encode(progress.cursor.seq),
      decodeCursor: (text) => {
        const match = /^s\.(\d{1,16})$/.exec(text)
        return match === null ? Option.none() : Option.some({ cursor: { xid: 0n, seq: Number(match[1]!) } })
      },
      tagClauses: (tags) =>
        tags.map((tag) => sql`EXISTS (SELECT 1 FROM json_each(c.tags) AS t WHERE t.value = ${tag})`),
      read: (progress, minSeq, where, limit) =>
        sql<ReadRow>`SELECT t.top_seq, p.seq AS pruned_seq, p.max_seq AS pruned_max_seq, r.*
          FROM (SELECT max(seq) AS top_seq FROM baton_completions) t
          CROSS JOIN baton_completions_pruned p
          LEFT JOIN (
            SELECT ${cols} FROM baton_completions c
            WHERE c.seq > ${progress.cursor.seq} AND c.seq >= ${minSeq} AND ${and(where)}
            ORDER BY c.seq LIMIT ${limit}
          ) r ON 1
          WHERE p.id = 1
          ORDER BY r.seq`.pipe(
          Effect.map((result): Batch => {
            const first = result[0]
            const found = result.filter((row) => row.seq !== null)
            const full = found.length >= limit
            const last = found.length === 0 ? progress.cursor.seq : num(found[found.length - 1]!.seq)
            // A short batch read everything up to `top`: skip past rows the filter left out, so an idle filtered
            // subscriber's cursor keeps up with the log (and is not overtaken by pruning).
            const top = first?.top_seq == null ? 0 : num(first.top_seq)
            const seq = full ? last : Math.max(last, top, progress.cursor.seq)
            return {
              events: found.map((row) => toEvent(row, encode(num(row.seq)))),
              next: { cursor: { xid: 0n, seq } },
              more: full,
              watermark: toWatermark(first, sqliteWatermark)
            }
          })
        ),
      readWatermark: sql<ReadRow>`SELECT seq AS pruned_seq, max_seq AS pruned_max_seq
        FROM baton_completions_pruned WHERE id = 1`.pipe(Effect.map((rows) => toWatermark(rows[0], sqliteWatermark))),
      fromSequence: (n) =>
        Effect.succeed({
          progress: { cursor: { xid: 0n, seq: Math.max(0, n - 1) } },
          minSeq: 0,
          requested: `sequence ${n}`
        }),
      live: (watermark) =>
        sql<{ seq: number | null }>`SELECT max(seq) AS seq FROM baton_completions`.pipe(
          Effect.map((rows) => {
            const end = { xid: 0n, seq: num(rows[0]?.seq ?? 0) }
            return {
              cursor: Option.match(watermark.position, { onNone: () => end, onSome: (w) => maxPosition(w, end) })
            }
          })
        ),
      wakeUps: (wake) =>
        Effect.acquireRelease(
          Effect.sync(() => onAppend(sql, () => void wake.unsafeOffer(undefined))),
          (unregister) => Effect.sync(unregister)
        ).pipe(Effect.as(() => false)),
      waitMillis: (_up, idle) => idle,
      pruneBatch: (cutoffAt) =>
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
    }
  }

  const dialect = byDialect<LogDialect>(storage.dialect, { pg: pgDialect, sqlite: sqliteDialect })

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
            if (tags.length > 0) clauses.push(...dialect.tagClauses(tags))
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

  // Rows this subscription has not delivered may have been pruned: the watermark is past its cursor (and past the
  // first seq asked for), and, on Postgres, not every row in between is known to be delivered or still unprunable.
  const isExpired = (watermark: Watermark, progress: Progress, minSeq: number): boolean =>
    Option.isSome(watermark.position) &&
    comparePositions(watermark.position.value, progress.cursor) > 0 &&
    watermark.maxSeq >= minSeq &&
    !seenCovers(progress, watermark.position.value, watermark.snapshot)

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
      const watermark = yield* dialect.readWatermark
      if (after !== undefined) {
        const requested = `cursor ${after}`
        const progress = dialect.decodeCursor(String(after))
        if (Option.isNone(progress)) {
          return yield* new InvalidCursor({
            cursor: String(after),
            message: `not a cursor of this ${dialect.name} completion log (use an event's cursor)`
          })
        }
        if (isExpired(watermark, progress.value, 0)) return yield* expired(requested)
        return { progress: progress.value, minSeq: 0, requested }
      }
      if (fromSequence === "oldest") {
        // Right after the newest pruned event: the longest suffix of the log with no gap.
        const cursor = Option.getOrElse(watermark.position, () => ({ xid: 0n, seq: 0 }))
        return { progress: { cursor }, minSeq: 0, requested: "the oldest retained event" }
      }
      if (fromSequence !== undefined) {
        if (typeof fromSequence !== "number" || !Number.isSafeInteger(fromSequence) || fromSequence < 0) {
          return yield* new InvalidCursor({
            cursor: String(fromSequence),
            message: 'fromSequence must be a non-negative integer or "oldest"'
          })
        }
        if (Option.isSome(watermark.position) && watermark.maxSeq >= fromSequence) {
          return yield* expired(`sequence ${fromSequence}`)
        }
        return yield* dialect.fromSequence(fromSequence)
      }
      const progress = yield* dialect.live(watermark)
      return { progress, minSeq: 0, requested: "the live position" }
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
      const channelUp = yield* dialect.wakeUps(wake)
      const start = yield* resolveStart(subscribeOptions)

      const run = Effect.gen(function* () {
        const woken = yield* PubSub.subscribe(wake)
        let progress = start.progress
        let moved = false
        let idle = pollMin
        let caughtUp = false

        const waitForMore = Effect.suspend(() =>
          Queue.take(woken).pipe(
            Effect.timeout(Duration.millis(dialect.waitMillis(channelUp(), idle))),
            Effect.option,
            Effect.map((signal) => {
              idle = Option.isSome(signal) ? pollMin : Math.min(idle * 2, pollMax)
            })
          )
        )

        const next = Effect.gen(function* () {
          if (caughtUp) yield* waitForMore
          while (true) {
            const batch = yield* dialect.read(progress, start.minSeq, where, limit).pipe(
              Effect.tapError((error) => Effect.logWarning("reading the completions log failed; retrying", { error })),
              Effect.retry(readRetry)
            )
            if (isExpired(batch.watermark, progress, start.minSeq)) {
              return yield* expired(moved ? `cursor ${dialect.encodeCursor(progress)}` : start.requested)
            }
            progress = batch.next
            moved = true
            if (batch.events.length > 0) {
              caughtUp = !batch.more
              idle = pollMin
              return Chunk.unsafeFromArray(batch.events)
            }
            if (batch.more) continue
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

  const prune = Effect.gen(function* () {
    if (maxAgeMs === undefined && maxRows === undefined) return 0
    const now = yield* Clock.currentTimeMillis
    const cutoffAt = maxAgeMs === undefined ? null : now - maxAgeMs
    let total = 0
    // Short transactions: a batch at a time, until a batch comes back short.
    while (true) {
      const n = yield* dialect.pruneBatch(cutoffAt)
      total += n
      if (n < pruneBatch) return total
    }
  }).pipe(Effect.withSpan("CompletionBackend.prune"))

  return CompletionBackend.of({ subscribe, stream, prune })
})
