/**
 * Counting the outcomes a worker records: the `WorkerHandle.processed` count and the `tasksProcessed` metric tagged
 * with `outcome`. Only outcomes the queue accepted (the lease guard passed) are counted.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"

/** Counter of task outcomes recorded by workers, tagged with `outcome` (re-exported as `Worker.tasksProcessed`). */
export const tasksProcessed = Metric.counter("baton_worker_tasks_processed_total", {
  description: "Task attempts whose outcome a worker recorded"
})

/**
 * The one warning a task that ends in failure logs (at the default level): out of attempts (`dead`) or failed
 * permanently (`failed`: unknown task, undecodable payload). Carries the task's id, name, attempt and error.
 */
export const logTerminalFailure = (
  task: { readonly id: string; readonly name: string; readonly attempt: number },
  disposition: "Dead" | "Failed",
  error: { readonly kind: string; readonly message: string }
): Effect.Effect<void> =>
  Effect.logWarning(
    disposition === "Dead"
      ? `task ${task.name} ${task.id} is dead after ${task.attempt} attempts: ${error.message}`
      : `task ${task.name} ${task.id} failed permanently: ${error.message}`
  ).pipe(
    Effect.annotateLogs({
      taskId: task.id,
      task: task.name,
      attempt: task.attempt,
      outcome: disposition.toLowerCase(),
      errorKind: error.kind,
      error: error.message
    })
  )

/** One worker's outcome counts. */
export interface Outcomes {
  /** Outcomes recorded so far (succeeded, failed, dead, retried). */
  readonly processed: Ref.Ref<number>
  /** Counts `n` recorded outcomes of kind `tag` ("succeeded", "failed", "dead", "retry"). */
  readonly record: (tag: string, n?: number) => Effect.Effect<void>
}

/** Fresh counts for one worker. */
export const make: Effect.Effect<Outcomes> = Effect.gen(function* () {
  const processed = yield* Ref.make(0)
  // Tagged counters made once per outcome kind, not once per task.
  const counters = new Map<string, Metric.Metric.Counter<number>>()
  const record = (tag: string, n = 1) => {
    let counter = counters.get(tag)
    if (counter === undefined) counters.set(tag, (counter = Metric.tagged(tasksProcessed, "outcome", tag)))
    return Effect.zipRight(
      Ref.update(processed, (count) => count + n),
      Metric.incrementBy(counter, n)
    )
  }
  return { processed, record }
})
