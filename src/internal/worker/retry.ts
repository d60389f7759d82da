/**
 * Retrying the worker's own writes after a dropped connection, so that a dropped connection costs no finished work.
 *
 * A completion batch, a failure record, a heartbeat or a claim that fails (the backend was terminated, the network
 * dropped, the server refused a connection) is run again, with jittered exponential backoff capped at one second,
 * on whatever connection the pool gives next (a fresh one: the pool discards a broken connection). Every retried
 * write is guarded by the lease it was made under (`id AND lease_id AND state = 'running'`), so a retry of a write
 * that did commit before its reply was lost changes nothing: the retry is idempotent. The retry budget is the time
 * the leases stay held (the heartbeat keeps extending them meanwhile); past it the work is left to the expired-lease
 * pass, which is the only path that runs a task again.
 *
 * A server at its connection limit (SQLSTATE 53300: `max_connections`, reserved slots, or the role's
 * `CONNECTION LIMIT`) is reported once per episode as an error that says so, then retried the same way; the worker
 * recovers by itself when connections free up.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

/** The messages of an error and of its causes, joined (the driver's error is the SqlError's `cause`). */
const describe = (error: unknown): string => {
  const parts: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (typeof current !== "object") {
      parts.push(String(current))
      break
    }
    const record = current as { readonly message?: unknown; readonly code?: unknown; readonly cause?: unknown }
    if (typeof record.message === "string") parts.push(record.message)
    if (typeof record.code === "string") parts.push(record.code)
    current = record.cause
  }
  return parts.join(": ")
}

/** The server refused a connection because it is at its connection limit (SQLSTATE 53300). */
export const isConnectionLimit = (error: unknown): boolean =>
  /53300|too many (clients|connections)|remaining connection slots are reserved/i.test(describe(error))

/** Jittered exponential backoff from 20 ms, capped at 1 s between tries, for at most `budget`. */
export const backoff = (budget: Duration.DurationInput): Schedule.Schedule<unknown> =>
  Schedule.exponential(Duration.millis(20), 2).pipe(
    Schedule.union(Schedule.spaced(Duration.seconds(1))),
    Schedule.jittered,
    Schedule.upTo(budget)
  )

// One "connection limit" error per episode and process, not one per retried write.
let atLimit = false

/**
 * Runs `effect`, retrying it on failure with `backoff(budget)`; logs each failed try (a warning, or once per episode
 * an error naming the connection limit) and calls `onRetry` before the first retry. Fails with the last error once
 * the budget is spent.
 */
export const retrying = <A, E, R>(
  what: string,
  effect: Effect.Effect<A, E, R>,
  budget: Duration.DurationInput,
  onRetry?: Effect.Effect<void>
): Effect.Effect<A, E, R> => {
  let tries = 0
  return Effect.suspend(() => {
    tries++
    return effect
  }).pipe(
    Effect.tapError((error) => {
      const first = tries === 1 && onRetry !== undefined ? onRetry : Effect.void
      if (isConnectionLimit(error)) {
        if (atLimit) return first
        atLimit = true
        return Effect.zipRight(
          first,
          Effect.logError(
            `${what} failed: the database server refused a connection because it is at its connection limit ` +
              "(max_connections, or the role's CONNECTION LIMIT); retrying with backoff until connections free up",
            { error: describe(error) }
          )
        )
      }
      return Effect.zipRight(
        first,
        Effect.logWarning(`${what} failed; retrying on a fresh connection`, { error: describe(error), try: tries })
      )
    }),
    Effect.retry(backoff(budget)),
    Effect.tap(() =>
      Effect.suspend(() => {
        if (atLimit && tries > 1) {
          atLimit = false
          return Effect.logInfo(`${what} succeeded again: connections are available`)
        }
        return Effect.void
      })
    )
  )
}
