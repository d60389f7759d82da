/**
 * The OS processes of a chaos run: `baton` CLI processes (`node dist/bin.js …`, one process: a SIGKILL kills the
 * program, not a wrapper) and producer scripts (node with tsx's loader). Each one's output is collected by line; the
 * runner waits for markers (with deadlines) and SIGKILLs them.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

export const root = path.resolve(import.meta.dirname, "../..")
const bin = path.join(root, "dist/bin.js")

/** A child process and what it printed. */
export interface Proc {
  readonly name: string
  readonly child: ChildProcess
  readonly lines: Array<string>
  /** Resolves with the exit code, or the signal's name. */
  readonly exited: Promise<number | string>
  /** Whether the process has exited. */
  readonly done: () => boolean
  /** Resolves true once a line contains `text`; false if the process exits first. */
  readonly waitFor: (text: string) => Promise<boolean>
  readonly killed: { value: boolean }
  readonly kill: (signal?: NodeJS.Signals) => void
}

const live = new Set<Proc>()

const baseEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const key of ["DATABASE_URL", "BATON_PG_SCHEMA", "BATON_DB", "PGAPPNAME"]) delete env[key]
  return env
}

const start = (
  name: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  echo: ((line: string) => void) | undefined
): Proc => {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...baseEnv(), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  const waiters = new Set<() => void>()
  const onData = () => {
    let buffer = ""
    return (chunk: Buffer) => {
      buffer += chunk.toString()
      let index: number
      while ((index = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, index)
        lines.push(line)
        if (lines.length > 2000) lines.splice(0, 1000)
        echo?.(line)
        buffer = buffer.slice(index + 1)
      }
      for (const waiter of waiters) waiter()
    }
  }
  child.stdout!.on("data", onData())
  child.stderr!.on("data", onData())
  let finished = false
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => {
      finished = true
      live.delete(proc)
      // Let the pipes drain before anyone reads the last lines.
      setImmediate(() => {
        resolve(code ?? signal ?? -1)
        for (const waiter of waiters) waiter()
      })
    })
  })
  const waitFor = (text: string) =>
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (lines.some((line) => line.includes(text))) {
          waiters.delete(check)
          resolve(true)
        } else if (finished) {
          waiters.delete(check)
          void exited.then(() => resolve(lines.some((line) => line.includes(text))))
        }
      }
      waiters.add(check)
      check()
    })
  const killed = { value: false }
  const proc: Proc = {
    name,
    child,
    lines,
    exited,
    done: () => finished,
    waitFor,
    killed,
    kill: (signal = "SIGKILL") => {
      if (finished) return
      if (signal === "SIGKILL") killed.value = true
      child.kill(signal)
    }
  }
  live.add(proc)
  return proc
}

/** Starts `baton <args>`. */
export const baton = (
  name: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  echo?: (line: string) => void
) => start(name, [bin, ...args], env, echo)

/** Starts a script under test/chaos with tsx's loader. */
export const script = (
  name: string,
  file: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  echo?: (line: string) => void
) => start(name, ["--import", "tsx", path.join(root, "test/chaos", file), ...args], env, echo)

/** SIGKILLs every process still running (the runner's exit path). */
export const killAll = () => {
  for (const proc of live) proc.kill("SIGKILL")
}

/** How many processes are running. */
export const liveCount = () => live.size
