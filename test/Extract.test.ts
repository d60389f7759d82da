import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { Buffer } from "node:buffer"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import {
  BatchSummary,
  type DocumentExtract,
  DocumentExtract as DocumentExtractSchema,
  detectFormat,
  extractDocument,
  mergeBatch
} from "../src/extraction/Extract.js"

const here = Path.dirname(fileURLToPath(import.meta.url))
const fixture = (name: string) => Fs.readFileSync(Path.join(here, "fixtures", "extract", name), "utf8")
const decodeExtract = Schema.decodeUnknownSync(DocumentExtractSchema)
const md = (content: string) => extractDocument("doc.md", content)
const html = (content: string) => extractDocument("doc.html", content)
const text = (content: string) => extractDocument("doc.txt", content)

describe("detectFormat", () => {
  it("goes by extension, case-insensitively", () => {
    assert.strictEqual(detectFormat("README.md", ""), "markdown")
    assert.strictEqual(detectFormat("docs/guide.MARKDOWN", ""), "markdown")
    assert.strictEqual(detectFormat("page.mdx", ""), "markdown")
    assert.strictEqual(detectFormat("a/b/index.html", ""), "html")
    assert.strictEqual(detectFormat("C:\\site\\INDEX.HTM", ""), "html")
    assert.strictEqual(detectFormat("notes.txt", "# looks like markdown"), "text")
    assert.strictEqual(detectFormat("LICENSE", ""), "text")
    assert.strictEqual(detectFormat("archive.md.bak", ""), "text")
  })

  it("sniffs HTML only when the extension says nothing", () => {
    assert.strictEqual(detectFormat("page", "  <!DOCTYPE html>\n<html>"), "html")
    assert.strictEqual(detectFormat("page.txt", "<html lang=en>"), "html")
    assert.strictEqual(detectFormat("page.md", "<!doctype html>"), "markdown")
    assert.strictEqual(detectFormat("page", "<htmlx>"), "text")
  })
})

describe("markdown fixture", () => {
  const result = extractDocument("fixtures/sample.md", fixture("sample.md"))

  it("reports path, format and UTF-8 size", () => {
    assert.strictEqual(result.path, "fixtures/sample.md")
    assert.strictEqual(result.format, "markdown")
    assert.strictEqual(result.bytes, Buffer.byteLength(fixture("sample.md")))
  })

  it("takes the first level-1 heading as title, inline markup stripped", () => {
    assert.strictEqual(result.title, "Baton & Friends")
  })

  it("finds ATX and setext headings, none from code fences, comments, lists or front matter", () => {
    assert.deepStrictEqual(result.headings, [
      { level: 1, text: "Baton & Friends" },
      { level: 1, text: "Setup Guide" },
      { level: 2, text: "Install" },
      { level: 2, text: "Usage notes" },
      { level: 3, text: "C# and F#" }
    ])
  })

  it("collects absolute http(s) links in order, deduplicated, trailing punctuation trimmed", () => {
    assert.deepStrictEqual(result.links, [
      "https://baton.dev/guide",
      "https://baton.dev/api",
      "https://github.com/baton/baton",
      "https://example.com/changelog",
      "https://img.shields.io/badge/build-passing-green",
      "https://ci.example.com/baton",
      "https://ref.example.com/path"
    ])
  })

  it("collects lowercase unique emails, mailto included", () => {
    assert.deepStrictEqual(result.emails, ["maintainers@baton.dev", "team@baton.dev"])
  })

  it("normalises valid dates, rejecting invalid ones and front matter", () => {
    assert.deepStrictEqual(result.dates, ["2024-03-03", "2024-03-05", "2024-04-07"])
  })

  it("counts fenced code blocks per language, ignoring fences nested in a longer fence", () => {
    assert.deepStrictEqual(result.codeLanguages, { ts: 1, bash: 1, md: 1 })
  })

  it("counts visible words only", () => {
    assert.strictEqual(result.wordCount, 56)
  })

  it("ranks keywords by count, then alphabetically", () => {
    assert.deepStrictEqual(result.keywords.slice(0, 4), [
      { word: "baton", count: 2 },
      { word: "guide", count: 2 },
      { word: "api", count: 1 },
      { word: "april", count: 1 }
    ])
    assert.strictEqual(result.keywords.length, 10)
  })

  it("decodes with the schema", () => {
    assert.deepStrictEqual(decodeExtract(result), result)
  })
})

