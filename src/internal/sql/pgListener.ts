/**
 * The process's LISTEN connection to a Postgres database, shared by every subscriber.
 *
 * `@effect/sql-pg` 0.53's `listen` cannot serve here: it never reports that LISTEN is active and goes silent when
 * its connection is killed. So Baton holds the listening connection itself: a `pg.Client` acquired as a scoped
 * resource whose `error` / `end` events fail the session, with
 * - ONE connection per process and database (keyed by connection string and application name; channels carry the
 *   schema, so one connection serves every schema), reference counted through an `RcMap`: the first subscriber
 *   opens it, the last one's scope closing releases it (after `idleTimeToLive`),
 * - every channel any subscriber asked for LISTENed on it (channels are added on demand, never removed while the
 *   connection lives), notifications fanned out in-process through a sliding `PubSub`,
 * - reconnection with capped, jittered exponential backoff (`Schedule`) when the connection dies (killed backend,
 *   network, server restart) or stops answering the periodic ping; every channel is LISTENed again.
 *
 * Subscribers see `Up` (LISTEN is active: after a reconnect, notifications sent meanwhile are lost, so re-read),
 * `Down` (no live channel: poll until `Up`) and `Notification`s. `listen` returns once LISTEN on the requested
 * channels is confirmed — or, if the database cannot be reached, once a connection attempt failed, with the stream
 * starting at `Down` (the caller polls; the listener keeps reconnecting).
 *
 * The background fiber inherits the services of the fiber that first opened the connection (its Clock included).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as Hash from "effect/Hash"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as RcMap from "effect/RcMap"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Pg from "pg"
import type { PgConnectionInfo } from "../../Storage.js"

/** What a subscriber of the shared listener sees. */
export type ListenEvent =
  | { readonly _tag: "Notification"; readonly channel: string; readonly payload: string }
  /** LISTEN is active on every requested channel (initially, and again after each reconnect). */
  | { readonly _tag: "Up" }
  /** The connection is lost; notifications are not arriving until the next `Up`. */
  | { readonly _tag: "Down" }

/** How long the connection stays open after its last subscriber left (absorbs subscribe/unsubscribe churn). */
export const idleTimeToLive = Duration.seconds(1)
/** How often an idle LISTEN connection is pinged (a connection that died silently is noticed within this + 5 s). */
export const pingInterval = Duration.seconds(10)
/** Reconnection backoff: 50 ms doubling, capped at 5 s, jittered; reset after each successful connection. */
export const reconnectSchedule = Schedule.exponential(Duration.millis(50)).pipe(
  Schedule.either(Schedule.spaced(Duration.seconds(5))),
  Schedule.jittered
)

class ListenerError extends Data.TaggedError("ListenerError")<{ readonly message: string; readonly cause?: unknown }> {}

class ListenerKey implements Equal.Equal {
  constructor(
    readonly id: string,
    readonly applicationName: string,
    readonly config: Pg.ClientConfig
  ) {}
  [Equal.symbol](that: Equal.Equal): boolean {
    return that instanceof ListenerKey && that.id === this.id
  }
  [Hash.symbol](): number {
    return Hash.string(this.id)
  }
}

interface Shared {
  readonly hub: PubSub.PubSub<ListenEvent>
  /** Adds channels; true once they are LISTENed on a live connection, false if the connection is down. */
  readonly ensure: (channels: ReadonlyArray<string>) => Effect.Effect<boolean>
  readonly isUp: Effect.Effect<boolean>
}

/** `application_name` of the LISTEN connection: the storage's application name + "-listener". */
export const listenerApplicationName = (info: PgConnectionInfo): string =>
  `${info.clientConfig.application_name ?? "baton"}-listener`.slice(0, 63)

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

