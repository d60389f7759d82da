/**
 * What a chaos run creates, derived from its seed: the chords (each body task's number, delay and whether it fails on
 * purpose) and the extraction runs. The producers read the chords from the plan file; the checks compare against it.
 */

/** A small deterministic PRNG (mulberry32). */
export const rng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface PlannedBody {
  readonly n: number
  readonly slowMs: number
  readonly fail: boolean
}

export interface PlannedChord {
  /** The chord's label (in the callback's payload) and, prefixed with `chaos:`, its idempotency key. */
  readonly key: string
  readonly bodies: ReadonlyArray<PlannedBody>
  /** Index of the body that fails on purpose (the chord must fail and run its onError), or -1. */
  readonly failing: number
}

export interface Plan {
  readonly token: string
  readonly chords: ReadonlyArray<PlannedChord>
  readonly runs: ReadonlyArray<string>
}

/** Share of chords with one body that fails on purpose, and of bodies that are slow. */
export const failingShare = 0.2
export const slowShare = 0.1

export const makePlan = (options: {
  readonly token: string
  readonly seed: number
  readonly chords: number
  readonly bodies: number
  readonly runs: number
  readonly maxSlowMs: number
}): Plan => {
  const random = rng(options.seed)
  const chords = Array.from({ length: options.chords }, (_, c): PlannedChord => {
    const failing = options.bodies > 0 && random() < failingShare ? Math.floor(random() * options.bodies) : -1
    const bodies = Array.from({ length: options.bodies }, (_, i) => ({
      n: Math.floor(random() * 1000),
      slowMs: random() < slowShare ? Math.floor(100 + random() * Math.max(0, options.maxSlowMs - 100)) : 0,
      fail: i === failing
    }))
    return { key: `${options.token}-c${c}`, bodies, failing }
  })
  const runs = Array.from({ length: options.runs }, (_, r) => `${options.token}-r${r}`)
  return { token: options.token, chords, runs }
}

/** The idempotency key of a planned chord. */
export const chordKey = (chord: PlannedChord): string => `chaos:${chord.key}`