describe("html fixture", () => {
  const result = extractDocument("sample.html", fixture("sample.html"))

  it("takes <title>, entities decoded", () => {
    assert.strictEqual(result.format, "html")
    assert.strictEqual(result.title, 'Baton & the "Runtime"')
  })

  it("finds h1–h6 with inner tags stripped and entities decoded, not in scripts or comments", () => {
    assert.deepStrictEqual(result.headings, [
      { level: 1, text: "Welcome to Baton <3" },
      { level: 2, text: "Links & & more here" },
      { level: 3, text: "Code — samples" }
    ])
  })

  it("collects absolute hrefs (decoded, deduplicated), not stylesheets, relative paths or script text", () => {
    assert.deepStrictEqual(result.links, [
      "https://baton.dev/docs?a=1&b=2",
      "https://github.com/baton",
      "https://unquoted.example/x"
    ])
  })

  it("collects emails from text and mailto hrefs", () => {
    assert.deepStrictEqual(result.emails, ["ops@baton.dev", "support@baton.dev"])
  })

  it("collects dates from visible text only", () => {
    assert.deepStrictEqual(result.dates, ["2024-03-03"])
  })

  it("counts <code class=language-x>", () => {
    assert.deepStrictEqual(result.codeLanguages, { ts: 2, bash: 1 })
  })

  it("counts words without tags, head, scripts, styles, <pre>, svg or comments", () => {
    assert.strictEqual(result.wordCount, 32)
    assert.deepStrictEqual(result.keywords[0], { word: "durable", count: 2 })
  })

  it("falls back to the first <h1> without <title>", () => {
    assert.strictEqual(html("<body><h2>Intro</h2><h1>Main <b>Title</b></h1></body>").title, "Main Title")
    assert.strictEqual(html("<p>no headings</p>").title, null)
  })

  it("uses image alt text only for a heading that is otherwise empty", () => {
    const result = html('<h1><img src="logo.svg" alt="Chalk"></h1><h2>Docs <img alt="badge"></h2>')
    assert.deepStrictEqual(result.headings, [
      { level: 1, text: "Chalk" },
      { level: 2, text: "Docs" }
    ])
  })
})

describe("text fixture", () => {
  const result = extractDocument("sample.txt", fixture("sample.txt"))

  it("extracts every field", () => {
    assert.deepStrictEqual(result, {
      path: "sample.txt",
      format: "text",
      bytes: Buffer.byteLength(fixture("sample.txt")),
      title: "Release notes for Baton 1.0",
      headings: [],
      links: ["https://baton.dev/releases/1.0"],
      emails: ["help@baton.dev"],
      dates: ["2024-03-03", "2024-12-31"],
      codeLanguages: {},
      // Release notes for Baton 1 0 · Visit Questions · Released 2024-03-03 next one on 31 December 2024
      wordCount: 16,
      keywords: [
        { word: "baton", count: 1 },
        { word: "december", count: 1 },
        { word: "next", count: 1 },
        { word: "notes", count: 1 },
        { word: "questions", count: 1 },
        { word: "release", count: 1 },
        { word: "released", count: 1 },
        { word: "visit", count: 1 }
      ]
    })
  })

  it("caps the title at 200 code points and handles empty input", () => {
    assert.strictEqual(text("\n\n" + "😀".repeat(300)).title, "😀".repeat(200))
    const empty = text("")
    assert.strictEqual(empty.title, null)
    assert.strictEqual(empty.wordCount, 0)
    assert.strictEqual(empty.bytes, 0)
  })
})

