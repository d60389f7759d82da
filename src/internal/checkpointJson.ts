/**
 * The stored form of checkpoint results and errors: canonical JSON (object keys sorted), so two outcomes are the
 * same exactly when their texts are equal, whatever order the caller built the objects in.
 */

const normalise = (value: unknown, seen: Set<object>): unknown => {
  if (value === null || typeof value !== "object") {
    if (typeof value === "bigint") return value.toString()
    if (typeof value === "function" || typeof value === "symbol" || value === undefined) return null
    return value
  }
  if (seen.has(value)) throw new TypeError("checkpoint outcome is not JSON-serialisable: it contains a cycle")
  seen.add(value)
  try {
    const withJson = value as { toJSON?: () => unknown }
    if (typeof withJson.toJSON === "function" && !(value instanceof Error)) {
      return normalise(withJson.toJSON(), seen)
    }
    if (Array.isArray(value)) return value.map((item) => normalise(item, seen))
    const out: Record<string, unknown> = {}
    // An Error's name and message are not enumerable; keep them, they are the point of a stored error.
    if (value instanceof Error) {
      out.name = value.name
      out.message = value.message
    }
    for (const key of Object.keys(value).sort()) {
      const field = (value as Record<string, unknown>)[key]
      if (field === undefined || typeof field === "function" || typeof field === "symbol") continue
      out[key] = normalise(field, seen)
    }
    if (value instanceof Error) {
      const sorted: Record<string, unknown> = {}
      for (const key of Object.keys(out).sort()) sorted[key] = out[key]
      return sorted
    }
    return out
  } finally {
    seen.delete(value)
  }
}

/** Canonical JSON text of an outcome (`undefined` becomes `null`). Throws `TypeError` on cycles. */
export const canonicalJson = (value: unknown): string => JSON.stringify(normalise(value, new Set())) ?? "null"

/** Parses stored outcome text (`null` when absent). */
export const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text))
