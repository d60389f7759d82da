/**
 * Group commit: a handler's success is queued, and one transaction completes every task that finished while the
 * previous batch was committing.
 *
 * Guarantees:
 * - the queue of completions is bounded, so when commits fall behind, finished handlers wait before their slot frees
 *   (backpressure), and a completion waits behind at most one or two batches;
 * - a batch's tasks stay in `held` until its commit succeeded, and a failed commit (a dropped connection) is retried
 *   on a fresh connection with backoff while the heartbeat keeps extending their leases (`retry.ts`): the lease
 *   guard makes the retry idempotent, so a dropped connection costs no finished work; only a commit that keeps
 *   failing for a whole lease duration leaves its tasks to expire and be reclaimed;
 * - a completion refused by the lease guard (the task ran twice) is logged and not counted;
 * - `flush` returns once every completion queued before it is committed (or its commit failed);
 * - up to `maxInFlight` batches commit at once, on separate connections, so under load one batch's round trip,
 *   planning and WAL flush overlap the next one's: a batch starts while another commits if that one is large (at
 *   least `pipelineMin` completions: a chord's last bodies do not wait behind it) or a backlog of `pipelineMin` has
 *   built up; while a small batch commits, the next waits for it. At light load every batch is small, so a worker's
 *   batches commit one after another, their completion events logged in the order its handlers finished.
 *   Batches committing at once lock disjoint task rows, and chord rows in id order: they cannot deadlock each other.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type { ClaimedTask, TaskQueue } from "../../TaskQueue.js"
import { currentHandoff } from "../sql/handoff.js"
import * as Handoff from "./handoff.js"
import type { LocalQueue } from "./localQueue.js"
import type { Outcomes } from "./outcomes.js"
import * as Retry from "./retry.js"

/** An entry of the group commit's queue: a success to commit, or a marker resolved once what precedes it is. */
export type Completion =
  | { readonly _tag: "Complete"; readonly task: ClaimedTask; readonly result: unknown }
  | { readonly _tag: "Flush"; readonly done: Deferred.Deferred<void> }

/** The bounded queue of completions waiting for the group commit, and what the commit loop waits on. */
export interface Completions {
  readonly queue: Queue.Queue<Completion>
  /** Offered when a commit ends, and when a backlog of `pipelineMin` builds while `awaitingBacklog` (sliding). */
  readonly changed: Queue.Queue<void>
  /** Set while the loop waits for a commit in flight: submitters then signal a backlog. */
  awaitingBacklog: boolean
  /** Batches committing now. */
  inFlight: number
  /** Of which smaller than `pipelineMin`. */
  smallInFlight: number
}

/** Batches committing at once, at most (also the permits of the `leaseWrites` lock: the heartbeat takes them all). */
export const maxInFlight = 2

/** A batch this large is "large"; this many completions waiting start a batch while a small one commits. */
export const pipelineMin = 64

/**
 * The completions queue for a worker with `concurrency` slots. Bounded by a few handler slots' worth (at least 250),
 * not by the prefetch: a completion waits behind at most this many others (one or two group commits), which bounds
 * the time from a handler's return to its commit (a chord's fan-in latency: measured 3x lower p99 for a 10,000-task
 * chord than with the old bound of 2 x prefetch). Much smaller batches cost throughput where several completers
 * contend for one chord row (measured at 100).
 */
export const make = (concurrency: number): Effect.Effect<Completions> =>
  Effect.gen(function* () {
    return {
      queue: yield* Queue.bounded<Completion>(Math.max(250, concurrency * 4)),
      changed: yield* Queue.sliding<void>(1),
      awaitingBacklog: false,
      inFlight: 0,
      smallInFlight: 0
    }
  })

/**
 * Queues a success for the next group commit; the returned effect waits only when the queue was full
 * (backpressure). When there is room the offer happens at the call, not when the effect runs: call it inside the
 * generator that yields it (as `attempt` does), where the two are the same moment, and no effect is built per task.
 */
export const submit = (completions: Completions, task: ClaimedTask, result: unknown): Effect.Effect<void> => {
  const completion: Completion = { _tag: "Complete", task, result }
  if (!Queue.unsafeOffer(completions.queue, completion)) return Queue.offer(completions.queue, completion)
  if (completions.awaitingBacklog && Option.getOrElse(completions.queue.unsafeSize(), () => 0) >= pipelineMin) {
    completions.awaitingBacklog = false
    Queue.unsafeOffer(completions.changed, undefined)
  }
  return Effect.void
}

/**
 * The group-commit loop (runs forever). `leaseWrites` (`maxInFlight` permits: a commit takes one, the heartbeat all
 * of them) keeps the heartbeat apart from the commits: both lock many of this worker's task rows in no common order,
 * and run together they deadlocked each other (seen under load).
 */