describe("markdown headings", () => {
  it("ignores headings inside backtick and tilde fences, including unclosed ones", () => {
    const result = md(
      ["# Real", "```", "# fake", "```", "~~~", "## fake", "~~~", "## Also real", "```python", "# fake"].join("\n")
    )
    assert.deepStrictEqual(result.headings, [
      { level: 1, text: "Real" },
      { level: 2, text: "Also real" }
    ])
    assert.deepStrictEqual(result.codeLanguages, { python: 1 })
  })

  it("does not close a fence with the other fence character or a shorter run", () => {
    const result = md(["````", "```", "# fake", "~~~~", "# fake", "````", "# Real"].join("\n"))
    assert.deepStrictEqual(result.headings, [{ level: 1, text: "Real" }])
  })

  it("follows CommonMark ATX rules", () => {
    const result = md(["#NoSpace", "####### seven", "    # indented code", "### Closing ###", "## C#", "#"].join("\n"))
    assert.deepStrictEqual(result.headings, [
      { level: 3, text: "Closing" },
      { level: 2, text: "C#" }
    ])
  })

  it("reads setext headings, not list items, thematic breaks or HTML blocks", () => {
    const result = md(
      [
        "Multi line",
        "title",
        "===",
        "",
        "---",
        "",
        "- item",
        "---",
        "",
        '<p align="center">',
        "---",
        "",
        "Sub",
        "- - -",
        "",
        "Second **level**",
        "------"
      ].join("\n")
    )
    assert.deepStrictEqual(result.headings, [
      { level: 1, text: "Multi line title" },
      { level: 2, text: "Second level" }
    ])
  })

  it("strips links, emphasis, escapes and badges from heading text", () => {
    const result = md(
      "# [Effect](https://effect.website) is \\*great\\* _really_ `code` [![npm](https://img/x)](https://npm/x)"
    )
    assert.deepStrictEqual(result.headings, [{ level: 1, text: "Effect is *great* really code" }])
    assert.strictEqual(md("# ![Logo](logo.svg)").title, "Logo")
  })

  it("falls back to front matter, then an inline HTML <h1>, for the title", () => {
    assert.strictEqual(md("---\ntitle: 'From YAML'\n---\n## Section").title, "From YAML")
    assert.strictEqual(
      md('<h1 align="center">\n  <img src="x.png" alt="Logo">\n  Pretty\n</h1>\n\ntext').title,
      "Pretty"
    )
    assert.strictEqual(md("## Only level two").title, null)
  })
})

describe("entity decoding", () => {
  it("decodes named, decimal and hex references; leaves unknown ones", () => {
    const result = html(
      "<h1>&amp; &lt; &gt; &quot; &#39; &apos; a&nbsp;b &#169; &#x1F600; &copy; &bogus; &#0; &#xD800;</h1>"
    )
    assert.strictEqual(result.headings[0]?.text, "& < > \" ' ' a b © 😀 © &bogus; \ufffd \ufffd")
  })

  it("decodes entities in markdown headings and URLs", () => {
    const result = md("# Q&amp;A &#8212; FAQ\n\nhttps://x.example/?a=1&amp;b=2")
    assert.strictEqual(result.title, "Q&A — FAQ")
    assert.deepStrictEqual(result.links, ["https://x.example/?a=1&b=2"])
  })

  it("keeps entity text literal in plain text", () => {
    assert.deepStrictEqual(text("see https://x.example/?a=1&amp;b=2").links, ["https://x.example/?a=1&amp;b=2"])
  })
})

