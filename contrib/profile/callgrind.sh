#!/usr/bin/env bash
# BENCHMARKS.md "Where the time goes": one benchmark run with the server
# under callgrind (instruction counts, repeatable on shared cores; the
# release profile keeps line tables). Run from the repository root:
#   bash contrib/profile/callgrind.sh realistic|publish [SECONDS]
# Writes target/callgrind.MODE.PID.out; read it with
#   callgrind_annotate --inclusive=yes target/callgrind.MODE.*.out
#   callgrind_annotate --tree=calling --inclusive=yes target/callgrind.MODE.*.out
# Under callgrind the server runs about 30 times slower and its threads one
# at a time: group commits are smaller than at full speed, and valgrind turns
# vDSO calls (clock_gettime) into system calls.
set -euo pipefail
mode=$1; seconds=${2:-10}
cargo build -q --release
wrapper=$PWD/target/hookbox-callgrind
cat > "$wrapper" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --collect-systime=nsec \
  --callgrind-out-file=$PWD/target/callgrind.$mode.%p.out $PWD/target/release/hookbox "\$@"
WRAP
chmod +x "$wrapper"
HOOKBOX_BENCH_BIN=$wrapper cargo bench -q --bench publish -- \
  --mode "$mode" --connections 64 --duration "$seconds" 2>/dev/null | tail -1
