#!/usr/bin/env bash
# Decisions over HTTP/1.1, HTTP/2 (h2c), gRPC unary and gRPC streaming, by one load generator
# (examples/decide_load.rs) in one run: decisions/s, p50/p99/p99.9 and the server's CPU time per
# decision. The server on CPU 0, the generator on CPU 1, modes interleaved for ROUNDS rounds.
# Figures in BENCHMARKS.md ("Decision protocols"). Never run from tests.
#   crates/warden-server/bench/protocols.sh [ROUNDS] [SECONDS] [IN_FLIGHT]
set -euo pipefail
ROUNDS=${1:-3}; DUR=${2:-5}; INFLIGHT=${3:-64}
cd "$(dirname "$0")/../../.."
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example decide_load
WARDEN=target/release/warden; LOAD=target/release/examples/decide_load
DIR=$(mktemp -d)
mkdir -p "$DIR/policies"
cp examples/support-agent.yaml "$DIR/policies/"
printf 'listen: 127.0.0.1:18191\npolicies: policies\nrate_limit: { per_second: 100000000, burst: 100000000 }\n' \
  > "$DIR/warden.yaml"
KEY=$("$WARDEN" keys create --tenant acme --policy support-agent --config "$DIR/warden.yaml" 2>/dev/null)
taskset -c 0 "$WARDEN" serve --config "$DIR/warden.yaml" 2>/dev/null & PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
for round in $(seq "$ROUNDS"); do
  for mode in h1 h2 grpc grpc-stream; do
    conns=4; [ "$mode" = h1 ] && conns=$INFLIGHT
    taskset -c 1 "$LOAD" "$mode" 127.0.0.1:18191 "$KEY" "$DUR" "$conns" "$INFLIGHT" "$PID" \
      | sed "s/^/{\"round\":$round,\"line\":/; s/\$/}/"
  done
done
