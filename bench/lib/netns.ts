/**
 * Network namespaces for scale-out (needs root and `ip`): one namespace per worker process, each joined to the host
 * namespace by a veth pair on its own /30 (host side 10.<s>.<i>.1, namespace side 10.<s>.<i>.2, where s = 200 + pid mod 50,
 * so that two runs at once pick different subnets unless their pids collide mod 50). Postgres listens on
 * 127.0.0.1 only and is neither restarted nor reconfigured: a TCP forwarder in the runner process (Node `net`, one
 * listener per host-side address) pipes each connection to the server. That forwarder is an extra hop (a user-space
 * copy each way) which a real remote worker host does not have.
 *
 * Optional delay: `tc qdisc add dev <veth> root netem delay <ms>` on both ends of each pair (one-way delay each
 * way), when the kernel has netem (`netemAvailable`). Everything is removed by `close`, and also if the runner exits
 * or is interrupted before calling it.
 */
import { execFileSync } from "node:child_process"
import * as net from "node:net"

export interface NetnsSetup {
  /** The command an agent `i` runs under (for `spawnAgent` / `startAgents`). */
  readonly wrap: (i: number) => ReadonlyArray<string>
  /** `url` rewritten to reach Postgres from namespace `i` (through the forwarder). */
  readonly url: (url: string, i: number) => string
  /** Bytes the forwarder piped (both directions). */
  readonly forwarded: () => number
  readonly close: () => Promise<void>
}

const ip = (...args: Array<string>) => execFileSync("ip", args, { stdio: ["ignore", "pipe", "pipe"] }).toString()
const tc = (...args: Array<string>) => execFileSync("tc", args, { stdio: ["ignore", "pipe", "pipe"] }).toString()

/** True if `ip netns` works here (root, iproute2). */
export const netnsAvailable = (): boolean => {
  try {
    ip("netns", "list")
    return process.getuid?.() === 0
  } catch {
    return false
  }
}

/** Whether `tc ... netem` works (kernel module present): tries it on a throwaway veth pair. */
export const netemAvailable = (): { readonly ok: boolean; readonly reason: string } => {
  const dev = `bsnt${process.pid % 100000}`
  try {
    ip("link", "add", dev, "type", "veth", "peer", "name", `${dev}p`)
  } catch (error) {
    return { ok: false, reason: `could not create a veth pair: ${String(error)}` }
  }
  try {
    tc("qdisc", "add", "dev", dev, "root", "netem", "delay", "0.5ms")
    return { ok: true, reason: "tc netem works" }
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim()
    return { ok: false, reason: `tc netem unavailable here (${stderr ?? String(error)})` }
  } finally {
    try {
      ip("link", "del", dev)
    } catch {
      // already gone
    }
  }
}

/**
 * Creates `count` namespaces with their veth pairs and forwarders to `target` (host:port of Postgres);
 * `delayMs` > 0 adds a netem one-way delay on both ends of every pair.
 */
export const setupNetns = async (
  count: number,
  target: { readonly host: string; readonly port: number },
  delayMs = 0
): Promise<NetnsSetup> => {
  const tag = `bsc${process.pid % 100000}`
  const names = Array.from({ length: count }, (_, i) => `${tag}-${i}`)
  const hostDev = (i: number) => `${tag}h${i}`
  const nsDev = (i: number) => `${tag}n${i}`
  const subnet = 200 + (process.pid % 50)
  const hostAddr = (i: number) => `10.${subnet}.${i}.1`
  const port = 15432
  const created: Array<string> = []
  const servers: Array<net.Server> = []
  const sockets = new Set<net.Socket>()
  let bytes = 0
  let closed = false

  const removeAll = () => {
    for (const ns of created.splice(0)) {
      try {
        // Deleting the namespace deletes its end of the veth pair, and with it the host end.
        ip("netns", "del", ns)
      } catch {
        // already gone
      }
    }
  }
  const onExit = () => removeAll()
  const onSignal = (signal: NodeJS.Signals) => {
    removeAll()
    process.exit(signal === "SIGINT" ? 130 : 143)
  }
  process.on("exit", onExit)
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)

  const close = async () => {
    if (closed) return
    closed = true
    for (const socket of sockets) socket.destroy()
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
    removeAll()
    process.off("exit", onExit)
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
  }

  try {
    for (const [i, ns] of names.entries()) {
      ip("netns", "add", ns)
      created.push(ns)
      ip("link", "add", hostDev(i), "type", "veth", "peer", "name", nsDev(i))
      ip("link", "set", nsDev(i), "netns", ns)
      ip("addr", "add", `${hostAddr(i)}/30`, "dev", hostDev(i))
      ip("link", "set", hostDev(i), "up")
      ip("netns", "exec", ns, "ip", "addr", "add", `10.${subnet}.${i}.2/30`, "dev", nsDev(i))
      ip("netns", "exec", ns, "ip", "link", "set", nsDev(i), "up")
      ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
      if (delayMs > 0) {
        tc("qdisc", "add", "dev", hostDev(i), "root", "netem", "delay", `${delayMs}ms`)
        ip("netns", "exec", ns, "tc", "qdisc", "add", "dev", nsDev(i), "root", "netem", "delay", `${delayMs}ms`)
      }
      const server = net.createServer((client) => {
        client.setNoDelay(true)
        const upstream = net.connect(target.port, target.host)
        upstream.setNoDelay(true)
        sockets.add(client)
        sockets.add(upstream)
        const count = (chunk: Buffer) => {
          bytes += chunk.length
        }
        client.on("data", count)
        upstream.on("data", count)
        client.pipe(upstream)
        upstream.pipe(client)
        const end = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        client.on("close", end)
        upstream.on("close", end)
        client.on("error", end)
        upstream.on("error", end)
      })
      servers.push(server)
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject)
        server.listen(port, hostAddr(i), () => resolve())
      })
    }
  } catch (error) {
    await close()
    throw error
  }

  return {
    wrap: (i) => ["ip", "netns", "exec", names[i]!],
    url: (url, i) => {
      const u = new URL(url)
      u.hostname = hostAddr(i)
      u.port = String(port)
      return u.toString()
    },
    forwarded: () => bytes,
    close
  }
}
