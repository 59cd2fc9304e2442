#!/usr/bin/env bash
# One warden build, two daemons: sessions embedded (in memory) against sessions in Redis
# (`redis_url`), with wrk; reports throughput, p99, the daemon's CPU per request and Redis's.
# The daemons on CPU 0, wrk on CPU 1, Redis wherever it runs; rounds interleaved (figures in
# BENCHMARKS.md, "serve" section). Then resident memory with 100,000 tainted sessions: the
# embedded daemon's RSS and Redis's used_memory, each growth from before.
# Needs `wrk`, `redis-cli`, `taskset`, python3 and a Redis at REDIS_URL. Never run from tests.
#   crates/warden-server/bench/shared-state.sh WARDEN [ROUNDS] [SECONDS] [REDIS_URL]
set -euo pipefail
WARDEN=$1; ROUNDS=${2:-3}; DUR=${3:-6}; REDIS_URL=${4:-redis://127.0.0.1:6379}
cd "$(dirname "$0")/../../.."
DIR=$(mktemp -d)
PREFIX="warden-bench:$$"
setup() { # name port extra
  mkdir -p "$DIR/$1/policies"
  cp examples/support-agent.yaml "$DIR/$1/policies/"
  printf 'listen: 127.0.0.1:%s\npolicies: policies\nstate: memory\nwatch: false\ndecision_log: false\nrate_limit: { per_second: 0 }\n%s' \
    "$2" "$3" > "$DIR/$1/warden.yaml"
}
setup embedded 18191 ""
setup redis 18193 "redis_url: \"$REDIS_URL\"
redis_prefix: \"$PREFIX\"
"
KE=$("$WARDEN" keys create --tenant acme --policy support-agent --config "$DIR/embedded/warden.yaml" 2>/dev/null)
KR=$("$WARDEN" keys create --tenant acme --policy support-agent --config "$DIR/redis/warden.yaml" 2>/dev/null)
taskset -c 0 "$WARDEN" serve --config "$DIR/embedded/warden.yaml" 2>/dev/null & P1=$!
taskset -c 0 "$WARDEN" serve --config "$DIR/redis/warden.yaml" 2>/dev/null & P2=$!
cleanup() {
  kill $P1 $P2 2>/dev/null; wait 2>/dev/null
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
sleep 1
REDIS_PID=$(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | awk -F: '/^process_id/ {print $2}')
lua() { # key tool session [sessions: spread the calls over this many, SESSION-0 ...]
  cat <<LUA
wrk.method = "POST"
wrk.body = '{"session":"$3","tool":"$2","args":{"id":7}}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "$1"
LUA
  if [ "${4:-1}" -gt 1 ]; then
    cat <<LUA
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format('{"session":"$3-%d","tool":"$2","args":{"id":7}}', n % $4))
end
LUA
  fi
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # label pid url key tool session [sessions]
  lua "$4" "$5" "$6" "${7:-1}" > "$DIR/run.lua"
  local before after rbefore rafter
  before=$(ticks "$2"); rbefore=$(ticks "$REDIS_PID")
  taskset -c 1 wrk -t1 -c64 -d"${DUR}s" --latency -s "$DIR/run.lua" "$3" > "$DIR/wrk.txt"
  after=$(ticks "$2"); rafter=$(ticks "$REDIS_PID")
  python3 - "$1" "$DIR/wrk.txt" "$before" "$after" "$rbefore" "$rafter" "$(getconf CLK_TCK)" <<'PY'
import re, sys
label, path = sys.argv[1], sys.argv[2]
before, after, rbefore, rafter, hz = map(int, sys.argv[3:8])
text = open(path).read()
n = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
cpu = (after - before) / hz * 1e6 / n
rcpu = (rafter - rbefore) / hz * 1e6 / n
print(f"{label:<20} {rps:>9.0f} req/s  p50 {p50:>8}  p99 {p99:>8}  warden cpu {cpu:6.2f} us/req  "
      f"redis cpu {rcpu:5.2f} us/req  non-2xx {non2xx.group(1) if non2xx else 0}")
PY
}
for _ in $(seq "$ROUNDS"); do
  # Reads spread over 1,000 sessions: allowed, each taints and appends (one versioned commit).
  run "embedded allow 1k" $P1 http://127.0.0.1:18191/v1/decide "$KE" crm.read_customer spread 1000
  run "redis allow 1k" $P2 http://127.0.0.1:18193/v1/decide "$KR" crm.read_customer spread 1000
  # Reads in one session, 64 at once: each changes it, so they take turns on it.
  run "embedded allow hot" $P1 http://127.0.0.1:18191/v1/decide "$KE" crm.read_customer bench-1
  run "redis allow hot" $P2 http://127.0.0.1:18193/v1/decide "$KR" crm.read_customer bench-1
  # A send in that tainted session: denied, nothing written (one version check).
  run "embedded deny hot" $P1 http://127.0.0.1:18191/v1/decide "$KE" send_email bench-1
  run "redis deny hot" $P2 http://127.0.0.1:18193/v1/decide "$KR" send_email bench-1
done

# Memory: 100,000 sessions, each tainted with one history entry, made through the batch API.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
used() { redis-cli -u "$REDIS_URL" info memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}'; }
fill() { # port key
  python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
for start in range(0, 100_000, 1000):
    body = json.dumps([{"session": f"m{i}", "tool": "crm.read_customer", "args": {"id": 7}}
                       for i in range(start, start + 1000)]).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/decide/batch", data=body,
                                 headers={"content-type": "application/json", "x-api-key": key})
    urllib.request.urlopen(req).read()
PY
}
E0=$(rss $P1); fill 18191 "$KE"; E1=$(rss $P1)
R0=$(used); D0=$(rss $P2); fill 18193 "$KR"; R1=$(used); D1=$(rss $P2)
echo "memory, 100k sessions: embedded daemon RSS +$(( (E1 - E0) / 1024 )) MB ($(( E1 / 1024 )) MB total);" \
  "redis used_memory +$(( (R1 - R0) / 1048576 )) MB; redis-state daemon RSS +$(( (D1 - D0) / 1024 )) MB"
