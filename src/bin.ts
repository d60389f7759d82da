#!/usr/bin/env node
/**
 * The `baton` executable (see `src/cli/app.ts` for the commands). The only place in `src/` that runs an
 * Effect: `NodeRuntime.runMain` handles Ctrl-C / SIGTERM by interrupting the command, whose scopes then close (workers
 * stop claiming, in-flight tasks finish or are handed back, storage closes) before the process exits with 130.
 *
 * Output: the process exits only once stdout and stderr have drained (a pipe to a slow reader receives everything);
 * a reader that closed the pipe (`baton status | head -1`) ends the process quietly with status 0.
 * Start-up: the command modules are imported only when a command runs (`baton --version` loads none of them).
 */
import { version } from "./cli/version.js"

const quietOnClosedReader = (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
}
process.stdout.on("error", quietOnClosedReader)

/** Resolves once everything written to `stream` so far has been handed to the OS. */
const drained = (stream: NodeJS.WriteStream): Promise<void> =>
  new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) return resolve()
    stream.write("", () => resolve())
  })

const exitAfterDrain = (code: number) => {
  void Promise.all([drained(process.stdout), drained(process.stderr)]).then(() => process.exit(code))
}

const args = process.argv.slice(2)
if (args.length === 1 && (args[0] === "--version" || args[0] === "-v")) {
  process.stdout.write(`${version}\n`)
  exitAfterDrain(0)
} else {
  const [NodeContext, NodeRuntime, Cause, Effect, Exit, { main }, { ExitCode }] = await Promise.all([
    import("@effect/platform-node/NodeContext"),
    import("@effect/platform-node/NodeRuntime"),
    import("effect/Cause"),
    import("effect/Effect"),
    import("effect/Exit"),
    import("./cli/app.js"),
    import("./cli/errors.js")
  ])
  NodeRuntime.runMain(main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
    disableErrorReporting: true,
    // The CLI's own logger (stderr, --log-format) replaces Effect's default one; runMain's pretty logger would print
    // to stdout besides.
    disablePrettyLogger: true,
    teardown: (exit) => {
      const code: number = Exit.isSuccess(exit)
        ? (exit.value as number)
        : Cause.isInterruptedOnly(exit.cause)
          ? ExitCode.interrupted
          : ExitCode.error
      // Exit once the output drained: nothing Baton owns is left open (scopes closed), and a stray handle must not
      // keep the CLI alive.
      exitAfterDrain(code)
    }
  })
}
