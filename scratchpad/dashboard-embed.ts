// The docs/dashboard.md "Embedding it" example, type-checked (and runnable: `npx tsx scratchpad/dashboard-embed.ts`).
import { Effect, Layer } from "effect"
import { Baton, Dashboard } from "../src/index.js"

const app = Dashboard.layer({ port: 4400, allowActions: false, token: process.env.BATON_DASHBOARD_TOKEN })
Layer.launch(app.pipe(Layer.provide(Baton.layerPg({ url: process.env.DATABASE_URL! })))).pipe(Effect.runPromise)