export const run = (options: {
  readonly queue: TaskQueue["Type"]
  readonly completions: Completions
  readonly local: LocalQueue
  readonly leaseWrites: Effect.Semaphore
  readonly outcomes: Outcomes
  /** The lease duration: how long a failed commit is retried (its leases are extended meanwhile). */
  readonly leaseMs: number
  /** The chord callback hand-off (`handoff.ts`): who this worker is, what it runs, where it claims. */
  readonly handoff: {
    readonly workerId: string
    readonly names: ReadonlySet<string>
    readonly queues: ReadonlySet<string>
  }
}): Effect.Effect<never> => {
  const { completions, leaseMs, leaseWrites, local, outcomes, queue } = options
  const commitBatch = (items: ReadonlyArray<Extract<Completion, { _tag: "Complete" }>>) =>
    Effect.gen(function* () {
      const ids = items.map((item) => item.task.id)
      const request = items.map((item) => ({
        id: item.task.id,
        leaseId: item.task.leaseId,
        result: item.result,
        chordId: item.task.chordId
      }))
      // The tasks leave `held` in the same permit as a successful commit, so the heartbeat (which takes turns with
      // this on `leaseWrites`) neither extends nor reports a task whose completion committed. After a failed
      // commit they stay held (extended) while it is retried; `retrying` tells the heartbeat that a task gone from
      // `running` may be this batch's own commit whose reply was lost.
      // A fresh hand-off offer for each try: a callback the transaction dispatches may come back leased to this
      // worker, and enters the local queue only after the commit succeeded.
      const commit = Effect.suspend(() => {
        const offer = Handoff.offer({ ...options.handoff, local, leaseMs })
        return leaseWrites.withPermits(1)(
          Effect.tap(Effect.locally(queue.complete(request), currentHandoff, offer), () =>
            Effect.zipRight(
              Effect.sync(() => {
                for (const id of ids) local.held.delete(id)
              }),
              Handoff.accept(local, offer)
            )
          )
        )
      })
      let retried = false
      const exit = yield* Effect.exit(
        Retry.retrying(
          "completing a batch",
          commit,
          Duration.millis(leaseMs),
          Effect.sync(() => {
            retried = true
            for (const id of ids) local.retrying.add(id)
          })
        )
      )
      if (retried) for (const id of ids) local.retrying.delete(id)
      if (Exit.isFailure(exit)) for (const id of ids) local.held.delete(id)
      let accepted = 0
      if (Exit.isSuccess(exit)) {
        for (let i = 0; i < items.length; i++) {
          const task = items[i]!.task
          if (exit.value[i] === true) accepted++
          else if (retried) {
            // Refused after a retry: most likely the first try committed before its reply was lost.
            yield* Effect.logDebug("completion refused after a retried commit (committed by the earlier try?)").pipe(
              Effect.annotateLogs({ taskId: task.id, task: task.name, attempt: String(task.attempt) })
            )
          } else {
            yield* Effect.logWarning("completion refused: the task's lease is no longer held (it ran twice)").pipe(
              Effect.annotateLogs({ taskId: task.id, task: task.name, attempt: String(task.attempt) })
            )
          }
        }
      } else {
        yield* Effect.logError("completing a batch kept failing for a lease duration; the tasks will be reclaimed", {
          cause: Cause.pretty(exit.cause)
        })
      }
      if (accepted > 0) yield* outcomes.record("succeeded", accepted)
    })
  const ended = (small: boolean) =>
    Effect.sync(() => {
      completions.inFlight--
      if (small) completions.smallInFlight--
      Queue.unsafeOffer(completions.changed, undefined)
    })
  return Effect.gen(function* () {
    // Take one, yield once, then drain what queued meanwhile: handlers that end in the same instant as the first (a
    // chord's last bodies, a concurrency-1 worker's next task) join its batch instead of waiting behind its commit.
    const first = yield* Queue.take(completions.queue)
    // A small batch in flight: wait for its commit, or for a backlog worth a second commit at once. A large one in
    // flight (or none): go (a chord's last bodies need not wait behind a big batch's commit).
    while (
      completions.inFlight >= maxInFlight ||
      (completions.smallInFlight > 0 && Option.getOrElse(completions.queue.unsafeSize(), () => 0) + 1 < pipelineMin)
    ) {
      completions.awaitingBacklog = completions.inFlight < maxInFlight
      yield* Queue.take(completions.changed)
    }
    completions.awaitingBacklog = false
    yield* Effect.yieldNow()
    const rest = yield* Queue.takeUpTo(completions.queue, 999)
    const batch = [first, ...rest]
    const items: Array<Extract<Completion, { _tag: "Complete" }>> = []
    const flushes: Array<Deferred.Deferred<void>> = []
    for (const item of batch) {
      if (item._tag === "Complete") items.push(item)
      else flushes.push(item.done)
    }
    if (items.length > 0) {
      const small = items.length < pipelineMin
      completions.inFlight++
      if (small) completions.smallInFlight++
      yield* Effect.fork(Effect.ensuring(commitBatch(items), ended(small)))
    }
    // Everything queued before the markers is in the batches in flight (or this one): wait for all of them.
    if (flushes.length > 0) while (completions.inFlight > 0) yield* Queue.take(completions.changed)
    for (const done of flushes) yield* Deferred.succeed(done, undefined)
  }).pipe(Effect.forever)
}

/**
 * Waits until every completion queued so far is committed (at shutdown, after the handlers ended), for at most
 * `timeout`. The loop must still be running.
 */
export const flush = (completions: Completions, timeout: Duration.Duration): Effect.Effect<void> =>
  Effect.gen(function* () {
    const flushed = yield* Deferred.make<void>()
    yield* Queue.offer(completions.queue, { _tag: "Flush", done: flushed })
    // Finalizers run uninterruptibly: the wait must be made interruptible for its timeout to fire.
    yield* Deferred.await(flushed).pipe(Effect.interruptible, Effect.timeout(timeout), Effect.ignore)
  })
