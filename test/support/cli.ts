/**
 * Child processes for tests that claim something about what a user runs — the real `baton` CLI (dist/bin.js,
 * `startCli`) or a TypeScript program such as an example's main (`startScript`): output captured, `waitFor` a line,
 * `done` with the exit code. Storage variables of the outer environment are cleared so each test chooses its own
 * storage. Also the seeded generator of random kill points (`seededRandom`) and `exitOrKill`.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

export const root = path.resolve(import.meta.dirname, "../..")
export const bin = path.join(root, "dist/bin.js")

export interface Result {
  readonly code: number | string
  readonly stdout: string
  readonly stderr: string
}

export interface Running {
  readonly child: ChildProcess
  readonly output: { stdout: string; stderr: string }
  readonly done: Promise<Result>
  /**
   * Resolves once the output matches: a string is looked for in stdout, a RegExp in stdout + stderr (with its match).
   * Rejects if the process exits first or after `timeoutMs`.
   */
  readonly waitFor: (pattern: string | RegExp, timeoutMs?: number) => Promise<RegExpMatchArray | undefined>
}

const cleared = ["DATABASE_URL", "BATON_PG_SCHEMA", "BATON_DB", "BATON_DASHBOARD_TOKEN"]

/**
 * Spawns `node <argv>` in the repository root with output captured. The storage variables of the outer environment
 * are cleared, so each test chooses its own storage.
 */
export const startNode = (argv: ReadonlyArray<string>, env: Record<string, string> = {}): Running => {
  const base = { ...process.env }
  for (const name of cleared) delete base[name]
  const child = spawn(process.execPath, [...argv], {
    cwd: root,
    env: { ...base, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const output = { stdout: "", stderr: "" }
  const listeners = new Set<() => void>()
  const notify = () => {
    for (const listener of listeners) listener()
  }
  child.stdout!.on("data", (chunk: Buffer) => {
    output.stdout += chunk.toString()
    notify()
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    output.stderr += chunk.toString()
    notify()
  })
  const done = new Promise<Result>((resolve) => {
    child.on("exit", (code, signal) => {
      // Let the pipes drain before resolving.
      setImmediate(() => resolve({ code: code ?? signal ?? -1, ...output }))
      notify()
    })
  })
  const waitFor = (pattern: string | RegExp, timeoutMs = 60_000) =>
    new Promise<RegExpMatchArray | undefined>((resolve, reject) => {
      const label = typeof pattern === "string" ? `"${pattern}"` : String(pattern)
      const check = () => {
        if (typeof pattern === "string" ? output.stdout.includes(pattern) : false)
          return finish(() => resolve(undefined))
        const match = typeof pattern === "string" ? null : (output.stdout + output.stderr).match(pattern)
        if (match) return finish(() => resolve(match))
        if (child.exitCode !== null || child.signalCode !== null) {
          finish(() => reject(new Error(`exited before printing ${label}:\n${output.stdout}\n${output.stderr}`)))
        }
      }
      const timer = setTimeout(
        () => finish(() => reject(new Error(`timed out waiting for ${label}:\n${output.stdout}\n${output.stderr}`))),
        timeoutMs
      )
      const finish = (f: () => void) => {
        clearTimeout(timer)
        listeners.delete(check)
        f()
      }
      listeners.add(check)
      check()
    })
  return { child, output, done, waitFor }
}

/** The real `baton` CLI (bin/baton.js) with these arguments. */
export const startCli = (args: ReadonlyArray<string>, env: Record<string, string> = {}): Running =>
  startNode([bin, ...args], env)

/** A TypeScript program (run through tsx, e.g. an example's main.ts) with these arguments. */
export const startScript = (script: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Running =>
  startNode(["--import", "tsx", script, ...args], env)

/**
 * A seeded generator of numbers in [0, 1) (mulberry32) for random kill points: the seed is BATON_TEST_SEED when set,
 * else random, and is printed first (with `label`) so that a failure can be replayed.
 */
export const seededRandom = (label: string): { readonly seed: number; readonly random: () => number } => {
  const seed = Number(process.env.BATON_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
  console.log(`${label}: seed ${seed} (replay with BATON_TEST_SEED=${seed})`)
  let state = seed >>> 0
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return { seed, random }
}

/**
 * Lets a process run for `delayMs` (a random kill point): if it has not exited by then, SIGKILLs it. How it ended, and
 * whether it was killed.
 */
export const exitOrKill = async (
  running: Running,
  delayMs: number
): Promise<{ readonly killed: boolean; readonly result: Result }> => {
  const exited = await Promise.race([
    running.done.then(() => true),
    new Promise<false>((resolve) => setTimeout(() => resolve(false), delayMs))
  ])
  if (!exited) running.child.kill("SIGKILL")
  return { killed: !exited, result: await running.done }
}
