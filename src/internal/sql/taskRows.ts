/** The row a new task is inserted as, shared by enqueue (SqlTaskQueue) and chord dispatch (chordLedger). */
import type { RawEnqueue } from "../TaskQueue.js"

/** The columns a new task row sets, in insert order. */
export const insertColumns = [
  "id",
  "name",
  "queue",
  "namespace",
  "tags",
  "payload",
  "state",
  "priority",
  "attempts",
  "max_attempts",
  "timeout_ms",
  "backoff",
  "run_at",
  "idempotency_key",
  "chord_id",
  "chord_index",
  "run_id",
  "created_at",
  "updated_at"
] as const

/** A new task row (encoded values, JSON text for payload, tags and backoff). */
export interface InsertRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly namespace: string
  readonly tags: string
  readonly payload: string
  readonly state: "pending"
  readonly priority: number
  readonly attempts: number
  readonly max_attempts: number
  readonly timeout_ms: number | null
  readonly backoff: string | null
  readonly run_at: number
  readonly idempotency_key: string | null
  readonly chord_id: string | null
  readonly chord_index: number | null
  readonly run_id: string | null
  readonly created_at: number
  readonly updated_at: number
}

/** The defaults every new task gets: a fresh id, state pending, queue/namespace "default", 3 attempts, run now. */
export const toInsertRow = (request: RawEnqueue, now: number): InsertRow => ({
  id: crypto.randomUUID(),
  name: request.name,
  queue: request.queue ?? "default",
  namespace: request.namespace ?? "default",
  tags: JSON.stringify(request.tags ?? []),
  payload: JSON.stringify(request.payload ?? null),
  state: "pending",
  priority: request.priority ?? 0,
  attempts: 0,
  max_attempts: request.maxAttempts ?? 3,
  timeout_ms: request.timeoutMs ?? null,
  backoff: request.backoff === undefined ? null : JSON.stringify(request.backoff),
  run_at: request.runAt ?? now,
  idempotency_key: request.idempotencyKey ?? null,
  chord_id: request.chordId ?? null,
  chord_index: request.chordIndex ?? null,
  run_id: request.runId ?? null,
  created_at: now,
  updated_at: now
})