describe("links", () => {
  it("trims trailing punctuation and unbalanced parens, keeps balanced ones", () => {
    const result = text(
      [
        "(see https://a.example/x).",
        "https://b.example/y, https://c.example/z; https://d.example/w: https://e.example/v!",
        "https://en.wikipedia.org/wiki/Foo_(bar) and (https://en.wikipedia.org/wiki/Baz_(qux))",
        '"https://f.example/q" <https://g.example/> **https://h.example/s**'
      ].join("\n")
    )
    assert.deepStrictEqual(result.links, [
      "https://a.example/x",
      "https://b.example/y",
      "https://c.example/z",
      "https://d.example/w",
      "https://e.example/v",
      "https://en.wikipedia.org/wiki/Foo_(bar)",
      "https://en.wikipedia.org/wiki/Baz_(qux)",
      "https://f.example/q",
      "https://g.example/",
      "https://h.example/s"
    ])
  })

  it("deduplicates in order of first appearance and skips non-http schemes", () => {
    const result = md(
      "[a](https://one.example) ftp://files.example [b](https://two.example) https://one.example " +
        "[c](mailto:x@y.example) [d](/relative) http:// https://one.example"
    )
    assert.deepStrictEqual(result.links, ["https://one.example", "https://two.example"])
  })

  it("collects markdown link destinations with titles and reference definitions", () => {
    const result = md('[a](https://a.example "Title") [b][ref]\n\n[ref]: https://ref.example/path "t"')
    assert.deepStrictEqual(result.links, ["https://a.example", "https://ref.example/path"])
  })
})

describe("emails", () => {
  it("lowercases and deduplicates, rejecting lookalikes", () => {
    const result = text(
      "Mail John.Doe+tag@Example.COM, john.doe+tag@example.com or ops@sub.example.co.uk. " +
        "Not: logo@2x.png effect@3.1.0 @effect/vitest user@localhost a@b.c trailing.@x.example"
    )
    assert.deepStrictEqual(result.emails, ["john.doe+tag@example.com", "ops@sub.example.co.uk"])
  })
})

describe("dates", () => {
  it("rejects invalid calendar dates", () => {
    const result = text(
      "2024-13-45 2024-00-10 2024-04-31 2023-02-29 1900-02-29 0000-01-01 February 30, 2024 31 April 2024 " +
        "2024-02-29 2000-02-29"
    )
    assert.deepStrictEqual(result.dates, ["2024-02-29", "2000-02-29"])
  })

  it("normalises spelled-out dates and keeps order of first appearance", () => {
    const result = text(
      "On 3 March 2024, then March 3, 2024, Sept. 9th, 2021, 1st of jan 2020, 2019-05-06T10:00:00Z, " +
        "Dec\n25, 2018 and 2024-03-03 again"
    )
    assert.deepStrictEqual(result.dates, ["2024-03-03", "2021-09-09", "2020-01-01", "2019-05-06", "2018-12-25"])
  })

  it("does not read version numbers or longer digit runs as dates", () => {
    assert.deepStrictEqual(text("v1.2024-01-01 12024-01-01 2024-01-012 May 2024 the 5 may").dates, [])
  })
})

describe("words and keywords", () => {
  it("removes stop words, short words and numbers; ties break alphabetically", () => {
    const result = text(
      "The zebra and the apple. Zebra, zebra! Apple mango the and of to is it 42 1999 x1 ab " +
        "mango's zebra’s well-known well-known"
    )
    assert.deepStrictEqual(result.keywords, [
      { word: "zebra", count: 4 },
      { word: "apple", count: 2 },
      { word: "mango", count: 2 },
      { word: "well-known", count: 2 }
    ])
    assert.strictEqual(result.wordCount, 23)
  })

  it("keeps the top 10 only", () => {
    const words = Array.from({ length: 15 }, (_, i) => `word${String.fromCharCode(97 + i)} `.repeat(20 - i))
    const result = text(words.join(" "))
    assert.strictEqual(result.keywords.length, 10)
    assert.deepStrictEqual(result.keywords[0], { word: "worda", count: 20 })
    assert.deepStrictEqual(result.keywords[9], { word: "wordj", count: 11 })
  })

  it("excludes code blocks, link destinations, images, URLs and tags from markdown word counts", () => {
    const result = md(
      [
        "Hello [visible text](https://hidden.example/path) ![alt text](img.png) <b>bold</b>",
        "https://bare.example/url mail@example.com `inline code`",
        "```js",
        "const notCounted = true",
        "```"
      ].join("\n")
    )
    // Hello visible text bold inline code
    assert.strictEqual(result.wordCount, 6)
  })

  it("counts Unicode words", () => {
    assert.strictEqual(text("Ça coûte très cher — naïve café, 東京 Ελληνικά").wordCount, 8)
  })
})

