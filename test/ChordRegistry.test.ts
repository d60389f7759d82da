import * as Backends from "./support/backends.js"
import { chordSuite } from "./suites/ChordSuite.js"

for (const backend of Backends.all()) chordSuite(backend)
