/**
 * Wake-ups: "the completions log grew" and "tasks were enqueued on queue X".
 *
 * - Postgres: NOTIFY on two channels per storage prefix, sent inside the writing transaction (delivered only at
 *   commit) and received through the process's shared LISTEN connection (`pgListener.ts`).
 * - SQLite has no NOTIFY: in-process listeners per SQL client, fired synchronously inside the writing transaction's
 *   statement sequence. A reader on the same SQLite connection (one writer) runs after the commit, so it finds what
 *   woke it. Other processes on the same file poll.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type { Dialect } from "../../Storage.js"
import { byDialect } from "./dialect.js"

/** The NOTIFY channel carrying "the completions log grew" (payload: the highest new seq). */
export const completionsChannel = (prefix: string): string => `${prefix}_completions`
/** The NOTIFY channel carrying "work is available on queue X" (payload: the queue name). */
export const tasksChannel = (prefix: string): string => `${prefix}_tasks`

/**
 * Synchronous in-process listeners per SQL client. Not a PubSub: they must run inside the writing transaction's
 * statement sequence, synchronously, with nothing to await (see the two uses below).
 */
const inProcessSignal = <A>() => {
  const listeners = new WeakMap<object, Set<(value: A) => void>>()
  return {
    fire: (sql: SqlClient.SqlClient, value: A): void => {
      const registered = listeners.get(sql)
      if (registered !== undefined) for (const listener of registered) listener(value)
    },
    on: (sql: SqlClient.SqlClient, listener: (value: A) => void): (() => void) => {
      let registered = listeners.get(sql)
      if (registered === undefined) listeners.set(sql, (registered = new Set()))
      const set = registered
      set.add(listener)
      return () => {
        set.delete(listener)
      }
    }
  }
}

// SQLite: in-process subscribers (the completion backend) register here to be woken when this process appends to
// the completions log. Fired inside the transaction; a reader on the same SQLite connection waits for its commit.
const appendSignal = inProcessSignal<void>()

/** SQLite: tells this process's subscribers that the log grew (inside the appending transaction). */
export const signalAppend = (sql: SqlClient.SqlClient): void => appendSignal.fire(sql, undefined)

/** Calls `listener` whenever this process appends to the log through `sql` (SQLite). Returns the unregister. */
export const onAppend = (sql: SqlClient.SqlClient, listener: () => void): (() => void) => appendSignal.on(sql, listener)

// SQLite: a task inserted inside a transaction of this process (a chord callback dispatched by a completion) wakes
// this process's workers through these listeners (the task queue registers one). The woken worker's claim runs on
// the same SQLite connection, which the transaction holds, so the claim runs after the commit and finds the task.
const enqueueSignal = inProcessSignal<ReadonlyArray<string>>()

/** Calls `listener` with the queues whenever a transaction of this process enqueues tasks through `sql` (SQLite). */
export const onEnqueued = (sql: SqlClient.SqlClient, listener: (queues: ReadonlyArray<string>) => void): (() => void) =>
  enqueueSignal.on(sql, listener)

/** Signals "tasks were enqueued on these queues" inside the current transaction (NOTIFY on Postgres, at commit). */
export type WakeQueues = (queues: Iterable<string>) => Effect.Effect<void, SqlError>

/** The queue wake of a dialect, chosen once. */
export const makeWakeQueues = (sql: SqlClient.SqlClient, dialect: Dialect, channelPrefix: string): WakeQueues =>
  byDialect<WakeQueues>(dialect, {
    pg: () => {
      const channel = tasksChannel(channelPrefix)
      return (queues) =>
        Effect.forEach(new Set(queues), (queue) => sql`SELECT pg_notify(${channel}, ${queue})`, { discard: true })
    },
    sqlite: () => (queues) => Effect.sync(() => enqueueSignal.fire(sql, [...queues]))
  })