describe("mergeBatch", () => {
  const docs = [
    extractDocument("sample.md", fixture("sample.md")),
    extractDocument("sample.html", fixture("sample.html")),
    extractDocument("sample.txt", fixture("sample.txt")),
    md("no title here\n\nhttps://baton.dev/guide and durable durable durable\n\n```ts\nx\n```")
  ]

  it("sums counts and counts distinct links, emails and dates", () => {
    const summary = mergeBatch(docs)
    assert.strictEqual(summary.documents, 4)
    assert.deepStrictEqual(summary.formats, { markdown: 2, html: 1, text: 1 })
    assert.strictEqual(
      summary.bytes,
      docs.reduce((n, doc) => n + doc.bytes, 0)
    )
    assert.strictEqual(summary.words, 56 + 32 + 16 + docs[3]!.wordCount)
    assert.strictEqual(summary.headings, 5 + 3)
    assert.strictEqual(summary.missingTitles, 1)
    // 7 markdown + 3 html + 1 text; the last document's link repeats the first's
    assert.strictEqual(summary.links, 11)
    // maintainers, team, ops, support, help
    assert.strictEqual(summary.emails, 5)
    // 2024-03-03, 2024-03-05, 2024-04-07, 2024-12-31
    assert.strictEqual(summary.dates, 4)
    assert.strictEqual(summary.earliestDate, "2024-03-03")
    assert.strictEqual(summary.latestDate, "2024-12-31")
    assert.deepStrictEqual(summary.codeLanguages, { bash: 2, md: 1, ts: 4 })
    assert.deepStrictEqual(Object.keys(summary.codeLanguages), ["bash", "md", "ts"])
    // Summed from each document's top 10: durable 1 + 2 + 3, baton 2 + 1 + 1, then ties at 2 in word order
    assert.deepStrictEqual(summary.keywords.slice(0, 5), [
      { word: "durable", count: 6 },
      { word: "baton", count: 4 },
      { word: "contact", count: 2 },
      { word: "docs", count: 2 },
      { word: "guide", count: 2 }
    ])
    assert.isAtMost(summary.keywords.length, 20)
  })

  it("is independent of input order", () => {
    const forward = mergeBatch(docs)
    assert.deepStrictEqual(mergeBatch([...docs].reverse()), forward)
    assert.strictEqual(JSON.stringify(mergeBatch([docs[2]!, docs[0]!, docs[3]!, docs[1]!])), JSON.stringify(forward))
  })

  it("summarises an empty batch", () => {
    assert.deepStrictEqual(mergeBatch([]), {
      documents: 0,
      formats: { markdown: 0, html: 0, text: 0 },
      bytes: 0,
      words: 0,
      headings: 0,
      missingTitles: 0,
      links: 0,
      emails: 0,
      dates: 0,
      earliestDate: null,
      latestDate: null,
      codeLanguages: {},
      keywords: []
    })
  })

  it("round-trips through the BatchSummary schema", () => {
    const summary = mergeBatch(docs)
    const json = Schema.encodeSync(Schema.parseJson(BatchSummary))(summary)
    assert.deepStrictEqual(Schema.decodeUnknownSync(Schema.parseJson(BatchSummary))(json), summary)
  })
})