const makeShared = (key: ListenerKey): Effect.Effect<Shared, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Loaded on first use (the Postgres storage layer loaded it already): `pg` is an optional peer dependency.
    const Pg = yield* Effect.promise(() =>
      import("pg").then(
        (module) => ((module as unknown as { default?: typeof module }).default ?? module) as typeof import("pg")
      )
    )
    const hub = yield* PubSub.sliding<ListenEvent>(4096)
    const requests = yield* Queue.unbounded<Deferred.Deferred<boolean>>()
    const wanted = new Set<string>()
    let listened = new Set<string>()
    let up = false
    let failedOnce = false

    const settleRequests = (value: boolean) =>
      Queue.takeAll(requests).pipe(
        Effect.flatMap((pending) => Effect.forEach(pending, (done) => Deferred.succeed(done, value), { discard: true }))
      )

    const markDown = (error: ListenerError) =>
      Effect.suspend(() => {
        listened = new Set()
        const wasUp = up
        const first = !failedOnce
        failedOnce = true
        up = false
        return Effect.zipRight(
          wasUp
            ? Effect.zipRight(
                PubSub.publish(hub, { _tag: "Down" }),
                Effect.logWarning("LISTEN connection lost; reconnecting", { error: error.message })
              )
            : first
              ? Effect.logWarning("LISTEN connection failed; subscribers poll until it is up", {
                  error: error.message
                })
              : Effect.logDebug("LISTEN connection attempt failed", { error: error.message }),
          settleRequests(false)
        )
      })

    const query = (client: Pg.Client, text: string) =>
      Effect.tryPromise({
        try: () => client.query(text),
        catch: (cause) => new ListenerError({ message: `LISTEN connection: ${describe(cause)}`, cause })
      })

    const listenMissing = (client: Pg.Client) =>
      Effect.forEach(
        [...wanted].filter((channel) => !listened.has(channel)),
        (channel) =>
          Effect.tap(query(client, `LISTEN ${Pg.escapeIdentifier(channel)}`), () =>
            Effect.sync(() => listened.add(channel))
          ),
        { discard: true }
      )

    // One connection's life: connect, LISTEN, announce Up, then serve channel requests and pings until it dies.
    const connect = Effect.gen(function* () {
      const died = yield* Deferred.make<never, ListenerError>()
      const client = yield* Effect.acquireRelease(
        Effect.suspend(() => {
          const client = new Pg.Client({
            ...key.config,
            application_name: key.applicationName,
            keepAlive: true
          })
          // Attached before connect and never removed: an unhandled 'error' event would crash the process.
          client.on("error", (cause) =>
            Deferred.unsafeDone(died, Exit.fail(new ListenerError({ message: describe(cause), cause })))
          )
          client.on("end", () =>
            Deferred.unsafeDone(died, Exit.fail(new ListenerError({ message: "the connection ended" })))
          )
          client.on("notification", (message) => {
            hub.unsafeOffer({ _tag: "Notification", channel: message.channel, payload: message.payload ?? "" })
          })
          return Effect.as(
            Effect.tryPromise({
              try: () => client.connect(),
              catch: (cause) => new ListenerError({ message: `cannot connect: ${describe(cause)}`, cause })
            }).pipe(Effect.onError(() => Effect.promise(() => client.end().catch(() => undefined)))),
            client
          )
        }),
        (client) =>
          Effect.promise(() => client.end().catch(() => undefined)).pipe(
            Effect.timeoutOption(Duration.seconds(1)),
            Effect.asVoid
          )
      )
      listened = new Set()
      yield* listenMissing(client)
      return { client, died }
    })

    const serve = (client: Pg.Client, died: Deferred.Deferred<never, ListenerError>) =>
      Effect.gen(function* () {
        up = true
        yield* PubSub.publish(hub, { _tag: "Up" })
        yield* settleRequests(true)
        const handleRequests = Effect.gen(function* () {
          const done = yield* Queue.take(requests)
          yield* listenMissing(client)
          yield* Deferred.succeed(done, true)
        }).pipe(Effect.forever)
        const ping = query(client, "SELECT 1").pipe(
          Effect.timeoutFail({
            duration: Duration.seconds(5),
            onTimeout: () => new ListenerError({ message: "the connection stopped answering" })
          }),
          Effect.delay(pingInterval),
          Effect.forever
        )
        // raceFirst: whichever ends first (the connection dying, a failed LISTEN or ping) ends the session.
        return yield* Deferred.await(died).pipe(Effect.raceFirst(handleRequests), Effect.raceFirst(ping))
      })

    const session = Effect.scoped(
      Effect.gen(function* () {
        const { client, died } = yield* connect.pipe(Effect.tapError(markDown), Effect.retry(reconnectSchedule))
        return yield* serve(client, died)
      })
    )

    // Sessions that die young (LISTEN failing right after connecting, a kill loop) back off too; the first death
    // after a healthy session reconnects at once.
    let shortLived = 0
    const supervised = Effect.gen(function* () {
      const started = yield* Clock.currentTimeMillis
      yield* session.pipe(
        // A defect must not end the listener for good: log it, go Down, reconnect.
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.interrupt
            : Cause.failureOption(cause).pipe(
                Option.match({
                  onNone: () => markDown(new ListenerError({ message: Cause.pretty(cause) })),
                  onSome: markDown
                })
              )
        )
      )
      shortLived = (yield* Clock.currentTimeMillis) - started < 2000 ? shortLived + 1 : 0
      if (shortLived > 1) yield* Effect.sleep(Duration.millis(Math.min(50 * 2 ** shortLived, 5000)))
    })

    yield* supervised.pipe(Effect.forever, Effect.annotateLogs({ listener: key.applicationName }), Effect.forkScoped)

    return {
      hub,
      isUp: Effect.sync(() => up),
      ensure: (channels) =>
        Effect.suspend(() => {
          for (const channel of channels) wanted.add(channel)
          if (up && channels.every((channel) => listened.has(channel))) return Effect.succeed(true)
          if (!up && failedOnce) return Effect.succeed(false)
          return Effect.flatMap(Deferred.make<boolean>(), (done) =>
            Effect.zipRight(Queue.offer(requests, done), Deferred.await(done))
          )
        })
    } satisfies Shared
  })

