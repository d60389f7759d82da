/** What the runner passes to a scenario. */
export interface ScenarioOptions {
  /** Reduced sizes (the whole `--quick` run stays under a minute). */
  readonly quick: boolean
  /** Rounds per system (≥ 5, or ≥ 3 with --quick). */
  readonly rounds: number
  /** Restricts a scenario to the systems with these names (`--systems a,b`; for profiling). */
  readonly systems?: ReadonlyArray<string> | undefined
  /** Soak: the steady load in jobs/s (`--rate`); measured when absent. */
  readonly rate?: number | undefined
  /** Progress output. */
  readonly log: (line: string) => void
}