describe("robustness", () => {
  it("is deterministic", () => {
    assert.deepStrictEqual(md(fixture("sample.md")), md(fixture("sample.md")))
  })

  // No wall-clock assert (it fails on a loaded machine); the linearity guard is "stays linear on adversarial input".
  it("extracts a ~1 MB markdown document correctly", () => {
    const section = (i: number) =>
      `## Section ${i}\n\nDurable prose with a [link](https://example.com/page/${i % 100}) and ` +
      `https://bare.example.org/x, mail Owner${i % 10}@Example.com on 2024-03-${String((i % 28) + 1).padStart(2, "0")}.\n\n` +
      "```ts\nconst x = 1 // # not a heading\n```\n\n" +
      '<p align="center"><img src="x.png" alt="y"></p>\n\n'
    const parts = ["# Big\n\n"]
    let size = parts[0]!.length
    let sections = 0
    while (size < 1_000_000) {
      const next = section(sections++)
      parts.push(next)
      size += next.length
    }
    const content = parts.join("")
    const result = md(content)
    assert.strictEqual(result.headings.length, sections + 1)
    assert.strictEqual(result.title, "Big")
    assert.deepStrictEqual(result.codeLanguages, { ts: sections })
    assert.strictEqual(result.links.length, 101)
    assert.strictEqual(result.emails.length, 10)
    assert.strictEqual(result.dates.length, 28)
    // Big · per section: Section i, Durable prose with a link and, mail on <date>
    assert.strictEqual(result.wordCount, 1 + sections * 11)
    assert.deepStrictEqual(result.keywords[0], { word: "durable", count: sections })
  })

  it("is total: random markup soup always yields a decodable extract", () => {
    const pieces = [..."<>/!-#=*_`~[]()&;:@.,\"' \n\tax09é"].concat([
      "https://",
      "http://a.b",
      "mailto:",
      "<!--",
      "-->",
      "<h1>",
      "</h2>",
      "<script>",
      "<pre>",
      "```ts\n",
      "~~~",
      "&amp;",
      "&#x",
      "&#1114112;",
      "2024-02-29",
      "March 3, 2024",
      "x@y.io",
      "\ud800",
      "---\n",
      "===\n"
    ])
    let seed = 42
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
      return seed / 2_147_483_648
    }
    for (let run = 0; run < 300; run++) {
      const length = Math.floor(random() * 300)
      const content = Array.from({ length }, () => pieces[Math.floor(random() * pieces.length)]!).join("")
      for (const path of ["x.md", "x.html", "x.txt"]) {
        const result = decodeExtract(extractDocument(path, content))
        assert.deepStrictEqual(extractDocument(path, content), result)
      }
    }
  })

  it("does not overflow the regexp backtrack stack on multi-megabyte runs", () => {
    const inputs: Array<readonly [string, string, number]> = [
      // A thematic break: no prose.
      ["x.md", "-".repeat(4_000_000), 0],
      // 3,000,001 letters joined by hyphens; a word joins at most 32 parts (the bound that keeps WORD linear).
      ["x.txt", "a-".repeat(3_000_000) + "a", Math.ceil(3_000_001 / 32)],
      // An unclosed link destination is prose: one 6,000,000-letter word.
      ["x.md", "](" + "a".repeat(6_000_000), 1],
      ["x.md", "](" + "(a)".repeat(1_500_000), 1_500_000]
    ]
    for (const [path, input, words] of inputs) {
      assert.strictEqual(extractDocument(path, input).wordCount, words, `${path}: ${input.slice(0, 12)}`)
    }
  })

  // A ReDoS guard without a wall-clock limit: each input is extracted at n and at 8n repetitions of its unit, and the
  // 8n run may take at most 32 times the n run (linear work is 8 times, quadratic 64 times; at these sizes a
  // quadratic pattern takes far longer still). CPU time of this process, not wall time, so a loaded machine does
  // not count; the n run's time is floored at 5 ms so that sub-millisecond noise cannot fail it.
  it("stays linear on adversarial input", () => {
    const formats = ["x.md", "x.html", "x.txt"] as const
    // [prefix, unit, repetitions at 8n, suffix, the word count at r repetitions in a format]
    const inputs: Array<readonly [string, string, number, string, (n: number, path: string) => number]> = [
      ["", "a@", 200_000, "", (n) => n],
      ["", "![x](", 80_000, "", (n) => n],
      ["", "<a ", 130_000, "", (n, path) => (path === "x.html" ? 0 : n)],
      ["", "[", 400_000, "", () => 0],
      ["", "](", 200_000, "", () => 0],
      ["", "<!--", 100_000, "", () => 0],
      ["", "https://", 50_000, "", () => 0],
      ["#".repeat(10), " ", 400_000, "x", () => 1],
      ["", "_", 400_000, "", () => 0],
      ["", "&#1", 130_000, "", (n) => n],
      // A word joins at most 32 hyphenated parts.
      ["", "a-", 200_000, "!", (n) => Math.ceil(n / 32)],
      ["", "1 March ", 50_000, "", (n) => 2 * n]
    ]
    const cpuMs = (f: () => void): number => {
      let best = Infinity
      for (let i = 0; i < 2; i++) {
        const started = process.cpuUsage()
        f()
        const used = process.cpuUsage(started)
        best = Math.min(best, (used.user + used.system) / 1000)
      }
      return best
    }
    for (const [prefix, unit, repetitions, suffix, words] of inputs) {
      for (const path of formats) {
        const label = `${path}: ${JSON.stringify(prefix + unit)}`
        const small = prefix + unit.repeat(repetitions / 8) + suffix
        const large = prefix + unit.repeat(repetitions) + suffix
        let atSmall = 0
        let atLarge = 0
        const tSmall = cpuMs(() => (atSmall = decodeExtract(extractDocument(path, small)).wordCount))
        const tLarge = cpuMs(() => (atLarge = decodeExtract(extractDocument(path, large)).wordCount))
        assert.isBelow(tLarge, 32 * Math.max(tSmall, 5), `${label}: ${tSmall} ms at n, ${tLarge} ms at 8n`)
        assert.strictEqual(atSmall, words(repetitions / 8, path), `${label} at n`)
        assert.strictEqual(atLarge, words(repetitions, path), `${label} at 8n`)
      }
    }
  })
})