const registryLock = Effect.unsafeMakeSemaphore(1)
let registry: RcMap.RcMap<ListenerKey, Shared> | undefined

// Process-wide: the registry lives in a scope that is never closed; each connection is reference counted.
const getRegistry: Effect.Effect<RcMap.RcMap<ListenerKey, Shared>> = registryLock.withPermits(1)(
  Effect.suspend(() => {
    if (registry !== undefined) return Effect.succeed(registry)
    return Effect.flatMap(Scope.make(), (scope) =>
      RcMap.make({ lookup: makeShared, idleTimeToLive }).pipe(
        Effect.mapInputContext((_: Context.Context<never>) => Context.make(Scope.Scope, scope)),
        Effect.tap((map) =>
          Effect.sync(() => {
            registry = map
          })
        )
      )
    )
  })
)

const keyOf = (info: PgConnectionInfo): ListenerKey => {
  const config = info.clientConfig
  const target =
    config.connectionString ?? `${config.user ?? ""}@${config.host ?? ""}:${config.port ?? ""}/${config.database ?? ""}`
  // search_path does not matter to LISTEN: channel names carry the schema.
  const { options: _searchPath, ...rest } = config
  const applicationName = listenerApplicationName(info)
  return new ListenerKey(`${target}\u0000${applicationName}`, applicationName, rest as Pg.ClientConfig)
}

/**
 * Subscribes to `channels` on the process's shared LISTEN connection for this database. The subscription (and the
 * connection, once no one else uses it) is released when the current scope closes. The stream starts with the
 * current state (`Up` or `Down`); no notification published after `listen` returned is missed while `Up`.
 */
export const listen = (
  info: PgConnectionInfo,
  channels: ReadonlyArray<string>
): Effect.Effect<Stream.Stream<ListenEvent>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const shared = yield* RcMap.get(yield* getRegistry, keyOf(info))
    // Subscribe to the hub before asking for the channels, so nothing published after LISTEN is missed.
    const subscription = yield* PubSub.subscribe(shared.hub)
    const isUp = yield* shared.ensure(channels)
    const mine = new Set(channels)
    const initial: ListenEvent = isUp ? { _tag: "Up" } : { _tag: "Down" }
    return Stream.concat(Stream.make(initial), Stream.fromQueue(subscription)).pipe(
      Stream.filter((event) => event._tag !== "Notification" || mine.has(event.channel)),
      // The hub may repeat the state the stream started with (the Up that answered this very request).
      Stream.mapAccum(
        "none" as ListenEvent["_tag"],
        (last, event): [ListenEvent["_tag"], Option.Option<ListenEvent>] =>
          event._tag === "Notification"
            ? [last, Option.some(event)]
            : [event._tag, event._tag === last ? Option.none() : Option.some(event)]
      ),
      Stream.filterMap((event) => event)
    )
  }).pipe(Effect.withSpan("PgListener.listen", { attributes: { channels: channels.join(",") } }))

/** `listen` as a self-contained stream: the subscription lives while the stream runs. */
export const stream = (info: PgConnectionInfo, channels: ReadonlyArray<string>): Stream.Stream<ListenEvent> =>
  Stream.unwrapScoped(listen(info, channels))

/**
 * The payloads of one channel, for wake-ups (e.g. `TaskQueue.wakeups` from the `_tasks` channel). Notifications
 * sent while the connection was down are lost: a consumer must also poll, as the Worker does.
 */
export const payloads = (info: PgConnectionInfo, channel: string): Stream.Stream<string> =>
  stream(info, [channel]).pipe(
    Stream.filterMap((event) => (event._tag === "Notification" ? Option.some(event.payload) : Option.none()))
  )
