#!/bin/bash
# A/B of a bench scenario between two checkouts, alternated A B A B: A = /work/ab-a (e.g. `git worktree add --detach
# /work/ab-a <rev>` + `ln -s "$PWD/node_modules" /work/ab-a/node_modules`), B = this checkout.
# Usage: N=2 bash scratchpad/ab.sh <label> <bench args...>   → /work/ab/<label>-{A,B}-<i>/log.txt
label=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
for i in $(seq 1 "${N:-2}"); do
  for side in A B; do
    dir=/work/ab-a; [ "$side" = B ] && dir=$here
    out=/work/ab/$label-$side-$i
    mkdir -p "$out"
    (cd "$dir" && BENCH_DB_PREFIX="ab_$(echo $side | tr A-Z a-z)" BENCH_RESULTS_DIR="$out" npx tsx bench/run.ts "$@" > "$out/log.txt" 2>&1)
    echo "$side $i load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
