#!/usr/bin/env bash
# Decisions over TLS against plain TCP, in one run: two daemons with the same policy and key, one
# with `tls` (a `warden certs dev` certificate), HTTP/1.1 keep-alive from one load generator
# (examples/decide_load.rs), the daemons on CPU 0 and the generator on CPU 1, alternating rounds.
# Figures in BENCHMARKS.md ("TLS"). Never run from tests.
#   crates/warden-server/bench/tls.sh [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
ROUNDS=${1:-3}; DUR=${2:-5}; CONNS=${3:-64}
cd "$(dirname "$0")/../../.."
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example decide_load
WARDEN=$PWD/target/release/warden; LOAD=$PWD/target/release/examples/decide_load
DIR=$(mktemp -d)
"$WARDEN" certs dev --out "$DIR/certs" 2>/dev/null
for site in plain tls; do
  mkdir -p "$DIR/$site/policies"
  cp examples/support-agent.yaml "$DIR/$site/policies/"
done
printf 'listen: 127.0.0.1:18195\npolicies: policies\nkeys_file: %s/keys.json\nrate_limit: { per_second: 100000000, burst: 100000000 }\n' "$DIR" > "$DIR/plain/warden.yaml"
printf 'listen: 127.0.0.1:18196\npolicies: policies\nkeys_file: %s/keys.json\nrate_limit: { per_second: 100000000, burst: 100000000 }\ntls: { cert: %s/certs/server.pem, key: %s/certs/server.key }\n' "$DIR" "$DIR" "$DIR" > "$DIR/tls/warden.yaml"
KEY=$("$WARDEN" keys create --tenant acme --policy support-agent --config "$DIR/plain/warden.yaml" 2>/dev/null)
(cd "$DIR/plain" && taskset -c 0 "$WARDEN" serve --config warden.yaml 2>/dev/null) & P1=$!
(cd "$DIR/tls" && taskset -c 0 "$WARDEN" serve --config warden.yaml 2>/dev/null) & P2=$!
trap 'pkill -P $P1 2>/dev/null; pkill -P $P2 2>/dev/null; kill $P1 $P2 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
SP1=$(pgrep -P $P1 warden || echo $P1); SP2=$(pgrep -P $P2 warden || echo $P2)
for round in $(seq "$ROUNDS"); do
  taskset -c 1 "$LOAD" h1 127.0.0.1:18195 "$KEY" "$DUR" "$CONNS" "$CONNS" "$SP1" \
    | sed "s/^/{\"round\":$round,\"server\":\"plain\",\"line\":/; s/\$/}/"
  DECIDE_LOAD_CA="$DIR/certs/ca.pem" taskset -c 1 "$LOAD" h1-tls 127.0.0.1:18196 "$KEY" "$DUR" "$CONNS" "$CONNS" "$SP2" \
    | sed "s/^/{\"round\":$round,\"server\":\"tls\",\"line\":/; s/\$/}/"
done
