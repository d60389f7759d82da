import * as Backends from "./support/backends.js"
import { completionBackendSuite } from "./suites/CompletionBackendSuite.js"

for (const backend of Backends.all()) completionBackendSuite(backend)
