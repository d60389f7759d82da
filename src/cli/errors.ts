/**
 * Turning a failed command into one clear line (and an exit code). Stack traces only with `--verbose`.
 */
import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import * as Option from "effect/Option"

/** Exit codes of the CLI. */
export const ExitCode = { ok: 0, error: 1, usage: 2, interrupted: 130 } as const

const causeMessage = (cause: unknown): string | undefined => {
  if (cause instanceof Error && cause.message) return cause.message
  if (typeof cause === "object" && cause !== null && "message" in cause) return String(cause.message)
  return undefined
}

/** The one line describing an expected failure. */
export const describeFailure = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const tagged = error as { readonly _tag?: unknown; readonly message?: unknown; readonly cause?: unknown }
  switch (tagged._tag) {
    case "SqlError": {
      const inner = causeMessage(tagged.cause)
      return `database error: ${String(tagged.message)}${inner && inner !== tagged.message ? `: ${inner}` : ""}`
    }
    case "ExtractionFailed": {
      const runId = (error as { readonly runId: string }).runId
      return `${String(tagged.message)} (fix the cause, then: baton resume ${runId})`
    }
    default: {
      const message = typeof tagged.message === "string" && tagged.message !== "" ? tagged.message : undefined
      const tag = typeof tagged._tag === "string" ? tagged._tag : "error"
      return message ?? tag
    }
  }
}

/** How a failed command ends: what to print (nothing for usage errors, which @effect/cli printed) and the code. */
export const describeCause = (
  cause: Cause.Cause<unknown>
): { readonly line: string | undefined; readonly code: number } => {
  if (Cause.isInterruptedOnly(cause)) return { line: undefined, code: ExitCode.interrupted }
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    if (ValidationError.isValidationError(failure.value)) return { line: undefined, code: ExitCode.usage }
    // An option the CLI's own checks let through but a Baton service refused (e.g. a value out of its range).
    if ((failure.value as { _tag?: unknown } | undefined)?._tag === "InvalidInput") {
      return { line: describeFailure(failure.value), code: ExitCode.usage }
    }
    return { line: describeFailure(failure.value).replace(/\s*\n\s*/g, " "), code: ExitCode.error }
  }
  const defect = Cause.squash(cause)
  if (typeof defect === "object" && defect !== null && (defect as { _tag?: unknown })._tag === "SqlError") {
    // A database error some step did not expect: still say what the database said.
    return { line: describeFailure(defect).replace(/\s*\n\s*/g, " "), code: ExitCode.error }
  }
  const message = causeMessage(defect) ?? String(defect)
  return {
    line: `internal error: ${message.replace(/\s*\n\s*/g, " ")} (run again with --verbose for details)`,
    code: ExitCode.error
  }
}
