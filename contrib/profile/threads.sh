#!/usr/bin/env bash
# BENCHMARKS.md "Where the time goes": the server's CPU by thread family
# (http, worker, writer, scheduler, ...; the tiny_http connection threads
# are unnamed and show as `hookbox`) at full speed, from
# /proc/PID/task/*/stat sampled every 0.2 s while one benchmark runs.
# Run from the repository root:
#   bash contrib/profile/threads.sh realistic|publish
# Prints the benchmark's JSON line, then per family: threads, user and
# system clock ticks (each thread's last reading), and TOTAL from
# /proc/PID/stat, which also counts threads too short-lived to be sampled
# (the difference is theirs) and the start-up before the load.
set -euo pipefail
mode=$1
cargo build -q --release
sample() {
  local pid
  while ! pid=$(pgrep -n -f ' serve --db '); do sleep 0.05; done
  declare -A name ut st
  local total="" id n s t
  while [ -d /proc/$pid ]; do
    t=$(awk '{print $14, $15}' /proc/$pid/stat 2>/dev/null || true)
    [ -n "$t" ] && total=$t
    for t in /proc/$pid/task/*; do
      id=${t##*/}
      { read -r n < $t/comm; } 2>/dev/null || continue
      s=$(sed 's/.*) //' $t/stat 2>/dev/null | awk '{print $12, $13}') || continue
      [ -z "$s" ] && continue
      name[$id]=$n; ut[$id]=${s% *}; st[$id]=${s#* }
    done
    sleep 0.2
  done
  echo "TOTAL - $total"
  for id in "${!name[@]}"; do n=${name[$id]}; echo "${n%%-[0-9]*} ${ut[$id]} ${st[$id]}"; done |
    awk '{u[$1]+=$2; s[$1]+=$3; c[$1]++} END {for (k in u) print k, c[k], u[k], s[k]}' | sort
}
sample > target/threads.$mode.txt &
cargo bench -q --bench publish -- --mode "$mode" --connections 64 --duration 10 2>/dev/null | tail -1
wait
echo "family threads user_ticks system_ticks (CLK_TCK $(getconf CLK_TCK))"
cat target/threads.$mode.txt