describe("real READMEs", () => {
  // Package READMEs from node_modules: top-level and scoped packages, sorted for a stable sample.
  const readmes = (): Array<string> => {
    const root = Path.resolve(here, "..", "node_modules")
    const packages: Array<string> = []
    for (const entry of Fs.readdirSync(root).sort()) {
      if (entry.startsWith(".")) continue
      if (entry.startsWith("@")) {
        for (const scoped of Fs.readdirSync(Path.join(root, entry)).sort())
          packages.push(Path.join(root, entry, scoped))
      } else packages.push(Path.join(root, entry))
    }
    return packages.map((dir) => Path.join(dir, "README.md")).filter((file) => Fs.existsSync(file))
  }

  it("extracts 50 README.md files from node_modules into valid extracts", () => {
    const files = readmes().slice(0, 50)
    assert.strictEqual(files.length, 50)
    const extracts: Array<DocumentExtract> = []
    for (const file of files) {
      const extract = decodeExtract(extractDocument(file, Fs.readFileSync(file, "utf8")))
      assert.strictEqual(extract.format, "markdown", file)
      assert.isAbove(extract.wordCount, 0, file)
      extracts.push(extract)
    }
    const summary = Schema.decodeUnknownSync(BatchSummary)(mergeBatch(extracts))
    assert.strictEqual(summary.documents, 50)
  })
})
