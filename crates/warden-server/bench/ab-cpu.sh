#!/usr/bin/env bash
# A/B of two warden builds against the no-op baseline with wrk, reporting throughput and the
# server's CPU time per request (utime + stime from /proc, read around each round). Servers on
# CPU 0, wrk on CPU 1, rounds interleaved (figures in BENCHMARKS.md, "serve" section).
# Needs `wrk` (Debian's package), `taskset` and python3. Never run from tests.
#   crates/warden-server/bench/ab-cpu.sh BASE_WARDEN NEW_WARDEN NOOP [ROUNDS] [SECONDS]
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
lua() { # key
  cat <<LUA
wrk.method = "POST"
wrk.body = '{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "$1"
LUA
}
lua x > "$DIR/noop.lua"; lua "$KB" > "$DIR/base.lua"; lua "$KN" > "$DIR/new.lua"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # label pid url
  local before after
  before=$(ticks "$2")
  taskset -c 1 wrk -t1 -c64 -d"${DUR}s" --latency -s "$DIR/$1.lua" "$3" > "$DIR/wrk.txt"
  after=$(ticks "$2")
  python3 - "$1" "$DIR/wrk.txt" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import re, sys
label, path, before, after, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
text = open(path).read()
n = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
cpu_us = (after - before) / hz * 1e6 / n
print(f"{label:<5} {rps:>9.0f} req/s  cpu {cpu_us:6.2f} us/req  p99 {p99:>8}  non-2xx {non2xx.group(1) if non2xx else 0}")
PY
}
for _ in $(seq "$ROUNDS"); do
  run noop "$P3" http://127.0.0.1:18282/v1/decide
  run base "$P1" http://127.0.0.1:18181/v1/decide
  run new "$P2" http://127.0.0.1:18183/v1/decide
done
