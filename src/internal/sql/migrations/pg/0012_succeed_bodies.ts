/**
 * `baton_succeed_bodies`: the finish path of a batch of successes that holds chord body tasks, as ONE autocommitted
 * call (one round trip and the commit) instead of a transaction of up to six round trips while the chord row is
 * locked (BEGIN, the guarded update, the counter, the body tally, the guarded dispatch, COMMIT). It runs the same
 * steps in the same order (`finishPath.ts`, `chordLedger.ts`):
 *
 * 1–2. the guarded UPDATE of the task rows, their completions-log rows (in request order);
 * 3.   one counter bump per chord, in chord id order (the same lock order as the general path);
 * 4.   for a chord the count completes — every body task succeeded, and its callback row was sealed with a dispatch
 *      template (`fast`, written at chord creation) — the tally (a new statement: a new snapshot, which sees every
 *      transaction that counted before this one got the row lock), the guarded dispatch, the callback insert (already
 *      leased to the committing worker when its offer `p_offer` fits: the hand-off), its wake-up, the log rows.
 *
 * Anything else that decides a chord here (a body failure, counters that drifted from the task rows, a callback
 * idempotency key held by another task, a chord sealed before this migration) raises SQLSTATE `BTN01`: the call rolls
 * back whole and the caller runs the general path in a transaction (`taskQueue.ts`), which handles every case.
 *
 * `enable_seqscan = off` while it runs: plpgsql caches its statements' plans, and a generic plan chosen while the tables
 * were small (a sequential scan) would be kept while they grow; every statement here has an index to use.
 *
 * The request is the one of the plain completion statement: `{ id: { o: position, l: { leaseId: result } } }`.
 * Returns `{ done: [finished rows], dispatched: [{ chord, created_at, last_body_at, leased, task }] }`.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql.unsafe(`CREATE FUNCTION baton_succeed_bodies(
      p_req jsonb, p_ids text[], p_now bigint, p_completions text, p_tasks text, p_offer jsonb
    ) RETURNS jsonb LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
  v_done jsonb;
  v_max bigint;
  v_seq bigint;
  v_dispatched jsonb := '[]'::jsonb;
  v_free int := COALESCE((p_offer ->> 'free')::int, 0);
  v_chord record;
  ch baton_chords%ROWTYPE;
  v_total bigint;
  v_succeeded bigint;
  v_results text;
  v_fast jsonb;
  v_row jsonb;
  v_run_at bigint;
  v_leased boolean;
  v_task baton_tasks%ROWTYPE;
BEGIN
  WITH done AS (
    UPDATE baton_tasks t SET state = 'succeeded', result = p_req -> t.id -> 'l' ->> t.lease_id,
      lease_id = NULL, lease_expires_at = NULL, finished_at = p_now, updated_at = p_now
    WHERE t.id = ANY(p_ids) AND (p_req -> t.id -> 'l' ->> t.lease_id) IS NOT NULL AND t.state = (SELECT 'running')
    RETURNING t.id, t.name, t.queue, t.namespace, t.tags, t.chord_id, t.chord_index, t.run_id,
      (p_req -> t.id ->> 'o')::int AS ord
  ), log AS (
    INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
    SELECT 'task', id, name, queue, namespace, tags, 'succeeded', chord_id, run_id, p_now FROM done ORDER BY ord
    RETURNING seq
  )
  SELECT (SELECT COALESCE(jsonb_agg(to_jsonb(d) ORDER BY d.ord), '[]'::jsonb) FROM done d),
    (SELECT max(seq) FROM log)
  INTO v_done, v_max;

  FOR v_chord IN SELECT d.chord_id, count(*) AS n FROM jsonb_to_recordset(v_done) AS d(chord_id text)
      WHERE d.chord_id IS NOT NULL GROUP BY d.chord_id ORDER BY d.chord_id LOOP
    UPDATE baton_chords SET succeeded = succeeded + v_chord.n, last_body_at = p_now
      WHERE id = v_chord.chord_id RETURNING * INTO ch;
    CONTINUE WHEN NOT FOUND;
    IF ch.state <> 'running' THEN
      IF ch.body_open = 1 AND ch.succeeded + ch.failed + ch.cancelled >= ch.expected THEN
        UPDATE baton_chords SET body_open = 0 WHERE id = ch.id;
      END IF;
      CONTINUE;
    END IF;
    CONTINUE WHEN ch.succeeded + ch.failed + ch.cancelled < ch.expected
      AND NOT (ch.failure_policy = 'fail' AND ch.failed + ch.cancelled > 0);
    v_fast := ch.callback::jsonb -> 'fast';
    IF v_fast IS NULL OR ch.failed + ch.cancelled > 0 THEN
      RAISE EXCEPTION 'chord % is settled by the general path', ch.id USING ERRCODE = 'BTN01';
    END IF;
    SELECT count(*), count(*) FILTER (WHERE state = 'succeeded'),
        string_agg(CASE WHEN ch.failure_policy = 'continue'
          THEN '{"_tag":"Success","taskId":' || to_json(id)::text || ',"value":' || COALESCE(result, 'null') || '}'
          ELSE COALESCE(result, 'null') END, ',' ORDER BY chord_index)
      INTO v_total, v_succeeded, v_results
      FROM baton_tasks WHERE chord_id = ch.id;
    IF v_total <> ch.expected OR v_succeeded <> v_total OR v_succeeded <> ch.succeeded THEN
      RAISE EXCEPTION 'chord % is settled by the general path', ch.id USING ERRCODE = 'BTN01';
    END IF;
    v_run_at := COALESCE((v_fast ->> 'runAt')::bigint, p_now + COALESCE((v_fast ->> 'delayMs')::bigint, 0));
    v_row := (v_fast -> 'row') || jsonb_build_object('id', gen_random_uuid()::text,
      'payload', '{"results":[' || COALESCE(v_results, '') || ']' || (v_fast ->> 'suffix'),
      'run_at', v_run_at, 'created_at', p_now, 'updated_at', p_now);
    v_leased := COALESCE(v_free > 0 AND (p_offer -> 'names') ? (v_row ->> 'name')
      AND (p_offer -> 'queues') ? (v_row ->> 'queue') AND v_run_at <= p_now
      AND NOT EXISTS (SELECT 1 FROM baton_queues q WHERE q.queue = v_row ->> 'queue'), false);
    IF v_leased THEN
      v_free := v_free - 1;
      v_row := v_row || jsonb_build_object('state', 'running', 'attempts', 1, 'lease_id', gen_random_uuid()::text,
        'lease_expires_at', p_now + (p_offer ->> 'ms')::bigint, 'worker_id', p_offer ->> 'w', 'started_at', p_now);
    END IF;
    UPDATE baton_chords SET state = 'completed', dispatched_at = p_now, healed = 0, callback_task_id = v_row ->> 'id'
      WHERE id = ch.id AND state = 'running' AND dispatched_at IS NULL;
    CONTINUE WHEN NOT FOUND;
    INSERT INTO baton_tasks (id, name, queue, namespace, tags, payload, state, priority, attempts, max_attempts,
        timeout_ms, backoff, run_at, idempotency_key, chord_id, chord_index, run_id, created_at, updated_at,
        trace_context, lease_id, lease_expires_at, worker_id, started_at)
      SELECT id, name, queue, namespace, tags, payload, state, priority, attempts, max_attempts,
        timeout_ms, backoff, run_at, idempotency_key, chord_id, chord_index, run_id, created_at, updated_at,
        trace_context, lease_id, lease_expires_at, worker_id, started_at
      FROM jsonb_populate_record(NULL::baton_tasks, v_row)
      ON CONFLICT DO NOTHING RETURNING * INTO v_task;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'chord % callback key is held by another task', ch.id USING ERRCODE = 'BTN01';
    END IF;
    IF NOT v_leased THEN
      PERFORM pg_notify(p_tasks, v_task.queue);
    END IF;
    WITH log AS (
      INSERT INTO baton_completions (kind, task_id, task_name, queue, namespace, tags, outcome, chord_id, run_id, at)
        VALUES ('chord.completed', NULL, NULL, NULL, ch.namespace, ch.tags, 'succeeded', ch.id, NULL, p_now),
          ('chord.callback.enqueued', v_task.id, v_task.name, v_task.queue, ch.namespace, ch.tags, 'succeeded', ch.id,
            NULL, p_now)
        RETURNING seq
    ) SELECT max(seq) INTO v_seq FROM log;
    v_max := GREATEST(v_max, v_seq);
    v_dispatched := v_dispatched || jsonb_build_array(jsonb_build_object('chord', ch.id, 'name', ch.callback_name,
      'expected', ch.expected, 'created_at', ch.created_at, 'last_body_at', ch.last_body_at, 'leased', v_leased,
      'task', to_jsonb(v_task)));
  END LOOP;

  IF v_max IS NOT NULL THEN
    PERFORM pg_notify(p_completions, v_max::text);
  END IF;
  RETURN jsonb_build_object('done', v_done, 'dispatched', v_dispatched);
END
$fn$`)
})
