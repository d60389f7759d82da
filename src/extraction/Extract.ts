/**
 * Pure document extraction for the example `ExtractionWorkflow`: title, headings, links, emails, dates, fenced-code
 * languages, word count and keywords from a markdown, HTML or plain-text document, plus a merged batch summary.
 *
 * Contract and guarantees:
 * - `extractDocument` is pure, synchronous, total (never throws for any string) and deterministic. Headings, links,
 *   emails and dates are in document order; links, emails and dates are deduplicated. Its result always decodes with
 *   `DocumentExtract`.
 * - Linear time: scanning uses hand-written loops and regexes whose repeated parts stop at a character they cannot
 *   consume, so there is no catastrophic (or quadratic) backtracking — a dense 1 MB README takes tens of milliseconds.
 * - `mergeBatch` is pure and order-independent: any permutation of its input gives a deeply equal summary.
 *
 * What counts as what (the schema cannot say it):
 * - Code is not prose. Markdown fenced code blocks (``` and ~~~) only feed `codeLanguages`; they are excluded from
 *   headings, links, emails, dates, `wordCount` and `keywords`, as are HTML comments and YAML front matter. In HTML the
 *   same holds for `<pre>`, `<script>`, `<style>`, `<template>`, `<svg>`, `<math>` and everything in `<head>`.
 *   Inline code (`` `x` ``, `<code>` outside `<pre>`) is visible text. Indented code blocks are treated as prose.
 * - Words are runs of Unicode letters, marks and digits, joined by an inner `'`, `’` or `-` ("well-known" is one
 *   word; a CJK run is one word). URLs, email addresses, link destinations, image alt text and tags are not words:
 *   they are not read as prose and would swamp the keywords with "https" and "com".
 * - Keywords: lowercased words with a trailing possessive `'s` dropped, keeping only words of 3+ characters that
 *   contain a letter and are not English stop words; top 10 by count, ties broken by code-unit order of the word.
 * - Links: absolute http(s) URLs only. Markdown and text: every URL in the prose (inline links, autolinks, reference
 *   definitions, bare URLs, raw `href`s), with trailing `.,;:!?*_~` and unbalanced `)` trimmed. HTML: `href`
 *   attribute values of any element but `<link>`/`<base>`, entity-decoded. `mailto:` addresses go to `emails`.
 * - Dates: `YYYY-MM-DD`, "March 3, 2024" and "3 March 2024" (also "Mar. 3rd, 2024", "3rd of March 2024"), validated
 *   against the Gregorian calendar (year 0001–9999) and written as `YYYY-MM-DD`.
 * - Titles: markdown's first level-1 heading (ATX or setext), else a front-matter `title:`, else the first inline
 *   HTML `<h1>`; HTML's `<title>`, else its first `<h1>`; text's first non-empty line. Titles are capped at 200 code
 *   points; markdown and HTML titles also have whitespace collapsed.
 * - Headings: markdown ATX and setext headings (not HTML tags inside markdown) with inline markup stripped; HTML
 *   `<h1>`–`<h6>` with inner tags stripped and entities decoded. Images (badges, mostly) are dropped, unless the heading
 *   would be empty: then their alt text stands in. Headings still empty are skipped.
 * - `detectFormat` goes by extension; a file with any other extension is HTML when it starts with `<!doctype html` or
 *   `<html`, else text.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import { Schema } from "effect"

// ---------------------------------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------------------------------

/**
 * The kind of document, which selects the extraction rules.
 *
 * @category schemas
 */
export const DocumentFormat = Schema.Literal("markdown", "html", "text")
/**
 * The kind of document, which selects the extraction rules.
 *
 * @category schemas
 */
export type DocumentFormat = typeof DocumentFormat.Type

/**
 * A calendar date written `YYYY-MM-DD`.
 *
 * @category schemas
 */
export const IsoDate = Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}$/))

/**
 * One heading: its level (1–6) and its plain text.
 *
 * @category schemas
 */
export const Heading = Schema.Struct({
  level: Schema.Int.pipe(Schema.between(1, 6)),
  text: Schema.String
})
/**
 * One heading: its level (1–6) and its plain text.
 *
 * @category schemas
 */
export interface Heading extends Schema.Schema.Type<typeof Heading> {}

/**
 * A keyword and how often it occurs.
 *
 * @category schemas
 */
export const Keyword = Schema.Struct({
  word: Schema.String,
  count: Schema.Int.pipe(Schema.positive())
})
/**
 * A keyword and how often it occurs.
 *
 * @category schemas
 */
export interface Keyword extends Schema.Schema.Type<typeof Keyword> {}

/**
 * Language → number of code blocks in that language.
 *
 * @category schemas
 */
export const CodeLanguages = Schema.Record({ key: Schema.String, value: Schema.NonNegativeInt })

/**
 * Everything extracted from one document.
 *
 * @category schemas
 */
