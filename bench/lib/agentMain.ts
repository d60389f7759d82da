/** Entry point of an agent process: `node --import tsx bench/lib/agentMain.ts <peer>` serves bench/peers/<peer>.ts. */
import { serve } from "./agent.js"

const name = process.argv[2]
if (name === undefined || !/^[a-z0-9-]+$/.test(name)) {
  console.error("usage: agentMain.ts <peer>")
  process.exit(2)
}
const module = (await import(`../peers/${name}.js`)) as { commands: Record<string, (args: any) => unknown> }
serve(module.commands)
