#!/usr/bin/env bash
# Issue 14's search figures: a database of N events (default 1,000,000),
# each item.created for one of 10,000 consignors with one delivery, then
# GET /api/v1/events?data.consignor_id=X and /api/v1/deliveries?... timed
# (curl's time_total, median of 5) without an index and with
# --search-index data.consignor_id (whose creation time the log gives).
# Run from the repository root: bash contrib/search/measure.sh [N]
# Needs python3 and curl; everything stays in a temp dir on 127.0.0.1.
set -euo pipefail
n=${1:-1000000}
cargo build -q --release
bin=$PWD/target/release/hookbox
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
port=18431
api=http://127.0.0.1:$port/api/v1

start() {
  "$bin" serve --db "$dir/hookbox.db" --listen 127.0.0.1:$port --pause-delivery "$@" 2>"$dir/serve.log" &
  until grep -q 'listening on' "$dir/serve.log"; do sleep 0.05; done
  token=$(cat "$dir/hookbox.db.admin-token")
}
stop() { kill -TERM %1; wait %1 || true; }

start
curl -sf -X POST "$api/webhooks" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"url": "https://93.184.216.34/hook", "events": ["*"]}' >/dev/null
curl -sf -X POST "$api/events" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"event": "item.created", "data": {"item_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d", "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-000000000000", "event_id": "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9", "title": "Lamp", "price": "10.00"}}' >/dev/null
stop

python3 - "$dir/hookbox.db" "$n" <<'PY'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
conn = sqlite3.connect(db)
event = conn.execute("SELECT * FROM events").fetchone()
cols = [c[1] for c in conn.execute("PRAGMA table_info(events)")]
dcols = [c[1] for c in conn.execute("PRAGMA table_info(deliveries)")]
delivery = conn.execute("SELECT * FROM deliveries").fetchone()
A = "0123456789abcdefghjkmnpqrstvwxyz"
def ident(prefix, value):
    return prefix + "".join(A[(value >> (5 * i)) & 31] for i in range(25, -1, -1))
base = int(time.time() * 1000) - n
payload = bytes(event[cols.index("payload")])
template = payload.replace(b"7d6f1c2e-8a4b-4c3d-9e5f-000000000000", b"%CONSIGNOR%")
def rows():
    for i in range(n):
        ms = base + i
        eid = ident("evt_", (ms << 80) | i)
        consignor = "7d6f1c2e-8a4b-4c3d-9e5f-%012d" % (i % 10000)
        p = template.replace(b"%CONSIGNOR%", consignor.encode())
        p = p.replace(event[0].encode(), eid.encode())
        e = list(event); e[0] = eid; e[cols.index("payload")] = p; e[cols.index("created_at")] = ms
        e[cols.index("idempotency_key")] = None
        d = list(delivery); d[0] = ident("dlv_", (ms << 80) | i); d[1] = eid
        d[dcols.index("status")] = "succeeded"; d[dcols.index("next_attempt_at")] = None
        yield e, d
with conn:
    for e, d in rows():
        conn.execute("INSERT INTO events VALUES (%s)" % ",".join("?" * len(e)), e)
        conn.execute("INSERT INTO deliveries VALUES (%s)" % ",".join("?" * len(d)), d)
conn.close()
PY

timed() {
  for _ in 1 2 3 4 5; do
    curl -s -o "$dir/out.json" -w '%{time_total}\n' "$api/$1" -H "Authorization: Bearer $token"
  done | sort -n | sed -n 3p
}
report() {
  local c=7d6f1c2e-8a4b-4c3d-9e5f-000000004242
  local ev=$(timed "events?data.consignor_id=$c&limit=50")
  local found=$(python3 -c "import json;print(len(json.load(open('$dir/out.json'))['data']))")
  local dl=$(timed "deliveries?data.consignor_id=$c&status=succeeded&limit=50")
  echo "$1: events of one consignor ${ev}s (found $found of 100), its succeeded deliveries ${dl}s (median of 5, first page of 50)"
}
start
report "$n events, no index"
stop
start --search-index data.consignor_id
grep 'search index on' "$dir/serve.log" | sed 's/^.*search index/search index/'
report "$n events, --search-index data.consignor_id"
stop
ls -l "$dir/hookbox.db" | awk '{print "database: " $5 " bytes"}'