export const DocumentExtract = Schema.Struct({
  path: Schema.String,
  format: DocumentFormat,
  /** UTF-8 size of the input. */
  bytes: Schema.NonNegativeInt,
  title: Schema.NullOr(Schema.String),
  headings: Schema.Array(Heading),
  /** Absolute http(s) URLs, unique, in order of first appearance. */
  links: Schema.Array(Schema.String),
  /** Lowercased addresses, unique, in order of first appearance. */
  emails: Schema.Array(Schema.String),
  /** Valid dates as `YYYY-MM-DD`, unique, in order of first appearance. */
  dates: Schema.Array(IsoDate),
  /** Markdown fenced blocks by info-string language; HTML `<code class="language-x">`. Lowercased. */
  codeLanguages: CodeLanguages,
  wordCount: Schema.NonNegativeInt,
  /** At most 10, by count descending then word ascending. */
  keywords: Schema.Array(Keyword)
})
/**
 * Everything extracted from one document.
 *
 * @category schemas
 */
export interface DocumentExtract extends Schema.Schema.Type<typeof DocumentExtract> {}

/**
 * Totals over a batch of extracts; independent of their order.
 *
 * @category schemas
 */
export const BatchSummary = Schema.Struct({
  documents: Schema.NonNegativeInt,
  formats: Schema.Struct({
    markdown: Schema.NonNegativeInt,
    html: Schema.NonNegativeInt,
    text: Schema.NonNegativeInt
  }),
  bytes: Schema.NonNegativeInt,
  words: Schema.NonNegativeInt,
  headings: Schema.NonNegativeInt,
  /** Documents whose `title` is `null`. */
  missingTitles: Schema.NonNegativeInt,
  /** Distinct links across the batch. */
  links: Schema.NonNegativeInt,
  /** Distinct emails across the batch. */
  emails: Schema.NonNegativeInt,
  /** Distinct dates across the batch. */
  dates: Schema.NonNegativeInt,
  earliestDate: Schema.NullOr(IsoDate),
  latestDate: Schema.NullOr(IsoDate),
  /** Summed per language, keys sorted. */
  codeLanguages: CodeLanguages,
  /** Top 20 of the summed per-document keywords (each document contributes only its own top 10). */
  keywords: Schema.Array(Keyword)
})
/**
 * Totals over a batch of extracts; independent of their order.
 *
 * @category schemas
 */
export interface BatchSummary extends Schema.Schema.Type<typeof BatchSummary> {}

// ---------------------------------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Picks the format from the extension (.md/.markdown/.mdx, .html/.htm/.xhtml), else sniffs for HTML, else text.
 *
 * @category extraction
 */
export const detectFormat = (path: string, content: string): DocumentFormat => {
  const base = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1)
  const dot = base.lastIndexOf(".")
  const ext = dot === -1 ? "" : base.slice(dot + 1).toLowerCase()
  if (ext === "md" || ext === "markdown" || ext === "mdx") return "markdown"
  if (ext === "html" || ext === "htm" || ext === "xhtml") return "html"
  return HTML_SNIFF.test(content.slice(0, 1024)) ? "html" : "text"
}

/**
 * Extracts a document's structure and statistics; pure, synchronous and linear in `content`.
 *
 * @category extraction
 */
export const extractDocument = (path: string, content: string): DocumentExtract => {
  const format = detectFormat(path, content)
  const bytes = Buffer.byteLength(content, "utf8")
  const source = content.charCodeAt(0) === 0xfeff ? content.slice(1) : content
  const parts =
    format === "markdown" ? markdownParts(source) : format === "html" ? htmlParts(source) : textParts(source)
  // One scan of the prose serves links, emails and the blanking that keeps both out of the word count.
  const urls = scanUrls(parts.prose)
  const emails = scanEmails(parts.prose)
  const links = parts.hrefs ?? urls.map((span) => (parts.entities ? decodeEntities(span.value) : span.value))
  const { keywords, wordCount } = countWords(parts.visibleText(blankSpans(parts.prose, urls, emails)))
  return {
    path,
    format,
    bytes,
    title: parts.title,
    headings: parts.headings,
    links: unique(links),
    emails: unique(emails.map((span) => span.value)),
    dates: scanDates(parts.prose),
    codeLanguages: Object.fromEntries(parts.codeLanguages),
    wordCount,
    keywords: topWords(keywords, 10)
  }
}

/**
 * Merges extracts into totals; order-independent (sums, distinct-set sizes and fully sorted rankings).
 *
 * @category extraction
 */
