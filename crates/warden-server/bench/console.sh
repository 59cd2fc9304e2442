#!/usr/bin/env bash
# The console's cost on deciding (issue 19, item 5; figures in BENCHMARKS.md, "Console"):
# decisions per second on loopback with no console viewer, then with 10 viewers reading the
# live stream as fast as they can (curl), rounds interleaved; then the daemon's memory with one
# viewer that never reads while the load runs (it must stay bounded: the viewer drops events).
# Needs `oha` on PATH, curl and python3. Never run from tests.
#   crates/warden-server/bench/console.sh [DURATION_SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
ROUNDS=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p warden-cli
W=$CARGO_TARGET_DIR/release/warden
DIR=$(mktemp -d)
mkdir -p "$DIR/policies"
cp examples/support-agent.yaml "$DIR/policies/"
cat > "$DIR/warden.yaml" <<YAML
listen: 127.0.0.1:18183
policies: policies
state: memory
rate_limit: { per_second: 100000000, burst: 100000000 }
console: { max_viewers: 32 }
YAML
KEY=$("$W" keys create --tenant acme --policy support-agent --config "$DIR/warden.yaml" 2>/dev/null)
ADMIN=$("$W" keys create --tenant ops --policy support-agent --role admin --config "$DIR/warden.yaml" 2>/dev/null)
"$W" serve --config "$DIR/warden.yaml" 2> "$DIR/serve.log" & WPID=$!
VIEWERS=()
cleanup() {
  for pid in "${VIEWERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill $WPID 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
sleep 1
kill -0 $WPID 2>/dev/null || { echo "warden did not start (is 18183 in use?)" >&2; exit 1; }
URL=http://127.0.0.1:18183
COOKIE=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
  -d "{\"key\":\"$ADMIN\"}" $URL/ui/login | tr -d '\r' | awk -F'[ ;]' 'tolower($1)=="set-cookie:" {print $2}')
[ -n "$COOKIE" ] || { echo "console login failed" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' /proc/$WPID/status; }   # kB

BODY='{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}'
cpu_ticks() { awk '{print $14 + $15}' /proc/$WPID/stat; }   # the daemon's user + system time
load() { # label -> prints req/s and the daemon's own CPU per decision (viewers' curl excluded)
  local t0; t0=$(cpu_ticks)
  oha -z "${DUR}s" -c 64 --no-tui --output-format json -m POST -T application/json \
    -H "x-api-key: $KEY" -d "$BODY" $URL/v1/decide > "$DIR/oha.json"
  python3 - "$1" "$DIR/oha.json" "$t0" "$(cpu_ticks)" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); s = d["summary"]; p = d["latencyPercentiles"]
n = sum(d.get("statusCodeDistribution", {}).values()) or 1
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]) * 1e6 / n
print(f"{sys.argv[1]:<24} {s['requestsPerSec']:>9.0f} req/s  p50 {p['p50']*1e3:.3f} ms  "
      f"p99 {p['p99']*1e3:.3f} ms  daemon CPU {cpu:.1f} us/decision  status {d.get('statusCodeDistribution', {})}")
PY
}
viewers_on() {
  for _ in $(seq 10); do
    curl -s -N -H "Cookie: $COOKIE" "$URL/ui/events" > "$DIR/viewer.$RANDOM" & VIEWERS+=($!)
  done
  sleep 0.5
}
viewers_off() {
  for pid in "${VIEWERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${VIEWERS[@]}" 2>/dev/null || true
  VIEWERS=()
  rm -f "$DIR"/viewer.*
  sleep 0.5
}
echo "idle RSS: $(rss) kB"
: > "$DIR/none"; : > "$DIR/ten"
for round in $(seq "$ROUNDS"); do
  load "no viewer (round $round)" | tee -a "$DIR/none"
  viewers_on
  load "10 viewers (round $round)" | tee -a "$DIR/ten"
  viewers_off
done
python3 - "$DIR/none" "$DIR/ten" <<'PY'
import re, statistics, sys
rate = lambda f: [float(m.group(1)) for l in open(f) if (m := re.search(r"(\d+) req/s", l))]
cpu = lambda f: [float(m.group(1)) for l in open(f) if (m := re.search(r"CPU ([\d.]+) us", l))]
none, ten = rate(sys.argv[1]), rate(sys.argv[2])
m0, m1 = statistics.median(none), statistics.median(ten)
print(f"median: no viewer {m0:.0f} req/s, 10 viewers {m1:.0f} req/s: {100 * (m0 - m1) / m0:+.1f}% lower")
c0, c1 = statistics.median(cpu(sys.argv[1])), statistics.median(cpu(sys.argv[2]))
print(f"median daemon CPU: no viewer {c0:.1f} us/decision, 10 viewers {c1:.1f} us/decision: {100 * (c1 - c0) / c0:+.1f}%")
PY

# One viewer that opens the stream and never reads: the daemon's memory under load with it.
python3 - "$COOKIE" > /dev/null <<'PY' & SLOW=$!
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 18183))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.sendall(f"GET /ui/events HTTP/1.1\r\nHost: x\r\nCookie: {sys.argv[1]}\r\n\r\n".encode())
time.sleep(3600)
PY
VIEWERS+=($SLOW)
sleep 0.5
before=$(rss)
load "1 viewer never reading"
after=$(rss)
dropped=$(curl -s $URL/metrics | awk '/^warden_console_events_dropped_total/ {print $2}')
echo "RSS with a viewer that never reads: ${before} kB before the load, ${after} kB after; events it missed: ${dropped}"
