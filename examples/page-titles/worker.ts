/** The handlers of the page-titles contracts: what a worker process runs (`Worker.run({ tasks })`). */
import * as Effect from "effect/Effect"
import * as Task from "../../src/Task.js"
import { FetchFailed, FetchPage, MergePages } from "./contracts.js"

const titleOf = (html: string): string | null => {
  const match = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html)
  return match === null ? null : match[1]!.replace(/\s+/g, " ").trim()
}

export const FetchPageImpl = Task.implement(FetchPage, ({ url }) =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { signal })
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      const body = new Uint8Array(await response.arrayBuffer())
      return { url, title: titleOf(new TextDecoder().decode(body)), bytes: body.byteLength }
    },
    catch: (cause) => new FetchFailed({ url, reason: cause instanceof Error ? cause.message : String(cause) })
  })
)

export const MergePagesImpl = Task.implement(MergePages, ({ results }) =>
  Effect.succeed({
    pages: results.length,
    titled: results.filter((page) => page.title !== null).length,
    bytes: results.reduce((sum, page) => sum + page.bytes, 0)
  })
)

/** The tasks a worker of this workflow runs. */
export const tasks = [FetchPageImpl, MergePagesImpl] as const
