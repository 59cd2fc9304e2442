#!/usr/bin/env bash
# Like load.sh, with each side on its own core: both servers on CPU 0, oha on CPU 1 (figures in
# BENCHMARKS.md, "serve" section). Needs `oha`, `taskset` and python3. Never run from tests.
#   crates/warden-server/bench/pinned.sh [DURATION_SECONDS] [RATE] [CONNECTIONS]
# Set TOKIO_WORKER_THREADS=1 to give each server one worker on its one core.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-6}; RATE=${2:-27500}; CONNS=${3:-64}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example noop
W=$CARGO_TARGET_DIR/release/warden
NOOP=$CARGO_TARGET_DIR/release/examples/noop
DIR=$(mktemp -d)
mkdir -p "$DIR/policies"
cp examples/support-agent.yaml "$DIR/policies/"
cat > "$DIR/warden.yaml" <<YAML
listen: 127.0.0.1:18181
policies: policies
rate_limit: { per_second: 100000000, burst: 100000000 }
YAML
KEY=$("$W" keys create --tenant acme --policy support-agent --config "$DIR/warden.yaml" 2>/dev/null)
taskset -c 0 "$W" serve --config "$DIR/warden.yaml" 2> "$DIR/serve.log" & WPID=$!
taskset -c 0 "$NOOP" 127.0.0.1:18282 & NPID=$!
trap 'kill $WPID $NPID 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
BODY='{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}'
run() { # label url [extra oha args]
  local label=$1 url=$2; shift 2
  taskset -c 1 oha -z "${DUR}s" -c "$CONNS" --no-tui --output-format json -m POST \
    -T application/json -H "x-api-key: $KEY" -d "$BODY" "$@" "$url" > "$DIR/oha.json"
  python3 - "$label" "$DIR/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); s = d["summary"]; p = d["latencyPercentiles"]
print(f"{sys.argv[1]:<24} {s['requestsPerSec']:>9.0f} req/s  p50 {p['p50']*1e3:.3f} ms  "
      f"p99 {p['p99']*1e3:.3f} ms  p99.9 {p['p99.9']*1e3:.3f} ms  status {d.get('statusCodeDistribution', {})}")
PY
}
for round in 1 2; do
  run "no-op (round $round)" http://127.0.0.1:18282/v1/decide
  run "warden (round $round)" http://127.0.0.1:18181/v1/decide
done
run "no-op at $RATE req/s" http://127.0.0.1:18282/v1/decide -q "$RATE" --latency-correction
run "warden at $RATE req/s" http://127.0.0.1:18181/v1/decide -q "$RATE" --latency-correction
