/**
 * What the chord-fanin agents (bench/peers/baton-chord.ts, bench/peers/bullmq.ts) record, defined once so that both
 * systems are timed the same way, in the agent's own process, on the host's monotonic clock (`nowMs`):
 * - `latency`: callback (parent) handler start − the latest body (child) handler end, where "handler end" is the
 *   handler's last statement, right before it returns its result;
 * - `withResultsLatency`: from the same instant to the moment the callback holds every body result (Baton's callback
 *   receives them in its payload: same instant as its start; BullMQ's parent fetches them with `getChildrenValues`);
 * - `total`: from the call that creates the chord / flow to the callback handler start;
 * - `drain`: body tasks per second, first to last body handler.
 */
import { nowMs } from "./stats.js"

export interface ChordRun {
  readonly size: number
  readonly latency: number
  readonly withResultsLatency: number
  readonly total: number
  readonly drain: number
}

interface Current {
  readonly size: number
  readonly startedAt: number
  bodies: number
  firstBodyAt: number
  lastBodyAt: number
  callbackAt: number
  resultsAt: number
  results: number
  readonly done: () => void
}

export class ChordTracker {
  private current: Current | undefined

  /** Call as the last statement of a body handler; returns `value` (the handler's result). */
  bodyDone<A>(value: A): A {
    const now = nowMs()
    const c = this.current
    if (c !== undefined) {
      if (c.bodies === 0) c.firstBodyAt = now
      c.bodies++
      if (now > c.lastBodyAt) c.lastBodyAt = now
    }
    return value
  }

  /** Call as the first statement of the callback handler. */
  callbackStarted() {
    if (this.current !== undefined) this.current.callbackAt = nowMs()
  }

  /** Call when the callback holds the body results (`count` of them). */
  callbackHasResults(count: number) {
    const c = this.current
    if (c === undefined) return
    c.resultsAt = nowMs()
    c.results = count
    c.done()
  }

  /** Runs one chord (`start` creates it) and waits for its callback; one chord at a time. */
  async run(size: number, start: () => Promise<unknown>, timeoutMs = 300_000): Promise<ChordRun> {
    if (this.current !== undefined) throw new Error("a chord is already running")
    let done!: () => void
    const finished = new Promise<void>((resolve) => (done = resolve))
    const c: Current = {
      size,
      startedAt: nowMs(),
      bodies: 0,
      firstBodyAt: 0,
      lastBodyAt: 0,
      callbackAt: 0,
      resultsAt: 0,
      results: -1,
      done
    }
    this.current = c
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await start()
      await Promise.race([
        finished,
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`chord of ${size}: no callback after ${timeoutMs} ms (${c.bodies} bodies ran)`)),
            timeoutMs
          )
        })
      ])
    } finally {
      clearTimeout(timer)
      this.current = undefined
    }
    if (c.bodies < size || c.results !== size) {
      throw new Error(`chord of ${size}: ${c.bodies} body handlers ran, callback got ${c.results} results`)
    }
    return {
      size,
      latency: c.callbackAt - c.lastBodyAt,
      withResultsLatency: c.resultsAt - c.lastBodyAt,
      total: c.callbackAt - c.startedAt,
      drain: (size / Math.max(0.001, c.lastBodyAt - c.firstBodyAt)) * 1000
    }
  }
}
