import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    // Two test files at a time. Vitest's default is one fewer than the CPUs, which on the project's 2-core machines
    // is one file at a time; most files spend much of their time waiting (child processes, Postgres, leases), so a
    // second file fills that time. BATON_TEST_WORKERS overrides it (1: the old serial run).
    maxWorkers: Number(process.env.BATON_TEST_WORKERS ?? 2),
    minWorkers: 1,
    reporters: ["default"]
  }
})
