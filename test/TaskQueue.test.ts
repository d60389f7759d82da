import * as Backends from "./support/backends.js"
import { taskQueueSuite } from "./suites/TaskQueueSuite.js"

for (const backend of Backends.all()) taskQueueSuite(backend)
