#!/usr/bin/env bash
# Load benchmark of `warden serve` on loopback (figures in BENCHMARKS.md, "serve" section).
# Needs `oha` (cargo install oha) and python3. Never run from tests.
#   crates/warden-server/bench/load.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example noop
W=$CARGO_TARGET_DIR/release/warden
NOOP=$CARGO_TARGET_DIR/release/examples/noop
DIR=$(mktemp -d)
mkdir -p "$DIR/policies" "$DIR/logs"
cp examples/support-agent.yaml "$DIR/policies/"          # scenario 02's policy
cat > "$DIR/warden.yaml" <<YAML
listen: 127.0.0.1:18181
policies: policies
rate_limit: { per_second: 100000000, burst: 100000000 }
YAML
KEY=$("$W" keys create --tenant acme --policy support-agent --config "$DIR/warden.yaml" 2>/dev/null)
"$W" serve --config "$DIR/warden.yaml" 2> "$DIR/logs/serve.log" & WPID=$!
"$NOOP" 127.0.0.1:18282 & NPID=$!
trap 'kill $WPID $NPID 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
for pid in $WPID $NPID; do   # a port held by another process would be measured instead
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start (is 18181 or 18282 in use?)" >&2; exit 1; }
done
rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$1/status; }
echo "idle RSS: warden $(rss $WPID)"

BODY='{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}'
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }   # the process's user + system CPU
run() { # label url pid [extra oha args]
  local label=$1 url=$2 pid=$3 before; shift 3
  before=$(ticks "$pid")
  oha -z ${DUR}s -c 64 --no-tui --output-format json -m POST -T application/json \
    -H "x-api-key: $KEY" -d "$BODY" "$@" "$url" > "$DIR/oha.json"
  python3 - "$label" "$DIR/oha.json" "$before" "$(ticks "$pid")" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
cpu_us = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5]) * 1e6 / max(sum(codes.values()), 1)
print(f"{sys.argv[1]:<28} {s['requestsPerSec']:>9.0f} req/s  p50 {p['p50']*1e3:.3f} ms  "
      f"p99 {p['p99']*1e3:.3f} ms  p99.9 {p['p99.9']*1e3:.3f} ms  server CPU {cpu_us:.1f} µs/req  "
      f"status {codes}")
PY
}
rps() { python3 -c "import json;print(int(json.load(open('$DIR/oha.json'))['summary']['requestsPerSec']))"; }
for round in 1 2 3; do
  run "no-op axum (round $round)" http://127.0.0.1:18282/v1/decide $NPID
  rps >> "$DIR/noop-rps"
  run "warden (round $round)" http://127.0.0.1:18181/v1/decide $WPID
  rps >> "$DIR/rps"
done
# Each warden round against the no-op round just before it, then the median and the ratio of
# the totals (the machine is noisy: one round proves little).
python3 - "$DIR/noop-rps" "$DIR/rps" <<'PY'
import statistics, sys
noop = [int(x) for x in open(sys.argv[1])]; warden = [int(x) for x in open(sys.argv[2])]
ratios = [w / n for w, n in zip(warden, noop)]
print("warden / no-op per round: " + ", ".join(f"{r:.1%}" for r in ratios)
      + f"; median {statistics.median(ratios):.1%}; totals {sum(warden) / sum(noop):.1%}")
PY
MAX=$(sort -n "$DIR/rps" | tail -1)   # warden's best round
HALF=$((MAX / 2))
run "warden at $HALF req/s" http://127.0.0.1:18181/v1/decide $WPID -q $HALF --latency-correction

python3 - "$KEY" <<'PY'
import json, sys, urllib.request
key = sys.argv[1]
for b in range(100):
    batch = [{"session": f"load-{b}-{i}", "tool": "crm.read_customer", "args": {"id": i}} for i in range(1000)]
    req = urllib.request.Request("http://127.0.0.1:18181/v1/decide/batch", json.dumps(batch).encode(),
                                 {"content-type": "application/json", "x-api-key": key})
    urllib.request.urlopen(req).read()
PY
sleep 1
echo "sessions: $(curl -s http://127.0.0.1:18181/metrics | grep '^warden_sessions ')"
echo "RSS with 100k sessions: warden $(rss $WPID)"
