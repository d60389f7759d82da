#!/usr/bin/env bash
# Measures `baton demo` throughput (documents/second, as printed in its summary: documents of the run / time from
# the run's start to its end, process start-up excluded).
#   [DEMO_ARGS="--batch-size 100"] scratchpad/demo-bench.sh sqlite|pg  in-process|<N worker processes>  [repeats]
set -u
cd "$(dirname "$0")/.."
backend=$1; mode=$2; repeats=${3:-3}
for r in $(seq 1 "$repeats"); do
  tag="bench_$$_$r"
  if [ "$backend" = pg ]; then
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test BATON_PG_SCHEMA="demo_$tag"; unset BATON_DB
  else
    unset DATABASE_URL BATON_PG_SCHEMA; export BATON_DB="/tmp/$tag.db"; rm -f "$BATON_DB"*
  fi
  pids=()
  if [ "$mode" = in-process ]; then
    args=()
  else
    args=(--workers 0)
    for w in $(seq 1 "$mode"); do
      node dist/bin.js worker --concurrency 8 > "/tmp/$tag.w$w.log" 2>&1 &
      pids+=($!)
    done
    # Wait until every worker is up (migrations done, claiming).
    for w in $(seq 1 "$mode"); do
      until grep -q "Ctrl-C to stop" "/tmp/$tag.w$w.log" 2>/dev/null; do sleep 0.2; done
    done
  fi
  node dist/bin.js demo "${args[@]}" ${DEMO_ARGS:-} > "/tmp/$tag.out" 2>&1
  rate=$(grep -o "throughput *│ [0-9.]* docs/s" "/tmp/$tag.out" | grep -o "[0-9.]* docs/s")
  elapsed=$(grep -o "elapsed *│ [0-9.a-z]*" "/tmp/$tag.out" | awk '{print $3}')
  for p in "${pids[@]}"; do kill -INT "$p"; done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "$backend $mode run $r: $rate (elapsed $elapsed, load $(cut -d' ' -f1 /proc/loadavg))"
  if [ "$backend" = pg ]; then
    node -e 'const pg = require("pg"); const c = new pg.Client(process.env.DATABASE_URL);
      c.connect().then(() => c.query(`DROP SCHEMA IF EXISTS "${process.env.BATON_PG_SCHEMA}" CASCADE`)).finally(() => c.end())'
  else
    rm -f "$BATON_DB"*
  fi
done
