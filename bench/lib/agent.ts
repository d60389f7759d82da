/**
 * The child side of a benchmark agent: a long-lived process that loads one system (Baton or a peer) once and then
 * obeys commands from the runner, one JSON object per line on stdin, answering one JSON object per line on stdout.
 * Keeping the process between rounds means the rounds time the work, not Node's start-up and module loading.
 *
 * Protocol: `{ "id": 1, "cmd": "enqueueBulk", "args": {...} }` → `{ "id": 1, "ok": true, "result": ... }` or
 * `{ "id": 1, "ok": false, "error": "..." }`; unsolicited events `{ "event": "progress", "data": ... }`.
 */
import * as readline from "node:readline"
import { nowMs } from "./stats.js"

export type Command = (args: any) => Promise<unknown> | unknown

const write = (message: unknown) => {
  process.stdout.write(JSON.stringify(message) + "\n")
}

/** Sends an event to the runner. */
export const emit = (event: string, data: unknown) => write({ event, data })

/** Serves commands until stdin closes or `exit` is received. */
export const serve = (commands: Record<string, Command>) => {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on("line", (line) => {
    if (line.trim() === "") return
    const { id, cmd, args } = JSON.parse(line) as { id: number; cmd: string; args: unknown }
    if (cmd === "exit") {
      write({ id, ok: true, result: null })
      setTimeout(() => process.exit(0), 10)
      return
    }
    const command = commands[cmd]
    if (command === undefined) {
      write({ id, ok: false, error: `unknown command ${cmd}` })
      return
    }
    Promise.resolve()
      .then(() => command(args))
      .then(
        (result) => write({ id, ok: true, result: result ?? null }),
        (error: unknown) =>
          write({ id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) })
      )
  })
  rl.on("close", () => process.exit(0))
}

/**
 * What a benchmark handler records: how many jobs ran, and (when the payload carries the enqueue time `t`, from
 * the host-wide monotonic clock) the enqueue → handler-start latency. Progress is reported every few milliseconds
 * while it changes, so the runner can sum several processes.
 */
export class JobCounter {
  handled = 0
  firstAt: number | undefined
  lastAt: number | undefined
  latencies: Array<number> = []
  private timer: ReturnType<typeof setInterval> | undefined
  private reported = -1

  /** Call at the start of every handler. */
  readonly onJob = (payload: unknown) => {
    const now = nowMs()
    if (this.firstAt === undefined) this.firstAt = now
    this.lastAt = now
    this.handled++
    const t = (payload as { t?: unknown } | null | undefined)?.t
    if (typeof t === "number") this.latencies.push(now - t)
  }

  /** Starts counting from zero and reporting progress every `everyMs`. */
  start(everyMs = 5) {
    this.handled = 0
    this.firstAt = undefined
    this.lastAt = undefined
    this.latencies = []
    this.reported = -1
    this.stopReporting()
    this.timer = setInterval(() => this.report(), everyMs)
  }

  report() {
    if (this.handled !== this.reported) {
      this.reported = this.handled
      emit("progress", { handled: this.handled, at: nowMs() })
    }
  }

  stopReporting() {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** What was recorded so far. */
  snapshot() {
    return { handled: this.handled }
  }

  /** Stops reporting and returns what was recorded. */
  finish() {
    this.stopReporting()
    this.report()
    return { handled: this.handled, firstAt: this.firstAt, lastAt: this.lastAt, latencies: this.latencies }
  }
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Calls `enqueueOne(t)` `count` times, one every `intervalMs` on a fixed schedule (no drift), where `t` is the
 * host-wide monotonic time just before the call; returns the enqueue call durations.
 */
export const produceAtRate = async (
  count: number,
  intervalMs: number,
  enqueueOne: (t: number) => Promise<unknown>
): Promise<{ readonly enqueueMs: ReadonlyArray<number> }> => {
  const start = nowMs()
  const enqueueMs: Array<number> = []
  for (let i = 0; i < count; i++) {
    const due = start + i * intervalMs
    const wait = due - nowMs()
    if (wait > 0) await sleep(wait)
    const t = nowMs()
    await enqueueOne(t)
    enqueueMs.push(nowMs() - t)
  }
  return { enqueueMs }
}
