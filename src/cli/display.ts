/**
 * What the CLI prints: the progress bar (TTY) or progress lines (pipes, CI logs), the summary table and the status
 * report. Pure string building; the caller decides where the text goes.
 */
import type { BatchSummary } from "../extraction/Extract.js"

/** Progress of a run as the display sees it. */
export interface ProgressSnapshot {
  readonly completedBatches: number
  readonly totalBatches: number
  /** Documents in confirmed batches. */
  readonly documentsDone: number
  readonly totalDocuments: number
}

/** `1m05s`, `4.2s`, `—` when unknown. */
export const formatDuration = (ms: number | undefined): string => {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return "—"
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`
  const total = Math.round(ms / 1000)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`
  if (m > 0) return `${m}m${String(s).padStart(2, "0")}s`
  return `${s}s`
}

/** `1.8 MB`. */
export const formatBytes = (bytes: number): string => {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

/** `12,345`. */
export const formatInt = (n: number): string => Math.round(n).toLocaleString("en-US")

/** Rate and ETA from documents done since this process started watching. */
export const rateAndEta = (
  snapshot: ProgressSnapshot,
  startDocuments: number,
  elapsedMs: number
): { readonly rate: number | undefined; readonly etaMs: number | undefined } => {
  const done = snapshot.documentsDone - startDocuments
  if (elapsedMs <= 0 || done <= 0) return { rate: undefined, etaMs: undefined }
  const rate = done / (elapsedMs / 1000)
  const remaining = Math.max(0, snapshot.totalDocuments - snapshot.documentsDone)
  return { rate, etaMs: (remaining / rate) * 1000 }
}

const rateText = (rate: number | undefined) => (rate === undefined ? "— docs/s" : `${rate.toFixed(1)} docs/s`)

/** One plain progress line (non-TTY output), printed when a batch is confirmed. */
export const progressLine = (snapshot: ProgressSnapshot, rate: number | undefined, etaMs: number | undefined): string =>
  `batch ${snapshot.completedBatches}/${snapshot.totalBatches} confirmed · ` +
  `${snapshot.documentsDone}/${snapshot.totalDocuments} documents · ${rateText(rate)} · ETA ${formatDuration(etaMs)}`

/** The TTY progress bar (one line, redrawn in place by the caller). */
export const progressBar = (
  snapshot: ProgressSnapshot,
  rate: number | undefined,
  etaMs: number | undefined,
  width = 28
): string => {
  const fraction = snapshot.totalDocuments === 0 ? 1 : snapshot.documentsDone / snapshot.totalDocuments
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)))
  const bar = "█".repeat(filled) + "░".repeat(width - filled)
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4)
  return (
    `${bar} ${percent} · batches ${snapshot.completedBatches}/${snapshot.totalBatches} · ` +
    `docs ${snapshot.documentsDone}/${snapshot.totalDocuments} · ${rateText(rate)} · ETA ${formatDuration(etaMs)}`
  )
}

/** A two-column table with box-drawing borders. */
export const table = (title: string, rows: ReadonlyArray<readonly [string, string]>): string => {
  const left = Math.max(...rows.map(([key]) => key.length), 4)
  const right = Math.max(...rows.map(([, value]) => value.length), title.length - left - 3, 4)
  // A row is "│ key │ value │": left + right + 7 characters.
  const inner = left + right + 3
  const rule = (l: string, m: string, r: string) => `${l}${"─".repeat(left + 2)}${m}${"─".repeat(right + 2)}${r}`
  return [
    `┌${"─".repeat(inner + 2)}┐`,
    `│ ${title.padEnd(inner)} │`,
    rule("├", "┬", "┤"),
    ...rows.map(([key, value]) => `│ ${key.padEnd(left)} │ ${value.padEnd(right)} │`),
    rule("└", "┴", "┘")
  ].join("\n")
}

const top = (entries: ReadonlyArray<readonly [string, number]>, n: number) =>
  entries.length === 0
    ? "—"
    : entries
        .slice(0, n)
        .map(([name, count]) => `${name} ${count}`)
        .join(", ")

/** The summary table printed at the end of a run. */
export const summaryTable = (options: {
  readonly runId: string
  readonly state: string
  readonly batches: number
  readonly summary: BatchSummary
  readonly elapsedMs: number | undefined
  readonly documentsThisProcess: number
  readonly skipped?: number | undefined
}): string => {
  const { summary } = options
  const languages = Object.entries(summary.codeLanguages).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
  const rate =
    options.elapsedMs !== undefined && options.elapsedMs > 0 && options.documentsThisProcess > 0
      ? `${(options.documentsThisProcess / (options.elapsedMs / 1000)).toFixed(1)} docs/s`
      : "—"
  const rows: Array<readonly [string, string]> = [
    ["run", options.runId],
    ["state", options.state],
    ["batches", formatInt(options.batches)],
    [
      "documents",
      `${formatInt(summary.documents)} (${summary.formats.markdown} md, ${summary.formats.html} html, ${summary.formats.text} text)` +
        (options.skipped ? `, ${options.skipped} skipped` : "")
    ],
    ["size", formatBytes(summary.bytes)],
    ["words", formatInt(summary.words)],
    ["headings", formatInt(summary.headings)],
    ["untitled", formatInt(summary.missingTitles)],
    ["distinct links", formatInt(summary.links)],
    ["distinct e-mails", formatInt(summary.emails)],
    [
      "distinct dates",
      summary.dates === 0 ? "0" : `${formatInt(summary.dates)} (${summary.earliestDate} … ${summary.latestDate})`
    ],
    ["code languages", top(languages, 6)],
    [
      "top keywords",
      top(
        summary.keywords.map((k) => [k.word, k.count] as const),
        8
      )
    ],
    ["elapsed", formatDuration(options.elapsedMs)],
    ["throughput", rate]
  ]
  return table("Extraction summary", rows)
}
