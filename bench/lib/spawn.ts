/**
 * The runner side of benchmark agents (see agent.ts): spawns `bench/lib/agentMain.ts <peer>` under Node with tsx,
 * sends commands and awaits their answers, and delivers events. Set BENCH_CPU_PROF=<dir> to write a CPU profile
 * of every agent (node --cpu-prof), BENCH_VERBOSE=1 to see the agents' stderr.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"

const root = path.resolve(import.meta.dirname, "../..")

export interface Agent {
  readonly name: string
  readonly process: ChildProcess
  /** Sends a command; resolves with its result, rejects with the agent's error or if it exits. */
  readonly call: <A = unknown>(cmd: string, args?: unknown, timeoutMs?: number) => Promise<A>
  /** Subscribes to an event; returns the unsubscribe function. */
  readonly on: (event: string, listener: (data: any) => void) => () => void
  /** Asks the agent to exit, then kills it if it has not after a while. */
  readonly close: () => Promise<void>
}

/**
 * `wrap`: a command the agent's Node runs under, e.g. `["ip", "netns", "exec", "<ns>"]` (scale-out's network
 * namespaces); it must exec Node in place (as `ip netns exec` does), so that the child's pid is Node's.
 */
export const spawnAgent = (
  peer: string,
  env: Record<string, string> = {},
  label = peer,
  wrap: ReadonlyArray<string> = []
): Agent => {
  const nodeFlags: Array<string> = []
  const profDir = process.env.BENCH_CPU_PROF
  if (profDir !== undefined && profDir !== "") nodeFlags.push("--cpu-prof", `--cpu-prof-dir=${profDir}`)
  const nodeArgs = [...nodeFlags, "--import", "tsx", path.join(root, "bench/lib/agentMain.ts"), peer]
  const child = spawn(
    wrap.length > 0 ? wrap[0]! : process.execPath,
    wrap.length > 0 ? [...wrap.slice(1), process.execPath, ...nodeArgs] : nodeArgs,
    {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", "pipe"]
    }
  )
  let nextId = 1
  const pending = new Map<number, { resolve: (value: any) => void; reject: (error: Error) => void }>()
  const listeners = new Map<string, Set<(data: any) => void>>()
  const stderr: Array<string> = []
  child.stderr!.on("data", (chunk: Buffer) => {
    const text = chunk.toString()
    stderr.push(text)
    if (stderr.length > 200) stderr.shift()
    if (process.env.BENCH_VERBOSE === "1") process.stderr.write(`[${label}] ${text}`)
  })
  const rl = readline.createInterface({ input: child.stdout! })
  rl.on("line", (line) => {
    let message: any
    try {
      message = JSON.parse(line)
    } catch {
      if (process.env.BENCH_VERBOSE === "1") process.stderr.write(`[${label}] ${line}\n`)
      return
    }
    if (typeof message.id === "number") {
      const waiter = pending.get(message.id)
      if (waiter === undefined) return
      pending.delete(message.id)
      if (message.ok) waiter.resolve(message.result)
      else waiter.reject(new Error(`${label}: ${message.error}`))
    } else if (typeof message.event === "string") {
      for (const listener of listeners.get(message.event) ?? []) listener(message.data)
    }
  })
  let exited = false
  child.on("exit", (code, signal) => {
    exited = true
    for (const waiter of pending.values()) {
      waiter.reject(new Error(`${label} exited (${code ?? signal}); stderr:\n${stderr.join("").slice(-4000)}`))
    }
    pending.clear()
  })
  const call = <A>(cmd: string, args?: unknown, timeoutMs = 300_000) =>
    new Promise<A>((resolve, reject) => {
      if (exited) return reject(new Error(`${label} has exited; stderr:\n${stderr.join("").slice(-4000)}`))
      const id = nextId++
      const timer = setTimeout(() => {
        pending.delete(id)
        reject(new Error(`${label}: ${cmd} timed out after ${timeoutMs} ms`))
      }, timeoutMs)
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        reject: (error) => {
          clearTimeout(timer)
          reject(error)
        }
      })
      child.stdin!.write(JSON.stringify({ id, cmd, args: args ?? null }) + "\n")
    })
  const on = (event: string, listener: (data: any) => void) => {
    let set = listeners.get(event)
    if (set === undefined) listeners.set(event, (set = new Set()))
    set.add(listener)
    return () => set.delete(listener)
  }
  const close = async () => {
    if (exited) return
    const done = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    call("exit", null, 5000).catch(() => undefined)
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
    await done
    clearTimeout(timer)
  }
  return { name: label, process: child, call, on, close }
}

/**
 * Runs another engineer's standalone bench script (`node --import tsx <script> ...args`) to completion; resolves
 * with its output, rejects if it exits non-zero. Its stdout is echoed when BENCH_VERBOSE=1.
 */
export const runScript = (
  script: string,
  args: ReadonlyArray<string>,
  options: { readonly nodeFlags?: ReadonlyArray<string>; readonly timeoutMs?: number } = {}
): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [...(options.nodeFlags ?? []), "--import", "tsx", path.join(root, script), ...args],
      {
        cwd: root,
        env: process.env,
        stdio: ["ignore", "pipe", "pipe"]
      }
    )
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (process.env.BENCH_VERBOSE === "1") process.stderr.write(chunk)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 600_000)
    child.on("exit", (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(output)
      else reject(new Error(`${script} exited with ${code ?? signal}:\n${output.slice(-3000)}`))
    })
  })

/** The systems a scenario runs: all, or Baton and those named by `--systems`. */
export const selectSystems = <S extends { readonly name: string }>(
  systems: ReadonlyArray<S>,
  only: ReadonlyArray<string> | undefined
): ReadonlyArray<S> => systems.filter((s) => only === undefined || s.name === "baton" || only.includes(s.name))

/**
 * Spawns one agent per system (`bench/peers/<peer>.ts`) into `agents` (by system name; the caller closes them, also
 * when this fails), all at once, runs `prepare` on each (setup, warm-up), and logs how long that took.
 */
export const startSystemAgents = async <S extends { readonly name: string; readonly peer: string }>(
  systems: ReadonlyArray<S>,
  agents: Map<string, Agent>,
  log: (line: string) => void,
  prepare: (system: S, agent: Agent) => Promise<void>
): Promise<void> => {
  const started = performance.now()
  await Promise.all(
    systems.map(async (system) => {
      const agent = spawnAgent(system.peer)
      agents.set(system.name, agent)
      await prepare(system, agent)
    })
  )
  log(`  agents ready in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

/** Asks each agent to tear down (errors ignored), then closes it. */
export const closeAgents = async (agents: Iterable<Agent>) => {
  for (const agent of agents) {
    await agent.call("teardown", null, 60_000).catch(() => undefined)
    await agent.close()
  }
}
