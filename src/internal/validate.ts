/**
 * Checks of the values that cross Baton's public boundary (enqueue options, chord specs, worker settings), so that
 * what users get wrong or an attacker sends fails early with a typed error naming the field and the allowed range,
 * identically on every dialect, instead of a driver error (Postgres rejects NUL in text), a silent change (a lone
 * surrogate becomes U+FFFD on the wire, `Duration.decode(-1)` becomes 0) or a stored value nobody can read back.
 *
 * Each check returns the error message, or `undefined` when the value is fine; callers wrap it in their typed error.
 */
import * as Duration from "effect/Duration"

/** Longest name, queue, namespace, tag, idempotency key or run id (UTF-16 code units). */
export const maxNameLength = 255
/** Most tags on one task or chord. */
export const maxTags = 64
/** Largest encoded payload: its JSON text, in UTF-8 bytes. */
export const maxPayloadBytes = 1_048_576
/** Deepest nesting of arrays / objects in an encoded payload. */
export const maxPayloadDepth = 64
/** Most body tasks in one chord (the chord's counter and its callback's `results` array hold them all). */
export const maxChordSize = 1_000_000
/** Largest priority magnitude (the column is a 32-bit integer). */
export const maxPriority = 2_147_483_647
/** Most attempts of one task. */
export const maxAttemptsLimit = 10_000
/** Longest timeout, delay or backoff step: 2^31 - 1 ms (about 24.8 days, the longest timer Node can arm). */
export const maxDurationMs = 2_147_483_647
/** Latest `runAt`: the largest date JavaScript can represent. */
export const maxEpochMs = 8_640_000_000_000_000

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const describe = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === "number") return String(value)
  if (value === null) return "null"
  return typeof value
}

/**
 * A name-like string: non-empty, at most `maxNameLength` code units, no NUL (Postgres text cannot store it) and no
 * lone surrogate (not valid Unicode: it cannot be encoded as UTF-8 without being replaced).
 */
export const name = (
  field: string,
  value: unknown,
  options: { readonly allowEmpty?: boolean; readonly maxLength?: number } = {}
) => {
  if (typeof value !== "string") return `${field} must be a string, got ${describe(value)}`
  if (value.length === 0 && options.allowEmpty !== true) return `${field} must not be empty`
  return text(field, value, options.maxLength ?? maxNameLength)
}

/**
 * Text stored in a text column as is (not JSON-escaped): at most `maxLength` code units, no NUL, no lone surrogate.
 */
export const text = (field: string, value: unknown, maxLength = Number.MAX_SAFE_INTEGER) => {
  if (typeof value !== "string") return `${field} must be a string, got ${describe(value)}`
  if (value.length > maxLength) return `${field} is ${value.length} characters long; at most ${maxLength}`
  if (value.includes("\u0000")) return `${field} must not contain NUL (\\u0000)`
  if (loneSurrogate.test(value)) return `${field} must be well-formed Unicode (it contains a lone surrogate)`
  return undefined
}

/** A list of tags: at most `maxTags`, each a `name`. */
export const tags = (field: string, value: unknown) => {
  if (!Array.isArray(value)) return `${field} must be an array of strings, got ${describe(value)}`
  if (value.length > maxTags) return `${field} has ${value.length} entries; at most ${maxTags}`
  for (let i = 0; i < value.length; i++) {
    const problem = name(`${field}[${i}]`, value[i])
    if (problem !== undefined) return problem
  }
  return undefined
}

/** An integer in `[min, max]`. */
export const integer = (field: string, value: unknown, min: number, max: number) =>
  typeof value === "number" && Number.isInteger(value) && value >= min && value <= max
    ? undefined
    : `${field} must be an integer from ${min} to ${max}, got ${describe(value)}`

/** A finite number in `[min, max]`. */
export const number = (field: string, value: unknown, min: number, max: number) =>
  typeof value === "number" && Number.isFinite(value) && value >= min && value <= max
    ? undefined
    : `${field} must be a number from ${min} to ${max}, got ${describe(value)}`

/**
 * A duration from `minMs` to `maxMs` milliseconds. Numbers are milliseconds; strings and `Duration`s are decoded
 * with `Duration.decode`, but a negative or non-finite input is refused here (`Duration.decode` would turn -1 or NaN
 * into 0 silently, and throws on a malformed string).
 */
export const duration = (
  field: string,
  value: Duration.DurationInput,
  minMs: number,
  maxMs: number
): { readonly ms: number; readonly problem?: undefined } | { readonly ms?: undefined; readonly problem: string } => {
  const range = `from ${minMs} ms to ${maxMs} ms`
  if (typeof value === "number" && !(Number.isFinite(value) && value >= minMs && value <= maxMs)) {
    return { problem: `${field} must be a duration ${range}, got ${describe(value)}` }
  }
  if (typeof value === "string" && value.trim().startsWith("-")) {
    return { problem: `${field} must be a duration ${range}, got ${describe(value)}` }
  }
  let ms: number
  try {
    ms = Duration.toMillis(Duration.decode(value))
  } catch {
    return { problem: `${field} is not a duration (e.g. "5 seconds" or milliseconds), got ${describe(value)}` }
  }
  if (!(Number.isFinite(ms) && ms >= minMs && ms <= maxMs)) {
    return { problem: `${field} must be a duration ${range}, got ${Number.isFinite(ms) ? `${ms} ms` : String(ms)}` }
  }
  return { ms }
}

/**
 * The encoded payload's JSON text, or why it cannot be stored: nested deeper than `maxPayloadDepth` (checked
 * iteratively, before `JSON.stringify` could overflow the stack), not serialisable (a `BigInt`, a cycle), or larger
 * than `maxPayloadBytes`. NUL characters and lone surrogates inside payload strings are fine: `JSON.stringify`
 * escapes them (`\u0000`, `\ud800`), the payload column is text, and `JSON.parse` restores them exactly.
 */
export const payloadJson = (
  value: unknown
):
  { readonly json: string; readonly problem?: undefined } | { readonly json?: undefined; readonly problem: string } => {
  const stack: Array<readonly [unknown, number]> = [[value, 0]]
  const seen = new Set<object>()
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!
    if (typeof current !== "object" || current === null) continue
    if (depth >= maxPayloadDepth) {
      return { problem: `the encoded payload is nested more than ${maxPayloadDepth} levels deep` }
    }
    // A value reached twice (shared, or a cycle) is walked once; JSON.stringify below refuses a cycle.
    if (seen.has(current)) continue
    seen.add(current)
    for (const child of Array.isArray(current) ? current : Object.values(current)) stack.push([child, depth + 1])
  }
  let json: string
  try {
    json = JSON.stringify(value ?? null)
  } catch (error) {
    return { problem: `the encoded payload is not JSON: ${error instanceof Error ? error.message : String(error)}` }
  }
  // At most 3 UTF-8 bytes per UTF-16 code unit: short texts need no count.
  const bytes = json.length * 3 <= maxPayloadBytes ? 0 : Buffer.byteLength(json, "utf8")
  if (bytes > maxPayloadBytes) {
    return { problem: `the encoded payload is ${bytes} bytes of JSON; at most ${maxPayloadBytes}` }
  }
  return { json }
}
