/**
 * Choosing a dialect's statements. Every SQL module builds its per-dialect strategy object ONCE, when its layer (or
 * the object that uses it) is built, through `byDialect`; no call on the hot path asks which database it talks to.
 * Adding a dialect means adding its branch here and one strategy per module that calls `byDialect`
 * (docs/architecture.md).
 */
import type { Dialect } from "../../Storage.js"

/** The implementations of one strategy, one per dialect (built lazily: only the chosen one is built). */
export interface PerDialect<A> {
  readonly pg: () => A
  readonly sqlite: () => A
}

/** Builds the strategy of `dialect`. */
export const byDialect = <A>(dialect: Dialect, strategies: PerDialect<A>): A =>
  dialect === "pg" ? strategies.pg() : strategies.sqlite()
