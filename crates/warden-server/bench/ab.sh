#!/usr/bin/env bash
# A/B of two warden builds against the no-op baseline, each side on its own core: the servers on
# CPU 0, oha on CPU 1, rounds interleaved (figures in BENCHMARKS.md, "serve" section).
# Needs `oha`, `taskset` and python3. Never run from tests.
#   crates/warden-server/bench/ab.sh BASE_WARDEN NEW_WARDEN NOOP [ROUNDS] [SECONDS]
# e.g. build an older commit into another target dir and compare it with target/release/warden.
set -euo pipefail
BASE=$1; NEW=$2; NOOP=$3; ROUNDS=${4:-3}; DUR=${5:-6}
cd "$(dirname "$0")/../../.."
DIR=$(mktemp -d)
setup() { # name port
  mkdir -p "$DIR/$1/policies"
  cp examples/support-agent.yaml "$DIR/$1/policies/"
  printf 'listen: 127.0.0.1:%s\npolicies: policies\nrate_limit: { per_second: 100000000, burst: 100000000 }\n' \
    "$2" > "$DIR/$1/warden.yaml"
}
setup base 18181; setup new 18183
KB=$("$BASE" keys create --tenant acme --policy support-agent --config "$DIR/base/warden.yaml" 2>/dev/null)
KN=$("$NEW" keys create --tenant acme --policy support-agent --config "$DIR/new/warden.yaml" 2>/dev/null)
taskset -c 0 "$BASE" serve --config "$DIR/base/warden.yaml" 2>/dev/null & P1=$!
taskset -c 0 "$NEW" serve --config "$DIR/new/warden.yaml" 2>/dev/null & P2=$!
taskset -c 0 "$NOOP" 127.0.0.1:18282 & P3=$!
trap 'kill $P1 $P2 $P3 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
BODY='{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}'
run() { # label key url
  taskset -c 1 oha -z "${DUR}s" -c 64 --no-tui --output-format json -m POST -T application/json \
    -H "x-api-key: $2" -d "$BODY" "$3" > "$DIR/oha.json"
  python3 - "$1" "$DIR/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[2])); s = d["summary"]; p = d["latencyPercentiles"]
print(f"{sys.argv[1]:<6} {s['requestsPerSec']:>9.0f} req/s  p50 {p['p50']*1e3:.3f} ms  "
      f"p99 {p['p99']*1e3:.3f} ms  status {d.get('statusCodeDistribution', {})}")
PY
}
for _ in $(seq "$ROUNDS"); do
  run noop x http://127.0.0.1:18282/v1/decide
  run base "$KB" http://127.0.0.1:18181/v1/decide
  run new "$KN" http://127.0.0.1:18183/v1/decide
done
