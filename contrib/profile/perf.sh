#!/usr/bin/env bash
# BENCHMARKS.md "Where the time goes": a sampling profile of the server at
# full speed, kernel included. The VM has no hardware counters, but perf's
# software clock (cpu-clock) samples fine. One benchmark run; 3 s in its
# middle are sampled with DWARF call graphs, and each thread's context
# switches and CPU ticks are read from /proc over the same 3 s.
# Run from the repository root:
#   bash contrib/profile/perf.sh realistic|publish
# Prints the benchmark's JSON line, then contrib/profile/perf_summary.py's
# report: CPU by thread family (user, kernel, switches), and for each
# family the functions holding the most of its samples (inclusive).
# Keeps target/perf.MODE.data for `perf report -i`.
set -euo pipefail
mode=$1
cargo build -q --release
cargo bench -q --bench publish --no-run 2>/dev/null
out=target/perf.$mode
cargo bench -q --bench publish -- --mode "$mode" --duration 8 2>/dev/null | tail -1 > "$out.json" &
bench=$!
# The benchmark starts its own server (target/release/hookbox); wait for
# the one that is under load, 4 s into the run.
until pid=$(pgrep -n -x hookbox); do sleep 0.05; done
sleep 4
pid=$(pgrep -n -x hookbox)
python3 contrib/profile/perf_summary.py switches "$pid" 3 > "$out.switches" &
perf record -q -e cpu-clock -F 999 --call-graph dwarf,32768 -p "$pid" \
  -o "$out.data" -- sleep 3 2>/dev/null
wait "$bench"
cat "$out.json"
wait
perf script -i "$out.data" 2>/dev/null > "$out.script"
python3 contrib/profile/perf_summary.py report "$out.script" "$out.switches"