export const mergeBatch = (extracts: ReadonlyArray<DocumentExtract>): BatchSummary => {
  const formats = { markdown: 0, html: 0, text: 0 }
  const links = new Set<string>()
  const emails = new Set<string>()
  const dates = new Set<string>()
  const languages = new Map<string, number>()
  const keywords = new Map<string, number>()
  let bytes = 0
  let words = 0
  let headings = 0
  let missingTitles = 0
  for (const extract of extracts) {
    formats[extract.format]++
    bytes += extract.bytes
    words += extract.wordCount
    headings += extract.headings.length
    if (extract.title === null) missingTitles++
    for (const link of extract.links) links.add(link)
    for (const email of extract.emails) emails.add(email)
    for (const date of extract.dates) dates.add(date)
    for (const [language, count] of Object.entries(extract.codeLanguages)) {
      languages.set(language, (languages.get(language) ?? 0) + count)
    }
    for (const { count, word } of extract.keywords) keywords.set(word, (keywords.get(word) ?? 0) + count)
  }
  let earliestDate: string | null = null
  let latestDate: string | null = null
  for (const date of dates) {
    if (earliestDate === null || date < earliestDate) earliestDate = date
    if (latestDate === null || date > latestDate) latestDate = date
  }
  return {
    documents: extracts.length,
    formats,
    bytes,
    words,
    headings,
    missingTitles,
    links: links.size,
    emails: emails.size,
    dates: dates.size,
    earliestDate,
    latestDate,
    codeLanguages: Object.fromEntries([...languages].sort(([a], [b]) => compareStrings(a, b))),
    keywords: topWords(keywords, 20)
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Per-format passes: each yields the structure and the prose (code, comments and hidden markup already removed).
// ---------------------------------------------------------------------------------------------------------------------

interface Parts {
  readonly title: string | null
  readonly headings: Array<Heading>
  readonly codeLanguages: Map<string, number>
  /** Text scanned for links (unless `hrefs` is given), emails and dates. */
  readonly prose: string
  /** HTML's links: its `href`s rather than URLs in the text. */
  readonly hrefs?: Array<string> | undefined
  /** Whether `&amp;` in a URL found in the prose is markup to decode. */
  readonly entities: boolean
  /** The prose, with URLs and emails already blanked, reduced to the visible text whose words are counted. */
  readonly visibleText: (blanked: string) => string
}

const identity = (text: string): string => text

const HTML_SNIFF = /^\s*<(?:!doctype\s+html|html)[\s>]/i
const TITLE_MAX = 200

const textParts = (text: string): Parts => {
  let title: string | null = null
  let start = 0
  while (start <= text.length) {
    const end = text.indexOf("\n", start)
    const line = text.slice(start, end === -1 ? text.length : end).trim()
    if (line !== "") {
      title = truncate(line)
      break
    }
    if (end === -1) break
    start = end + 1
  }
  return { title, headings: [], codeLanguages: new Map(), prose: text, entities: false, visibleText: identity }
}

// Markdown is read line by line, as CommonMark's block parser does, so fences, comments and headings are found
// without any regex spanning lines. Fences may be indented any amount (CommonMark allows 3 spaces beyond the
// container): READMEs nest them in list items, and reading their code as prose would be the worse mistake.
const FENCE_OPEN = /^[ \t]*(`{3,}|~{3,})(.*)$/
const FENCE_CLOSE = /^[ \t]*(`{3,}|~{3,})[ \t]*$/
const FENCE_LANGUAGE = /^[{.\s]*([\w#+.-]+)/
const ATX = /^ {0,3}(#{1,6})(?:[ \t]|$)/
const SETEXT_UNDERLINE = /^ {0,3}(?:=+|-+)[ \t]*$/
const COMMENT_OPEN = /^ {0,3}<!--/
const LINK_DEFINITION = /^ {0,3}\[[^[\]]+\]:/
const LINK_DEFINITION_LINES = /^ {0,3}\[[^[\]\n]+\]:.*$/gm
// A paragraph starting like this is a list item, quote, HTML block, table or indented code: no setext heading.
const NOT_SETEXT_CONTENT = /^(?: {4}|\t| {0,3}(?:[-+*>|<]|\d{1,9}[.)])(?:[ \t]|$)| {0,3}[<|])/
const FRONT_MATTER_TITLE = /^title:[ \t]*(.*)$/
const H1_TAG = /<h1[\s>]/i

const markdownParts = (source: string): Parts => {
  const lines = source.split(/\r\n|\r|\n/)
  const headings: Array<Heading> = []
  const codeLanguages = new Map<string, number>()
  const prose: Array<string> = []
  let paragraph: Array<string> = []
  let paragraphCanBeHeading = false
  let fence: { readonly char: number; readonly length: number } | null = null
  let inComment = false
  let frontMatterTitle: string | null = null
  let index = 0

  if (lines.length > 1 && lines[0]!.trimEnd() === "---") {
    for (let end = 1; end < lines.length; end++) {
      const line = lines[end]!.trimEnd()
      if (line !== "---" && line !== "...") continue
      for (let i = 1; i < end; i++) {
        const match = FRONT_MATTER_TITLE.exec(lines[i]!)
        if (match !== null) {
          frontMatterTitle = match[1]!.trim().replace(/^(["'])(.*)\1$/, "$2") || null
          break
        }
      }
      index = end + 1
      break
    }
  }

  const pushHeading = (level: number, markdown: string) => {
    const text = inlineText(markdown)
    if (text !== "") headings.push({ level, text })
  }

  // Each line is dispatched on its first non-blank character, so most lines meet no regex at all.
  for (; index < lines.length; index++) {
    const line = lines[index]!
    const first = firstNonBlank(line)
    if (fence !== null) {
      if (first === fence.char) {
        const close = FENCE_CLOSE.exec(line)
        if (close !== null && close[1]!.charCodeAt(0) === fence.char && close[1]!.length >= fence.length) fence = null
      }
      continue
    }
    if (inComment) {
      if (line.includes("-->")) inComment = false
      continue
    }
    if (first === -1) {
      prose.push("")
      paragraph = []
      continue
    }
    if (first === 96 || first === 126) {
      const open = FENCE_OPEN.exec(line)
      // A backtick info string may not contain a backtick (that would be inline code).
      if (open !== null && !(first === 96 && open[2]!.includes("`"))) {
        fence = { char: first, length: open[1]!.length }
        const language = FENCE_LANGUAGE.exec(open[2]!)?.[1]?.toLowerCase()
        if (language !== undefined) codeLanguages.set(language, (codeLanguages.get(language) ?? 0) + 1)
        paragraph = []
        continue
      }
    }
    if (first === 60 && COMMENT_OPEN.test(line)) {
      paragraph = []
      if (!line.includes("-->", line.indexOf("<!--") + 4)) {
        inComment = true
        continue
      }
      prose.push(line)
      continue
    }
    prose.push(line)
    if (first === 91 && paragraph.length === 0 && LINK_DEFINITION.test(line)) continue
    if (first === 35) {
      const atx = ATX.exec(line)
      if (atx !== null) {
        pushHeading(atx[1]!.length, stripClosingHashes(line.slice(atx[0].length)))
        paragraph = []
        continue
      }
    }
    if ((first === 61 || first === 45) && paragraph.length > 0 && paragraphCanBeHeading) {
      if (SETEXT_UNDERLINE.test(line)) {
        pushHeading(first === 61 ? 1 : 2, paragraph.join(" "))
        paragraph = []
        continue
      }
    }
    if ((first === 45 || first === 42 || first === 95) && isThematicBreak(line, first)) {
      paragraph = []
      continue
    }
    if (paragraph.length === 0) paragraphCanBeHeading = !NOT_SETEXT_CONTENT.test(line)
    paragraph.push(line.trim())
  }

  const proseText = stripComments(prose.join("\n"))
  let title = headings.find((heading) => heading.level === 1)?.text ?? frontMatterTitle
  if (title === null && H1_TAG.test(proseText)) {
    title = scanHtml(proseText).headings.find((heading) => heading.level === 1)?.text ?? null
  }
  return {
    title: title === null ? null : truncate(title),
    headings,
    codeLanguages,
    prose: proseText,
    entities: true,
    visibleText: markdownVisibleText
  }
}

/** `***`, `- - -`, `___`: three or more of one marker, with spaces or tabs only, indented at most 3 spaces. */
const isThematicBreak = (line: string, marker: number): boolean => {
  let markers = 0
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i)
    if (c === marker) markers++
    else if (c !== 32 && c !== 9) return false
  }
  return markers >= 3 && line.indexOf(String.fromCharCode(marker)) <= 3
}

/** Char code of the first character that is not a space or tab, or -1 for a blank line. */
const firstNonBlank = (line: string): number => {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i)
    if (c !== 32 && c !== 9) return c
  }
  return -1
}

// `# Title ##` → "Title"; `# C#` keeps its hash (a closing sequence must follow whitespace).
const stripClosingHashes = (rest: string): string => {
  const trimmed = rest.trim()
  let end = trimmed.length
  while (end > 0 && trimmed.charCodeAt(end - 1) === 35) end--
  if (end === trimmed.length) return trimmed
  if (end === 0) return ""
  const before = trimmed.charCodeAt(end - 1)
  return before === 32 || before === 9 ? trimmed.slice(0, end).trimEnd() : trimmed
}

// Bracket and paren classes exclude their own delimiters, so each attempt stops at the next delimiter: linear.
// Destinations may hold one level of balanced parens (`https://en.wikipedia.org/wiki/Foo_(bar)`), written as an
// unrolled, bounded loop: an unbounded repeated group overflows the regexp backtrack stack on long input.
const DESTINATION = String.raw`\([^()]*(?:\([^()]*\)[^()]*){0,16}\)`
const MD_IMAGE = new RegExp(String.raw`!\[([^[\]]*)\](?:${DESTINATION}|\[[^[\]]*\])`, "g")
const MD_LINK = new RegExp(String.raw`\[([^[\]]*)\]${DESTINATION}`, "g")
const MD_REFERENCE_LINK = /\[([^[\]]*)\]\[[^[\]]*\]/g
const MD_LINK_DESTINATION = new RegExp(String.raw`\]${DESTINATION}|\]\[[^[\]]*\]`, "g")
const TAG = /<\/?[A-Za-z][^<>]*>/g
const MD_EMPHASIS = /\\([!-/:-@[-`{-~])|[*`]|~~|(?<![\p{L}\p{N}])_+|_+(?![\p{L}\p{N}])/gu

const INLINE_MARKUP = /[!&*<[\\_`~]/

/**
 * Markdown inline source → plain text: links become their text; markup, tags and images go (badges are noise), unless
 * the text would be empty, when images give their alt text (`# ![Logo](logo.svg)`).
 */
const inlineText = (markdown: string): string => {
  if (!INLINE_MARKUP.test(markdown)) return collapse(markdown)
  const source = stripComments(markdown)
  return plainInline(source.replace(MD_IMAGE, " ")) || plainInline(source.replace(MD_IMAGE, "$1"))
}

const plainInline = (markdown: string): string =>
  collapse(
    decodeEntities(
      markdown
        .replace(MD_LINK, "$1")
        .replace(MD_REFERENCE_LINK, "$1")
        .replace(TAG, " ")
        .replace(MD_EMPHASIS, (_, escaped: string | undefined) => escaped ?? "")
    )
  )

// Images, link destinations, reference definitions and tags are not visible; entities are.
const markdownVisibleText = (blanked: string): string =>
  decodeEntities(
    blanked
      .replace(LINK_DEFINITION_LINES, "")
      .replace(MD_IMAGE, " ")
      .replace(MD_LINK_DESTINATION, "] ")
      .replace(TAG, " ")
  )

const htmlParts = (source: string): Parts => {
  const scan = scanHtml(source)
  return {
    title: scan.title ?? scan.headings.find((heading) => heading.level === 1)?.text ?? null,
    headings: scan.headings,
    codeLanguages: scan.codeLanguages,
    prose: scan.prose,
    hrefs: scan.links,
    entities: false,
    visibleText: identity
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// HTML: a small forgiving tokenizer (one forward pass, `indexOf` jumps), enough for text, headings and attributes.
// ---------------------------------------------------------------------------------------------------------------------

interface HtmlScan {
  readonly title: string | null
  readonly headings: Array<Heading>
  readonly links: Array<string>
  readonly codeLanguages: Map<string, number>
  /** Visible text, entity-decoded, plus `mailto:` addresses where their anchors stand (blanked before counting). */
  readonly prose: string
}

// Tags that do not break a word: `wo<b>rd</b>` is one word, `<p>a</p><p>b</p>` two.
const INLINE_TAGS = new Set([
  "a",
  "abbr",
  "b",
  "bdi",
  "bdo",
  "cite",
  "code",
  "data",
  "del",
  "dfn",
  "em",
  "font",
  "i",
  "ins",
  "kbd",
  "mark",
  "q",
  "s",
  "samp",
  "small",
  "span",
  "strong",
  "sub",
  "sup",
  "time",
  "u",
  "var"
])
const HIDDEN_TAGS = new Set(["template", "svg", "math"])
const HEAD_TAGS = new Set(["base", "link", "meta", "noscript", "script", "style", "template", "title"])
const RAW_TEXT_END: Record<string, RegExp> = {
  script: /<\/script[\s/>]/gi,
  style: /<\/style[\s/>]/gi,
  title: /<\/title[\s/>]/gi
}
const HEADING_TAG = /^h[1-6]$/
const CODE_CLASS = /(?:^|\s)lang(?:uage)?-([^\s]+)/

const scanHtml = (html: string): HtmlScan => {
  const length = html.length
  const headings: Array<Heading> = []
  const links: Array<string> = []
  const codeLanguages = new Map<string, number>()
  const prose: Array<string> = []
  let title: string | null = null
  // Alt texts stand in for a heading that is only images (`<h1><img alt="Chalk"></h1>`).
  let heading: { readonly level: number; readonly parts: Array<string>; readonly alts: Array<string> } | null = null
  let inHead = false
  let hidden = 0
  let pre = 0

  const flushHeading = () => {
    if (heading === null) return
    const text = collapse(heading.parts.join("")) || collapse(heading.alts.join(" "))
    if (text !== "") headings.push({ level: heading.level, text })
    heading = null
  }
  const addText = (raw: string) => {
    const text = decodeEntities(raw)
    if (hidden > 0) return
    heading?.parts.push(text)
    if (inHead || pre > 0) return
    prose.push(text)
  }
  const addBreak = () => {
    prose.push(" ")
    heading?.parts.push(" ")
  }
  // Returns the index just past the end tag of a raw-text element, and its raw content.
  const rawText = (name: string, from: number): [number, string] => {
    const end = RAW_TEXT_END[name]!
    end.lastIndex = from
    const match = end.exec(html)
    if (match === null) return [length, html.slice(from)]
    const close = html.indexOf(">", match.index)
    return [close === -1 ? length : close + 1, html.slice(from, match.index)]
  }

  let i = 0
  while (i < length) {
    const lt = html.indexOf("<", i)
    if (lt === -1) {
      addText(html.slice(i))
      break
    }
    if (lt > i) addText(html.slice(i, lt))
    i = lt
    const next = html.charCodeAt(i + 1)
    if (html.startsWith("<!--", i)) {
      const end = html.indexOf("-->", i + 4)
      i = end === -1 ? length : end + 3
      continue
    }
    if (next === 33 || next === 63) {
      // <!doctype …>, <![CDATA[…]]>, <?xml …?>
      const end = html.indexOf(">", i + 2)
      i = end === -1 ? length : end + 1
      continue
    }
    const closing = next === 47
    const nameStart = closing ? i + 2 : i + 1
    if (!isAsciiLetter(html.charCodeAt(nameStart))) {
      addText("<")
      i++
      continue
    }
    let nameEnd = nameStart + 1
    while (nameEnd < length && isTagNameChar(html.charCodeAt(nameEnd))) nameEnd++
    const name = html.slice(nameStart, nameEnd).toLowerCase()

    if (closing) {
      const end = html.indexOf(">", nameEnd)
      i = end === -1 ? length : end + 1
      if (HEADING_TAG.test(name)) flushHeading()
      else if (name === "head") inHead = false
      else if (name === "pre") pre = Math.max(0, pre - 1)
      else if (HIDDEN_TAGS.has(name)) hidden = Math.max(0, hidden - 1)
      if (!INLINE_TAGS.has(name)) addBreak()
      continue
    }

    const tag = parseAttributes(html, nameEnd)
    i = tag.end
    if (inHead && !HEAD_TAGS.has(name)) inHead = false
    if (name === "script" || name === "style" || name === "title") {
      const [end, raw] = rawText(name, i)
      i = end
      if (name === "title" && title === null && hidden === 0) {
        const text = collapse(decodeEntities(raw))
        if (text !== "") title = truncate(text)
      }
      addBreak()
      continue
    }
    if (name === "head") inHead = true
    else if (name === "body") inHead = false
    else if (name === "pre") pre++
    else if (HIDDEN_TAGS.has(name) && !tag.selfClosing) hidden++
    else if (HEADING_TAG.test(name)) {
      flushHeading()
      heading = { level: Number(name[1]), parts: [], alts: [] }
    } else if (name === "img") {
      if (hidden === 0) heading?.alts.push(decodeEntities(tag.attributes.get("alt") ?? ""))
    } else if (name === "code") {
      const language = CODE_CLASS.exec(tag.attributes.get("class") ?? "")?.[1]?.toLowerCase()
      if (language !== undefined) codeLanguages.set(language, (codeLanguages.get(language) ?? 0) + 1)
    }
    const href = tag.attributes.get("href")
    if (href !== undefined && name !== "link" && name !== "base" && hidden === 0) {
      const url = decodeEntities(href).trim()
      if (ABSOLUTE_URL.test(url)) links.push(url)
      else if (/^mailto:/i.test(url)) prose.push(" ", mailtoAddresses(url), " ")
    }
    if (!INLINE_TAGS.has(name)) addBreak()
  }
  flushHeading()
  return { title, headings, links, codeLanguages, prose: prose.join("") }
}

interface Tag {
  readonly attributes: Map<string, string>
  readonly selfClosing: boolean
  /** Index just past the closing `>`. */
  readonly end: number
}

const parseAttributes = (html: string, from: number): Tag => {
  const length = html.length
  const attributes = new Map<string, string>()
  let selfClosing = false
  let i = from
  while (i < length) {
    const c = html.charCodeAt(i)
    if (c === 62) return { attributes, selfClosing, end: i + 1 }
    if (c === 47) {
      selfClosing = html.charCodeAt(i + 1) === 62
      i++
      continue
    }
    if (isSpace(c)) {
      i++
      continue
    }
    const nameStart = i
    i++
    while (i < length && !isAttributeNameEnd(html.charCodeAt(i))) i++
    const name = html.slice(nameStart, i).toLowerCase()
    while (i < length && isSpace(html.charCodeAt(i))) i++
    let value = ""
    if (html.charCodeAt(i) === 61) {
      i++
      while (i < length && isSpace(html.charCodeAt(i))) i++
      const quote = html.charCodeAt(i)
      if (quote === 34 || quote === 39) {
        const close = html.indexOf(quote === 34 ? '"' : "'", i + 1)
        value = html.slice(i + 1, close === -1 ? length : close)
        i = close === -1 ? length : close + 1
      } else {
        const start = i
        while (i < length && !isSpace(html.charCodeAt(i)) && html.charCodeAt(i) !== 62) i++
        value = html.slice(start, i)
      }
    }
    if (!attributes.has(name)) attributes.set(name, value)
  }
  return { attributes, selfClosing, end: length }
}

const mailtoAddresses = (url: string): string => {
  const query = url.indexOf("?")
  const addresses = url.slice(7, query === -1 ? url.length : query)
  try {
    return decodeURIComponent(addresses).replace(/,/g, " ")
  } catch {
    return addresses.replace(/,/g, " ")
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Scanners: URLs, emails, dates, words
// ---------------------------------------------------------------------------------------------------------------------

interface Span {
  readonly start: number
  readonly end: number
  readonly value: string
}

const URL_START = /\bhttps?:\/\//gi
const ABSOLUTE_URL = /^https?:\/\/[\p{L}\p{N}\[]/iu

// Anything but whitespace, controls and the delimiters that end a URL in prose or markup.
const isUrlChar = (c: number): boolean => {
  if (c <= 32 || c === 127) return false
  if (c < 128) return !URL_STOP.has(c)
  return !isUnicodeSpace(c)
}
const URL_STOP = new Set([...'<>"`[]{}|\\^'].map((char) => char.charCodeAt(0)).concat(39))

/** Bare URLs; each span ends at the first delimiter, less GFM-style trailing punctuation. */
const scanUrls = (text: string): Array<Span> => {
  const spans: Array<Span> = []
  URL_START.lastIndex = 0
  let match: RegExpExecArray | null
  while ((match = URL_START.exec(text)) !== null) {
    const start = match.index
    let end = start + match[0].length
    while (end < text.length && isUrlChar(text.charCodeAt(end))) end++
    URL_START.lastIndex = end
    const value = trimUrl(text.slice(start, end))
    if (ABSOLUTE_URL.test(value)) spans.push({ start, end: start + value.length, value })
  }
  return spans
}

const trimUrl = (url: string): string => {
  let end = url.length
  let unbalanced = 0
  for (let i = 0; i < end; i++) {
    const c = url.charCodeAt(i)
    if (c === 40) unbalanced--
    else if (c === 41) unbalanced++
  }
  while (end > 0) {
    const c = url.charCodeAt(end - 1)
    if (TRAILING_PUNCTUATION.has(c)) end--
    else if (c === 41 && unbalanced > 0) {
      unbalanced--
      end--
    } else break
  }
  return url.slice(0, end)
}
const TRAILING_PUNCTUATION = new Set([...".,;:!?*_~"].map((char) => char.charCodeAt(0)))

const IMAGE_TLDS = new Set(["png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp"])
const TLD = /^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$/i
const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i

/** Email addresses: expand around each `@`; both expansions stop at `@`, so every character is read a bounded number of times. */
const scanEmails = (text: string): Array<Span> => {
  const spans: Array<Span> = []
  let at = text.indexOf("@")
  while (at !== -1) {
    let start = at
    while (start > 0 && isLocalChar(text.charCodeAt(start - 1))) start--
    while (start < at && text.charCodeAt(start) === 46) start++
    let end = at + 1
    let dot = false
    for (let c = text.charCodeAt(end); end < text.length && isDomainChar(c); c = text.charCodeAt(++end)) {
      if (c === 46) dot = true
    }
    while (end > at + 1 && (text.charCodeAt(end - 1) === 46 || text.charCodeAt(end - 1) === 45)) end--
    if (start === at || !dot) {
      at = text.indexOf("@", at + 1)
      continue
    }
    const local = text.slice(start, at)
    const domain = text.slice(at + 1, end)
    if (isValidEmail(local, domain)) spans.push({ start, end, value: `${local}@${domain}`.toLowerCase() })
    at = text.indexOf("@", at + 1)
  }
  return spans
}

const isValidEmail = (local: string, domain: string): boolean => {
  if (local === "" || local.length > 64 || local.endsWith(".") || local.includes("..")) return false
  const labels = domain.split(".")
  if (labels.length < 2 || domain.length > 253) return false
  const tld = labels[labels.length - 1]!
  return TLD.test(tld) && !IMAGE_TLDS.has(tld.toLowerCase()) && labels.every((label) => DOMAIN_LABEL.test(label))
}

/** Replaces URLs and emails by a space, so they neither count as words nor glue their neighbours together. */
const blankSpans = (text: string, urls: ReadonlyArray<Span>, emails: ReadonlyArray<Span>): string => {
  if (urls.length === 0 && emails.length === 0) return text
  const spans = [...urls, ...emails].sort((a, b) => a.start - b.start)
  const out: Array<string> = []
  let position = 0
  for (const span of spans) {
    if (span.start < position) continue
    out.push(text.slice(position, span.start), " ")
    position = span.end
  }
  out.push(text.slice(position))
  return out.join("")
}

const MONTHS =
  "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
const ISO_DATE = /(?<![\w.-])(\d{4})-(\d{2})-(\d{2})(?!\d)/g
const MONTH_DAY_YEAR = new RegExp(`\\b(${MONTHS})\\.?\\s+(\\d{1,2})(?:st|nd|rd|th)?,?\\s+(\\d{4})(?!\\d)`, "gi")
const DAY_MONTH_YEAR = new RegExp(
  `\\b(\\d{1,2})(?:st|nd|rd|th)?\\s+(?:of\\s+)?(${MONTHS})\\.?,?\\s+(\\d{4})(?!\\d)`,
  "gi"
)
const MONTH_NUMBER: Record<string, number> = {
  jan: 1,
  feb: 2,
  mar: 3,
  apr: 4,
  may: 5,
  jun: 6,
  jul: 7,
  aug: 8,
  sep: 9,
  oct: 10,
  nov: 11,
  dec: 12
}

/** Valid dates in order of first appearance, unique, as `YYYY-MM-DD`. */
const scanDates = (text: string): Array<string> => {
  const found: Array<readonly [index: number, date: string]> = []
  const collect = (regex: RegExp, fields: (match: RegExpExecArray) => [string, string | number, string]) => {
    for (const match of text.matchAll(regex)) {
      const [year, month, day] = fields(match)
      const date = isoDate(Number(year), Number(month), Number(day))
      if (date !== null) found.push([match.index, date])
    }
  }
  collect(ISO_DATE, (m) => [m[1]!, m[2]!, m[3]!])
  collect(MONTH_DAY_YEAR, (m) => [m[3]!, MONTH_NUMBER[m[1]!.slice(0, 3).toLowerCase()]!, m[2]!])
  collect(DAY_MONTH_YEAR, (m) => [m[3]!, MONTH_NUMBER[m[2]!.slice(0, 3).toLowerCase()]!, m[1]!])
  return unique(found.sort((a, b) => a[0] - b[0]).map(([, date]) => date))
}

const isoDate = (year: number, month: number, day: number): string | null => {
  if (year < 1 || month < 1 || month > 12 || day < 1) return null
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
  const days = month === 2 ? (leap ? 29 : 28) : month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
  if (day > days) return null
  return `${String(year).padStart(4, "0")}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`
}

// The joiner group starts with a character the runs cannot match, so matching never backtracks; it is bounded so a
// megabyte-long hyphen chain cannot overflow the regexp backtrack stack (a 33rd joined part starts a new word).
const WORD = /[\p{L}\p{N}][\p{L}\p{M}\p{N}]*(?:['’-][\p{L}\p{N}][\p{L}\p{M}\p{N}]*){0,31}/gu
const LETTER = /\p{L}/u

const countWords = (text: string): { readonly wordCount: number; readonly keywords: Map<string, number> } => {
  const keywords = new Map<string, number>()
  const words = text.toLowerCase().replace(/’/g, "'").match(WORD) ?? []
  for (let word of words) {
    if (word.length < 3) continue
    if (word.endsWith("'s")) word = word.slice(0, -2)
    if (word.length < 3 || STOP_WORDS.has(word)) continue
    // Words start with a letter or digit; only those starting with a digit (or non-ASCII) need the letter test.
    const first = word.charCodeAt(0)
    if ((first < 97 || first > 122) && !LETTER.test(word)) continue
    keywords.set(word, (keywords.get(word) ?? 0) + 1)
  }
  return { wordCount: words.length, keywords }
}

const topWords = (counts: ReadonlyMap<string, number>, limit: number): Array<Keyword> =>
  [...counts]
    .sort(([a, x], [b, y]) => y - x || compareStrings(a, b))
    .slice(0, limit)
    .map(([word, count]) => ({ word, count }))

// A reasonable English list (NLTK's, with contractions); words under 3 characters are dropped before this check.
const STOP_WORDS: ReadonlySet<string> = new Set(
  (
    "about above after again against all also and any are aren't because been before being below between both but " +
    "can can't cannot could couldn't did didn't does doesn't doing don't down during each else etc even ever every " +
    "few for from further get gets got had hadn't has hasn't have haven't having her here here's hers herself him " +
    "himself his how how's however i'd i'll i'm i've into isn't it'd it'll its itself just let's like may might " +
    "more most must mustn't myself nor not now off once one only other ought our ours ourselves out over own per " +
    "same shall shan't she she'd she'll should shouldn't some such than that that's the their theirs them " +
    "themselves then there there's these they they'd they'll they're they've this those through too under until " +
    "upon use used using very via was wasn't we'd we'll we're we've were weren't what what's when when's where " +
    "where's which while who who's whom why why's will with won't would wouldn't yet you you'd you'll you're " +
    "you've your yours yourself yourselves"
  ).split(" ")
)

// ---------------------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------------------

const ENTITY = /&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([A-Za-z][A-Za-z0-9]{1,31}));/g
const NAMED_ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: "\u00a0",
  copy: "©",
  reg: "®",
  trade: "™",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  lsquo: "‘",
  rsquo: "’",
  ldquo: "“",
  rdquo: "”",
  laquo: "«",
  raquo: "»",
  bull: "•",
  middot: "·",
  times: "×",
  divide: "÷",
  deg: "°",
  euro: "€",
  pound: "£",
  yen: "¥",
  cent: "¢",
  sect: "§",
  para: "¶",
  shy: "\u00ad",
  zwj: "\u200d",
  zwnj: "\u200c"
}

/** Decodes numeric references and the common named entities; unknown names are left as written. */
const decodeEntities = (text: string): string =>
  text.indexOf("&") === -1
    ? text
    : text.replace(ENTITY, (entity, decimal: string | undefined, hex: string | undefined, name: string | undefined) => {
        if (name !== undefined) return Object.hasOwn(NAMED_ENTITIES, name) ? NAMED_ENTITIES[name]! : entity
        const code = decimal !== undefined ? Number.parseInt(decimal, 10) : Number.parseInt(hex!, 16)
        return code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)
          ? "\ufffd"
          : String.fromCodePoint(code)
      })

/** Removes `<!-- … -->`; an unclosed comment runs to the end, as in HTML. */
const stripComments = (text: string): string => {
  let open = text.indexOf("<!--")
  if (open === -1) return text
  const out: Array<string> = []
  let position = 0
  while (open !== -1) {
    out.push(text.slice(position, open), " ")
    const close = text.indexOf("-->", open + 4)
    if (close === -1) return out.join("")
    position = close + 3
    open = text.indexOf("<!--", position)
  }
  out.push(text.slice(position))
  return out.join("")
}

const collapse = (text: string): string => text.replace(/\s+/g, " ").trim()

const truncate = (text: string): string => {
  if (text.length <= TITLE_MAX) return text
  return Array.from(text.slice(0, TITLE_MAX * 2))
    .slice(0, TITLE_MAX)
    .join("")
}

const unique = (values: ReadonlyArray<string>): Array<string> => [...new Set(values)]

const compareStrings = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

const isAsciiLetter = (c: number): boolean => (c >= 65 && c <= 90) || (c >= 97 && c <= 122)

const isTagNameChar = (c: number): boolean => isAsciiLetter(c) || (c >= 48 && c <= 57) || c === 45 || c === 58

const isSpace = (c: number): boolean => c === 32 || (c >= 9 && c <= 13)

const isAttributeNameEnd = (c: number): boolean => isSpace(c) || c === 47 || c === 61 || c === 62

const isUnicodeSpace = (c: number): boolean =>
  c === 0xa0 ||
  c === 0x1680 ||
  (c >= 0x2000 && c <= 0x200b) ||
  c === 0x2028 ||
  c === 0x2029 ||
  c === 0x202f ||
  c === 0x205f ||
  c === 0x3000 ||
  c === 0xfeff

// RFC 5322 atext without the characters that usually border an address in prose (quotes, slashes, braces, …).
const isLocalChar = (c: number): boolean =>
  isAsciiLetter(c) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45

const isDomainChar = (c: number): boolean => isAsciiLetter(c) || (c >= 48 && c <= 57) || c === 46 || c === 45
