/** Baton's Postgres migrations, in order. Add a file under ./pg and a line here; never edit a shipped one. */
import m0001 from "./pg/0001_tasks.js"
import m0002 from "./pg/0002_completions_retention.js"
import m0003 from "./pg/0003_checkpoints.js"
import m0004 from "./pg/0004_chords.js"
import m0005 from "./pg/0005_runs_extracts.js"
import m0006 from "./pg/0006_lean_task_indexes.js"
import m0007 from "./pg/0007_chord_deadline.js"
import m0008 from "./pg/0008_trace_context.js"
import m0009 from "./pg/0009_ops.js"
import m0010 from "./pg/0010_progress_workers.js"
import m0011 from "./pg/0011_nested_chords.js"
import m0012 from "./pg/0012_succeed_bodies.js"

export const pgMigrations = {
  "0001_tasks": m0001,
  "0002_completions_retention": m0002,
  "0003_checkpoints": m0003,
  "0004_chords": m0004,
  "0005_runs_extracts": m0005,
  "0006_lean_task_indexes": m0006,
  "0007_chord_deadline": m0007,
  "0008_trace_context": m0008,
  "0009_ops": m0009,
  "0010_progress_workers": m0010,
  "0011_nested_chords": m0011,
  "0012_succeed_bodies": m0012
}
