/**
 * A task summary as JSON, shared by the CLI (`baton tasks list --json`: dates as ISO 8601 strings) and the dashboard
 * (epoch milliseconds): the same fields in the same order, absent values as `null`; only the date format differs.
 */
import * as Option from "effect/Option"
import type { TaskSummary } from "../TaskQueue.js"

/** How dates are written: ISO 8601 strings (the CLI) or epoch milliseconds (the dashboard). */
export type DateFormat = "iso" | "epoch"

/** A date in `F`'s format. */
export type DateJson<F extends DateFormat> = F extends "iso" ? string : number

const dateJson = <F extends DateFormat>(format: F, date: Date): DateJson<F> =>
  (format === "iso" ? date.toISOString() : date.getTime()) as DateJson<F>

/** A task summary as JSON, its dates in `format`. */
export const taskSummaryJson = <F extends DateFormat>(format: F, task: TaskSummary) => ({
  id: task.id as string,
  name: task.name,
  queue: task.queue,
  state: task.state,
  attempts: task.attempts,
  maxAttempts: task.maxAttempts,
  error: Option.getOrNull(task.error),
  chordId: task.chordId ?? null,
  runId: task.runId ?? null,
  createdAt: dateJson(format, task.createdAt),
  updatedAt: dateJson(format, task.updatedAt),
  finishedAt: task.finishedAt === undefined ? null : dateJson(format, task.finishedAt)
})
