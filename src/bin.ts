/**
 * The `baton` executable (see `src/cli/app.ts` for the commands). The only place in `src/` that runs an
 * Effect: `NodeRuntime.runMain` handles Ctrl-C / SIGTERM by interrupting the command, whose scopes then close (workers
 * stop claiming, in-flight tasks finish or are handed back, storage closes) before the process exits with 130.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { main } from "./cli/app.js"
import { ExitCode } from "./cli/errors.js"

NodeRuntime.runMain(main(process.argv).pipe(Effect.provide(NodeContext.layer)), {
  disableErrorReporting: true,
  teardown: (exit) => {
    const code: number = Exit.isSuccess(exit)
      ? (exit.value as number)
      : Cause.isInterruptedOnly(exit.cause)
        ? ExitCode.interrupted
        : ExitCode.error
    // Exit now: nothing Baton owns is left open (scopes closed), and a stray handle must not keep the CLI alive.
    process.exit(code)
  }
})
