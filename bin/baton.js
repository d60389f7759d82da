#!/usr/bin/env node
// The package ships TypeScript sources; tsx loads them without a build step.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
