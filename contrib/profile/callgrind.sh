#!/usr/bin/env bash
# BENCHMARKS.md "Where the time goes": one benchmark run with the server
# under callgrind (instruction counts, repeatable on shared cores; the
# release profile keeps line tables). Run from the repository root:
#   bash contrib/profile/callgrind.sh realistic|publish [SECONDS]
# Prints the benchmark's JSON line, then instructions per event by thread
# family and for the writer's and the scheduler's main steps (inclusive
# counts of the functions each family's threads start in). Writes
# target/callgrind.MODE.PID.out; read it further with
#   callgrind_annotate --inclusive=yes target/callgrind.MODE.*.out
#   callgrind_annotate --tree=calling --inclusive=yes target/callgrind.MODE.*.out
# HOOKBOX_PROFILE_BIN=PATH profiles another build (to compare two builds'
# instruction counts, which unlike times do not drift with the machine).
# Under callgrind the server runs about 30 times slower and its threads one
# at a time: group commits are smaller than at full speed, and valgrind turns
# vDSO calls (clock_gettime) into system calls.
set -euo pipefail
mode=$1; seconds=${2:-10}
cargo build -q --release
bin=${HOOKBOX_PROFILE_BIN:-$PWD/target/release/hookbox}
wrapper=$PWD/target/hookbox-callgrind
cat > "$wrapper" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --collect-systime=nsec --dump-instr=no \
  --callgrind-out-file=$PWD/target/callgrind.$mode.%p.out $bin "\$@"
WRAP
chmod +x "$wrapper"
rm -f target/callgrind.$mode.*.out
HOOKBOX_BENCH_BIN=$wrapper cargo bench -q --bench publish -- \
  --mode "$mode" --connections 64 --duration "$seconds" 2>/dev/null | tail -1 \
  | tee target/callgrind.$mode.json
callgrind_annotate --inclusive=yes --threshold=100 target/callgrind.$mode.*.out 2>/dev/null \
  > target/callgrind.$mode.txt
python3 - "$mode" <<'SUMMARY'
import json, re, sys
mode = sys.argv[1]
events = json.load(open(f"target/callgrind.{mode}.json"))["events"]
counts = {}
for line in open(f"target/callgrind.{mode}.txt"):
    # Ir first, then the system-call columns of --collect-systime.
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)(?:\s+[\d,]+ \(\s*[\d.]+%\))*\s+(\S.*)$", line)
    if m:
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        n = int(m.group(1).replace(",", ""))
        counts[name] = max(n, counts.get(name, 0))
def find(pattern):
    return max((n for name, n in counts.items() if re.search(pattern, name)), default=0)
rows = [
    ("whole process", r"PROGRAM TOTALS"),
    ("connection threads (tiny_http, API)", r"lib\.rs:tiny_http::Server::from_listener_with_limits::\{\{closure\}\}::\{\{closure\}\}$"),
    ("writer", r"writer\.rs:(hookbox::store::writer::Writer::run|std::sys::backtrace::__rust_begin_short_backtrace)$"),
    ("  publish (event and deliveries)", r"events\.rs:hookbox::store::events::apply_publish$"),
    ("  attempt records", r"deliveries\.rs:hookbox::store::deliveries::apply_record_attempt$"),
    ("  BEGIN, COMMIT", r"writer\.rs:hookbox::store::writer::Writer::exec_cached$"),
    ("workers", r"worker\.rs:hookbox::delivery::worker::Worker::run$"),
    ("  ureq", r"run\.rs:ureq::run::run$"),
    ("  signing", r"sign\.rs:hookbox::delivery::sign::KeyCache::header$"),
    ("scheduler", r"scheduler\.rs:(std::sys::backtrace::__rust_begin_short_backtrace|hookbox::delivery::scheduler::Scheduler::run)$"),
    ("  due query", r"events\.rs:hookbox::store::events::due_for_webhook$"),
]
print(f"{events} events; instructions per event (thousands):")
for label, pattern in rows:
    print(f"  {label:40} {find(pattern) / events / 1000:7.1f}")
SUMMARY
