/**
 * Finding documents on disk for the CLI: the demo corpus (the Markdown READMEs of the packages in `node_modules`) and
 * the text / Markdown / HTML files under a directory.
 *
 * Deterministic: the same tree gives the same documents in the same order (paths sorted by code unit), so a run and
 * its resume, or two runs over the same tree, see identical input. Files larger than `maxBytes`, files with a NUL byte
 * and files that are not valid UTF-8 are skipped (and counted), never read as text. Symbolic links to directories are
 * not followed inside a walk (no cycles).
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/** A document to extract: where it came from and its text. */
export interface SourceDocument {
  /** Path relative to the corpus root (forward slashes). */
  readonly path: string
  readonly content: string
}

/** What a scan found. */
export interface Corpus {
  readonly root: string
  readonly documents: ReadonlyArray<SourceDocument>
  /** Files skipped as too large, binary or not UTF-8. */
  readonly skipped: number
}

/** The corpus could not be read (missing directory, permissions). */
export class CorpusError extends Data.TaggedError("CorpusError")<{ readonly message: string }> {}

/** Default size limit of one document. */
export const defaultMaxBytes = 1024 * 1024

const extensions = new Set([".md", ".markdown", ".mdx", ".txt", ".text", ".html", ".htm", ".xhtml"])
const readmeName = /^readme\.(md|markdown)$/i

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

const toPosix = (p: string) => p.split(path.sep).join("/")

const decoder = new TextDecoder("utf-8", { fatal: true })

/** Reads a file as text, or undefined if it is too large, binary or not UTF-8. */
const readText = (file: string, maxBytes: number): Effect.Effect<string | undefined, CorpusError> =>
  Effect.tryPromise({
    try: async () => {
      const stat = await fs.stat(file)
      if (!stat.isFile() || stat.size > maxBytes) return undefined
      const bytes = await fs.readFile(file)
      if (bytes.subarray(0, 8192).includes(0)) return undefined
      try {
        return decoder.decode(bytes)
      } catch {
        return undefined
      }
    },
    catch: (cause) => new CorpusError({ message: `cannot read ${file}: ${(cause as Error).message}` })
  })

const listDir = (dir: string) =>
  Effect.tryPromise({
    try: () => fs.readdir(dir, { withFileTypes: true }),
    catch: (cause) => {
      const code = (cause as { code?: string }).code
      return new CorpusError({
        message:
          code === "ENOENT"
            ? `no such directory: ${dir}`
            : code === "ENOTDIR"
              ? `not a directory: ${dir}`
              : `cannot read directory ${dir}: ${(cause as Error).message}`
      })
    }
  })

const collect = (root: string, files: ReadonlyArray<string>, maxBytes: number): Effect.Effect<Corpus, CorpusError> =>
  Effect.gen(function* () {
    const documents: Array<SourceDocument> = []
    let skipped = 0
    const sorted = [...files].sort((a, b) =>
      byCodeUnit(toPosix(path.relative(root, a)), toPosix(path.relative(root, b)))
    )
    for (const file of sorted) {
      const content = yield* readText(file, maxBytes)
      if (content === undefined) skipped++
      else documents.push({ path: toPosix(path.relative(root, file)), content })
    }
    return { root, documents, skipped }
  })

/**
 * The demo corpus: for each package directly under `<cwd>/node_modules` (and each `@scope/package`), its
 * `README.md` (or `readme.markdown`, any case). Paths are relative to `cwd`, e.g. `node_modules/effect/README.md`.
 */
export const demoCorpus = (options: {
  readonly cwd: string
  readonly maxBytes?: number | undefined
  readonly limit?: number | undefined
}): Effect.Effect<Corpus, CorpusError> =>
  Effect.gen(function* () {
    const modules = path.join(options.cwd, "node_modules")
    const packageDirs: Array<string> = []
    for (const entry of yield* listDir(modules)) {
      if (entry.name.startsWith(".")) continue
      const full = path.join(modules, entry.name)
      if (entry.name.startsWith("@")) {
        const scoped = yield* Effect.orElseSucceed(listDir(full), () => [])
        for (const inner of scoped) if (!inner.name.startsWith(".")) packageDirs.push(path.join(full, inner.name))
      } else {
        packageDirs.push(full)
      }
    }
    const readmes: Array<string> = []
    for (const dir of packageDirs) {
      const entries = yield* Effect.orElseSucceed(listDir(dir), () => [])
      // Several spellings may exist (README.md and readme.md): take the first in code-unit order, one per package.
      const names = entries
        .filter((entry) => readmeName.test(entry.name))
        .map((entry) => entry.name)
        .sort(byCodeUnit)
      if (names[0] !== undefined) readmes.push(path.join(dir, names[0]))
    }
    readmes.sort((a, b) => byCodeUnit(toPosix(path.relative(options.cwd, a)), toPosix(path.relative(options.cwd, b))))
    const limited = options.limit === undefined ? readmes : readmes.slice(0, options.limit)
    return yield* collect(options.cwd, limited, options.maxBytes ?? defaultMaxBytes)
  })

/**
 * Every text, Markdown or HTML file under `dir` (recursively, skipping hidden entries and nested `node_modules`),
 * paths relative to `dir`.
 */
export const directoryCorpus = (options: {
  readonly dir: string
  readonly maxBytes?: number | undefined
}): Effect.Effect<Corpus, CorpusError> =>
  Effect.gen(function* () {
    const root = path.resolve(options.dir)
    const files: Array<string> = []
    const walk = (dir: string): Effect.Effect<void, CorpusError> =>
      Effect.gen(function* () {
        for (const entry of yield* listDir(dir)) {
          if (entry.name.startsWith(".")) continue
          const full = path.join(dir, entry.name)
          if (entry.isDirectory()) {
            if (entry.name !== "node_modules") yield* walk(full)
          } else if (
            (entry.isFile() || entry.isSymbolicLink()) &&
            extensions.has(path.extname(entry.name).toLowerCase())
          ) {
            files.push(full)
          }
        }
      })
    yield* walk(root)
    return yield* collect(root, files, options.maxBytes ?? defaultMaxBytes)
  })
