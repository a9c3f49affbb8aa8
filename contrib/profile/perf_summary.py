"""Summaries for contrib/profile/perf.sh.

  perf_summary.py switches PID SECONDS   per thread family over SECONDS:
                                         threads, voluntary and involuntary
                                         context switches, CPU ticks
  perf_summary.py report SCRIPT SWITCHES share of samples by thread family
                                         (user, kernel), then each family's
                                         top functions, inclusive
"""

import collections
import os
import re
import sys
import time

NUMBERED = re.compile(r"-\d+$")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")
# Frames worth naming in a family's list: ours and the crates on the hot
# path, the system calls, and the waits.
NAMED = re.compile(
    r"^(hookbox::|tiny_http::|ureq::|rusqlite::|crossbeam_channel::|"
    r"<std::sys::sync::condvar|__x64_sys_|sqlite3_step|sha2::)"
)


def family(comm):
    return NUMBERED.sub("", comm)


def read_tasks(pid):
    tasks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/status") as f:
                status = f.read()
            with open(f"{base}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)[1])
        tasks[tid] = (family(comm), vol, invol, int(stat[11]) + int(stat[12]))
    return tasks


def switches(pid, seconds):
    before = read_tasks(pid)
    time.sleep(float(seconds))
    after = read_tasks(pid)
    totals = collections.defaultdict(lambda: [0, 0, 0, 0])
    for tid, (fam, vol, invol, ticks) in after.items():
        if tid in before:
            t = totals[fam]
            t[0] += 1
            t[1] += vol - before[tid][1]
            t[2] += invol - before[tid][2]
            t[3] += ticks - before[tid][3]
    for fam, (n, vol, invol, ticks) in sorted(totals.items(), key=lambda x: -x[1][3]):
        print(fam, n, vol, invol, ticks)


def samples(path):
    current = None
    with open(path) as f:
        for line in f:
            if not line.strip():
                if current:
                    yield current
                current = None
            elif not line[0].isspace():
                current = (family(line.split()[0]), [])
            elif current is not None:
                parts = line.strip().split(" ", 1)
                if len(parts) == 2:
                    frame, dso = parts[1].rsplit(" (", 1) if " (" in parts[1] else (parts[1], "")
                    current[1].append((OFFSET.sub("", frame), dso))
    if current:
        yield current


def report(script, switches_path):
    by_family = collections.Counter()
    kernel = collections.Counter()
    inclusive = collections.defaultdict(collections.Counter)
    total = 0
    for fam, frames in samples(script):
        if not frames:
            continue
        total += 1
        by_family[fam] += 1
        if "kernel" in frames[0][1]:
            kernel[fam] += 1
        for name in {name for name, _ in frames}:
            if NAMED.match(name):
                inclusive[fam][name] += 1
    print(f"{total} samples (999 Hz, 3 s)")
    if os.path.exists(switches_path):
        print("\nfamily: threads, context switches (voluntary, involuntary), CPU ticks (1/100 s)")
        with open(switches_path) as f:
            print(f.read().rstrip())
    print("\nfamily: share of the server's samples, of which in the kernel")
    for fam, n in by_family.most_common():
        print(f"  {fam:12} {100 * n / total:5.1f}%  kernel {100 * kernel[fam] / n:4.0f}%")
    for fam, n in by_family.most_common(6):
        print(f"\n{fam}: functions by share of the family's samples (inclusive)")
        for name, k in inclusive[fam].most_common(18):
            print(f"  {100 * k / n:5.1f}%  {name[:110]}")


if __name__ == "__main__":
    if sys.argv[1] == "switches":
        switches(sys.argv[2], sys.argv[3])
    else:
        report(sys.argv[2], sys.argv[3])
