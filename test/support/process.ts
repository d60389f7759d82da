/**
 * Real OS child processes for crash and multi-process tests: scripts under test/fixtures run with tsx, given a
 * storage descriptor in BATON_TEST_STORAGE (JSON). Lines the child prints are collected; `waitForLine` waits
 * for a marker with a deadline (never a sleep).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as Storage from "../../src/Storage.js"
import type { BackendDescriptor } from "./backends.js"

const root = path.resolve(import.meta.dirname, "../..")

export interface Child {
  readonly process: ChildProcess
  readonly lines: Array<string>
  /** Resolves with the first line matching, rejects after `timeoutMs` or if the child exits first. */
  readonly waitForLine: (match: string | RegExp, timeoutMs?: number) => Promise<string>
  /** Resolves with the exit code (or signal name). */
  readonly exited: Promise<number | string>
  readonly kill: (signal?: NodeJS.Signals) => void
}

export const spawnFixture = (
  script: string,
  storage: BackendDescriptor,
  env: Record<string, string> = {},
  args: ReadonlyArray<string> = []
): Child => {
  // node itself with tsx's loader, not the tsx CLI: the CLI runs the script in a grandchild that a SIGKILL of the
  // CLI leaves running (so "kill the child" would not kill the program).
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "test/fixtures", script), ...args], {
    cwd: root,
    env: { ...process.env, ...env, BATON_TEST_STORAGE: JSON.stringify(storage) },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  const waiters = new Set<() => void>()
  let buffer = ""
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString()
    let index: number
    while ((index = buffer.indexOf("\n")) >= 0) {
      lines.push(buffer.slice(0, index))
      buffer = buffer.slice(index + 1)
    }
    for (const waiter of waiters) waiter()
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", (chunk: Buffer) => {
    if (process.env.BATON_TEST_VERBOSE === "1") process.stderr.write(chunk)
    onData(chunk)
  })
  const exited = new Promise<number | string>((resolve) => {
    child.on("exit", (code, signal) => {
      for (const waiter of waiters) waiter()
      resolve(code ?? signal ?? -1)
    })
  })
  const waitForLine = (match: string | RegExp, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const test = (line: string) => (typeof match === "string" ? line.includes(match) : match.test(line))
      const check = () => {
        const found = lines.find(test)
        if (found !== undefined) {
          cleanup()
          resolve(found)
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup()
          reject(new Error(`child exited before printing ${String(match)}; output:\n${lines.join("\n")}`))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${String(match)}; output:\n${lines.join("\n")}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })
  return { process: child, lines, waitForLine, exited, kill: (signal = "SIGKILL") => child.kill(signal) }
}

/** Reads the storage descriptor inside a fixture. */
export const descriptorFromEnv = (): BackendDescriptor => {
  const raw = process.env.BATON_TEST_STORAGE
  if (raw === undefined) throw new Error("BATON_TEST_STORAGE is not set")
  return JSON.parse(raw) as BackendDescriptor
}

/** Opens the storage a descriptor names (vitest-free, so fixtures can import it). */
export const storageFromDescriptor = (descriptor: BackendDescriptor) =>
  descriptor.kind === "sqlite"
    ? Storage.layerSqlite({ filename: descriptor.filename })
    : Storage.layerPg({ url: descriptor.url, schema: descriptor.schema, maxConnections: 5 })

/** `spawnFixture` as a scoped resource: the child is SIGKILLed when the test's scope closes. */
export const spawnScoped = (...args: Parameters<typeof spawnFixture>) =>
  Effect.acquireRelease(
    Effect.sync(() => spawnFixture(...args)),
    (child) => Effect.sync(() => child.kill("SIGKILL"))
  )

/** Waits (as an Effect) for the child's first line matching `match`, failing after `timeoutMs`. */
export const waitLine = (child: Child, match: string | RegExp, timeoutMs?: number) =>
  Effect.promise(() => child.waitForLine(match, timeoutMs))
