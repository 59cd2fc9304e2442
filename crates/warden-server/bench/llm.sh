#!/usr/bin/env bash
# Added latency of the LLM proxy (figures in BENCHMARKS.md, "LLM proxy: added latency"): the
# same OpenAI chat completion request sent with wrk straight to a fast upstream stand-in
# (examples/llm_upstream.rs: fixed answer, no model) and through `warden serve`'s LLM door
# (prompt inspection with redaction and injection scoring, a budget reservation, the answer
# decided and its usage settled, metrics), once without and once with the audit log (whose
# default `fsync: batch` makes each decision wait for its entry to be on disk), in alternating
# rounds so all three see the same machine. Needs wrk (Debian's package) and python3. Never run from tests.
#   crates/warden-server/bench/llm.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DUR=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p warden-cli
cargo build --release -q -p warden-server --example llm_upstream
W=$CARGO_TARGET_DIR/release/warden
UP=$CARGO_TARGET_DIR/release/examples/llm_upstream
DIR=$(mktemp -d)
mkdir -p "$DIR/policies" "$DIR/logs"
cat > "$DIR/policies/llm.yaml" <<'YAML'
warden: 1
name: llm
default: allow
content:
  detectors: [email, credit_card, us_ssn, phone, iban, aws_access_key, github_token, private_key, jwt]
  input: redact
  output: redact
  injection: deny
budgets:
  - { id: daily-requests, period: day, requests: 1000000000 }
rules:
  - { id: no-huge-model, effect: deny, kinds: [prompt], context: { /model: { equals: gpt-huge } } }
  - { id: no-delete, effect: deny, tools: ["delete_*"] }
YAML
cat > "$DIR/warden.yaml" <<YAML
listen: 127.0.0.1:18181
policies: policies
watch: false
state: memory
audit: { dir: audit }
rate_limit: { per_second: 100000000, burst: 100000000 }
llm_prices: { gpt-4o-mini: { input_per_mtok: 0.15, output_per_mtok: 0.6 } }
llm_upstreams:
  - { name: openai, api: openai, url: "http://127.0.0.1:18383", policy: llm }
YAML
sed -e 's/^listen: 127.0.0.1:18181/listen: 127.0.0.1:18182/' -e '/^audit:/d' "$DIR/warden.yaml" > "$DIR/warden-no-audit.yaml"
KEY=$("$W" keys create --tenant acme --policy llm --config "$DIR/warden.yaml" 2>/dev/null)
(cd "$DIR" && exec "$W" serve --config warden.yaml 2> logs/serve.log) & WPID=$!
(cd "$DIR" && exec "$W" serve --config warden-no-audit.yaml 2> logs/serve-no-audit.log) & NPID=$!
"$UP" 127.0.0.1:18383 & UPID=$!
trap 'kill $WPID $NPID $UPID 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
for pid in $WPID $NPID $UPID; do
  kill -0 "$pid" 2>/dev/null || { echo "a server did not start (is 18181, 18182 or 18383 in use?)" >&2; exit 1; }
done
# A ~2 KB prompt: a system message and a user message of ordinary prose, with nothing to redact.
python3 - "$DIR/body.json" <<'PY'
import json, sys
prose = ("Please summarise the attached notes from the planning meeting for the team, keeping the "
         "decisions, the owners and the dates, and leaving out the small talk. ")
body = {"model": "gpt-4o-mini", "max_tokens": 400, "messages": [
    {"role": "system", "content": "You are a helpful assistant for an operations team."},
    {"role": "user", "content": prose * 13}]}
open(sys.argv[1], "w").write(json.dumps(body))
PY
cat > "$DIR/post.lua" <<LUA
wrk.method = "POST"
wrk.body = io.open("$DIR/body.json"):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
curl -sf -o /dev/null -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
  --data @"$DIR/body.json" http://127.0.0.1:18181/llm/openai/v1/chat/completions \
  || { echo "the proxied request failed"; cat "$DIR/logs/serve.log"; exit 1; }
run() { # label url connections
  wrk -t 1 -c "$3" -d "${DUR}s" --latency -s "$DIR/post.lua" "$2" > "$DIR/wrk.txt"
  python3 - "$1" "$DIR/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[2]).read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
pct = {m[0]: us(m[1], m[2]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(f"{sys.argv[1]:<34} p50 {pct['50']:8.1f} us  p99 {pct['99']:8.1f} us  {rps:9.0f} req/s"
      f"  non-2xx {bad.group(1) if bad else 0}{'  socket errors ' + errors.group(1) if errors else ''}")
open(sys.argv[2] + ".sum", "a").write(f"{sys.argv[1]}\t{pct['50']}\t{pct['99']}\t{rps}\n")
PY
}
for c in 1 16; do
  for round in 1 2 3; do
    run "direct, c=$c (round $round)" http://127.0.0.1:18383/v1/chat/completions "$c"
    run "warden, no audit, c=$c (round $round)" http://127.0.0.1:18182/llm/openai/v1/chat/completions "$c"
    run "warden + audit, c=$c (round $round)" http://127.0.0.1:18181/llm/openai/v1/chat/completions "$c"
  done
done
python3 - "$DIR/wrk.txt.sum" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
for c in ("c=1", "c=16"):
    direct = [r for r in rows if r[0].startswith("direct") and c + " " in r[0]]
    for label in ("warden, no audit", "warden + audit"):
        warden = [r for r in rows if r[0].startswith(label) and c + " " in r[0]]
        for i, name in ((1, "p50"), (2, "p99")):
            added = [float(w[i]) - float(d[i]) for d, w in zip(direct, warden)]
            print(f"{label}, {c}: added {name} per round " + ", ".join(f"{a:.1f}" for a in added)
                  + f" us; median {statistics.median(added):.1f} us")
        ratio = [float(w[3]) / float(d[3]) for d, w in zip(direct, warden)]
        print(f"{label}, {c}: throughput vs direct per round " + ", ".join(f"{r:.1%}" for r in ratio))
PY
echo "warden RSS: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$WPID/status) (audit), $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$NPID/status) (no audit)"
