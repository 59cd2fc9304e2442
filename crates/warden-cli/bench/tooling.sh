#!/usr/bin/env bash
# Policy tooling at scale, in one run (release build): `warden analyze` and a flow proof on a
# 10,000-rule policy and on a policy with 16 taints (every subset reachable: 65,536 session
# states), and `warden replay` throughput on a capture of 100,000 decisions made by
# `warden serve`. Figures in BENCHMARKS.md ("Policy tooling"). Never run from tests.
#   crates/warden-cli/bench/tooling.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
cargo build --release -q -p warden-cli
WARDEN=$PWD/target/release/warden
DIR=$(mktemp -d); trap 'rm -rf "$DIR"' EXIT
python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
# 10,000 rules over 500 tools in 50 classes: allows that add taints, denies that read them,
# argument conditions on a tenth.
lines = ["warden: 1", "name: big", "default: deny", "tools:"]
for t in range(500):
    lines.append(f'  "tool{t}.*": [c{t % 50}]')
lines.append("rules:")
for r in range(10_000):
    t, c, k = r % 500, r % 50, r % 16
    if r % 4 == 0:
        lines.append(f"  - {{ id: r{r}, effect: deny, classes: [c{c}], if: \"taint:t{k} and not taint:t{(k + 1) % 16}\" }}")
    elif r % 20 == 1:
        # One argument-conditioned rule per tool (a proof explores their combinations per tool).
        lines.append(f"  - {{ id: r{r}, effect: deny, tools: [\"tool{(r // 20) % 500}.send\"], args: {{ /to: {{ matches: \"@x{r}\\\\.test$\" }} }} }}")
    else:
        lines.append(f"  - {{ id: r{r}, effect: allow, tools: [\"tool{t}.*\"], add_taints: [t{k}] }}")
open(f"{d}/big.yaml", "w").write("\n".join(lines) + "\n")
# 16 taints, each added by its own read and cleared together by a review; every subset of
# taints is a reachable session state.
lines = ["warden: 1", "name: taints16", "default: deny", "tools:"]
for k in range(16):
    lines.append(f'  "read{k}": [sensitive_read]')
lines += ['  "send": [external_write]', '  "exfil": [external_write]', '  "review": [review]', "rules:"]
for k in range(16):
    lines.append(f"  - {{ id: read{k}, effect: allow, tools: [read{k}], add_taints: [t{k}] }}")
cond = " and ".join(f"taint:t{k}" for k in range(16))
lines.append(f"  - {{ id: send, effect: allow, tools: [send] }}")
lines.append(f"  - {{ id: all-read-then-send, effect: deny, tools: [send], if: \"{cond}\" }}")
lines.append("  - { id: review, effect: allow, tools: [review], remove_taints: [" + ", ".join(f"t{k}" for k in range(16)) + "] }")
# `exfil` after any read, ever, is denied: a proof that it cannot follow a read must explore
# every reachable state (all 65,536 taint sets, with and without the sequence marker).
lines.append("  - { id: exfil, effect: allow, tools: [exfil] }")
lines.append("  - { id: no-exfil-after-reads, effect: deny, tools: [exfil], after: { classes: [sensitive_read] } }")
open(f"{d}/taints16.yaml", "w").write("\n".join(lines) + "\n")
PY
t() { local s e; s=$(date +%s.%N); "$@" > "$DIR/out" 2>&1 || true; e=$(date +%s.%N); printf '%-70s %6.2f s  %s\n' "$*" "$(echo "$e - $s" | bc)" "$(head -c 160 "$DIR/out" | tr '\n' ' ')"; }
cd "$DIR"
t "$WARDEN" analyze big.yaml --format json
t "$WARDEN" analyze big.yaml --forbid "class:c1 -> class:c2"
t "$WARDEN" analyze taints16.yaml
t "$WARDEN" analyze taints16.yaml --forbid "tool:read0 -> tool:send" --max-states 200000
t "$WARDEN" analyze taints16.yaml --forbid "class:sensitive_read -> tool:exfil" --max-states 400000
# Replay: 100,000 captured decisions (10,000 sessions of 10 calls) through `warden serve`.
mkdir -p pol && cp "$OLDPWD/examples/support-agent.yaml" pol/
printf 'listen: 127.0.0.1:18391\npolicies: pol\nstate: memory\nwatch: false\nanonymous_policy: support-agent\ndecision_log: false\nrate_limit: { per_second: 100000000, burst: 100000000 }\ncapture: { dir: capture, max_files: 50 }\n' > warden.yaml
"$WARDEN" serve --config warden.yaml 2>/dev/null & P=$!
trap 'kill $P 2>/dev/null || true; rm -rf "$DIR"' EXIT
sleep 1
python3 - <<'PY'
import http.client, json
c = http.client.HTTPConnection("127.0.0.1", 18391)
tools = ["kb.search", "crm.read_customer", "send_email", "human_approve", "http_post"]
for s in range(10_000):
    for i in range(10):
        body = json.dumps({"tool": tools[(s + i) % 5], "session": f"s{s}", "args": {"to": "x@partner.test", "id": i}})
        c.request("POST", "/v1/decide", body, {"content-type": "application/json"})
        c.getresponse().read()
PY
sleep 2; kill $P; wait $P 2>/dev/null || true
wc -l capture/* | tail -1
sed 's/  - { id: writes, effect: allow, classes: \[external_write\] }/  - { id: writes, effect: allow, tools: [send_email] }/' pol/support-agent.yaml > next.yaml
for round in 1 2 3; do "$WARDEN" replay --capture capture --policy next.yaml --allow-flips > /dev/null; done
