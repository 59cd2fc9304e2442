#!/usr/bin/env bash
# The cost of traces, in one run: two daemons with the same policy and key, one exporting spans
# (`telemetry`, sample_ratio 0.1, OTLP/gRPC to the test collector built on PyPI
# opentelemetry-proto, crates/warden-cli/tests/telemetry/collector.py), HTTP/1.1 keep-alive from
# one load generator (examples/decide_load.rs), the daemons on CPU 0, the generator and the
# collector on CPU 1, alternating rounds. Figures in BENCHMARKS.md ("Traces"). Never run from
# tests. Needs the test peers (scripts/test installs them into .ci/.pydeps).
#   crates/warden-server/bench/tracing.sh [ROUNDS] [SECONDS] [CONNECTIONS] [SAMPLE_RATIO]
set -euo pipefail
ROUNDS=${1:-3}; DUR=${2:-5}; CONNS=${3:-64}; RATIO=${4:-0.1}
cd "$(dirname "$0")/../../.."
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example decide_load
WARDEN=$PWD/target/release/warden; LOAD=$PWD/target/release/examples/decide_load
DIR=$(mktemp -d)
PYTHONPATH=$PWD/.ci/.pydeps taskset -c 1 python3 crates/warden-cli/tests/telemetry/collector.py \
  "$DIR/spans.jsonl" > "$DIR/ports" & PC=$!
for _ in $(seq 100); do [ -s "$DIR/ports" ] && break; sleep 0.1; done
OTLP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp"])' "$DIR/ports")
for site in off on; do
  mkdir -p "$DIR/$site/policies"
  cp examples/support-agent.yaml "$DIR/$site/policies/"
done
printf 'listen: 127.0.0.1:18197\npolicies: policies\nkeys_file: %s/keys.json\nrate_limit: { per_second: 100000000, burst: 100000000 }\n' "$DIR" > "$DIR/off/warden.yaml"
printf 'listen: 127.0.0.1:18198\npolicies: policies\nkeys_file: %s/keys.json\nrate_limit: { per_second: 100000000, burst: 100000000 }\ntelemetry: { otlp_endpoint: "http://127.0.0.1:%s", sample_ratio: %s }\n' "$DIR" "$OTLP" "$RATIO" > "$DIR/on/warden.yaml"
KEY=$("$WARDEN" keys create --tenant acme --policy support-agent --config "$DIR/off/warden.yaml" 2>/dev/null)
(cd "$DIR/off" && taskset -c 0 "$WARDEN" serve --config warden.yaml 2>/dev/null) & P1=$!
(cd "$DIR/on" && taskset -c 0 "$WARDEN" serve --config warden.yaml 2>/dev/null) & P2=$!
trap 'pkill -P $P1 2>/dev/null; pkill -P $P2 2>/dev/null; kill $P1 $P2 $PC 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
SP1=$(pgrep -P $P1 warden || echo $P1); SP2=$(pgrep -P $P2 warden || echo $P2)
for round in $(seq "$ROUNDS"); do
  taskset -c 1 "$LOAD" h1 127.0.0.1:18197 "$KEY" "$DUR" "$CONNS" "$CONNS" "$SP1" \
    | sed "s/^/{\"round\":$round,\"traces\":\"off\",\"line\":/; s/\$/}/"
  taskset -c 1 "$LOAD" h1 127.0.0.1:18198 "$KEY" "$DUR" "$CONNS" "$CONNS" "$SP2" \
    | sed "s/^/{\"round\":$round,\"traces\":\"on\",\"line\":/; s/\$/}/"
done
sleep 6
SPANS=$(python3 -c 'import json,sys; print(sum(len(s["spans"]) for l in open(sys.argv[1]) if "export" in json.loads(l) for r in json.loads(l)["export"]["resourceSpans"] for s in r["scopeSpans"]))' "$DIR/spans.jsonl")
echo "{\"spans_received\":$SPANS}"
