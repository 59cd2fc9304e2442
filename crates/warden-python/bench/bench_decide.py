"""Decisions per second from Python: in-process (`warden.Engine`) vs over HTTP to a running
`warden serve` (`warden.Client`, one keep-alive connection), in the same run, on the README's
example (examples/support-agent.yaml deciding examples/requests.jsonl: one session, 7 requests
in turn, taints included).

    python crates/warden-python/bench/bench_decide.py --warden target/release/warden

Install a release wheel first (`maturin build --release`); a debug build is ~10x slower.
Optionally `--invariant` also times the same flow in Invariant's pure-Python guardrails
analyzer (`invariant-ai`, when installed).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import warden

REPO = pathlib.Path(__file__).resolve().parents[3]
POLICY = REPO / "examples" / "support-agent.yaml"
REQUESTS = [json.loads(line) for line in (REPO / "examples" / "requests.jsonl").read_text().splitlines() if line.strip()]


def timed(label: str, decide, requests, seconds: float) -> float:
    """Decides `requests` in turn for `seconds`; prints and returns seconds per decision."""
    for r in requests:  # warm up
        decide(r)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for r in requests:
            decide(r)
        n += len(requests)
        now = time.perf_counter()
        if now >= deadline:
            break
    per = (now - start) / n
    print(f"{label:<44} {n:>9} decisions  {1 / per:>12,.0f}/s  {per * 1e6:>9.2f} µs each")
    return per


def start_daemon(binary: str, site: pathlib.Path) -> tuple:
    binary = str(pathlib.Path(binary).resolve())
    (site / "policies").mkdir()
    shutil.copy(POLICY, site / "policies" / "support-agent.yaml")
    (site / "warden.yaml").write_text(
        "policies: policies\nanonymous_policy: support-agent\nstate_file: sessions.redb\n"
        # No rate limit: this measures the door, not the bucket.
        "rate_limit:\n  per_second: 0\n")
    port_file = site / "port"
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(site / "warden.yaml"), "--listen", "127.0.0.1:0",
         "--port-file", str(port_file)],
        cwd=site, stdout=subprocess.DEVNULL, stderr=open(site / "log.txt", "wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://{port_file.read_text().strip()}"
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    sys.exit("warden serve did not start: " + (site / "log.txt").read_text())


def invariant_check(seconds: float) -> float | None:
    """The policy's flow rule (a CRM read, then an email out: raise) in Invariant's analyzer,
    over the trace of the session so far, which is what its policies look at. Only that rule:
    the tool classes, the argument pattern and the approval that clears the taint are not
    expressed, so this is a lower bound on the pure-Python cost of the same policy."""
    try:
        from invariant.analyzer import LocalPolicy
    except ImportError:
        print("invariant-ai is not installed: skipped")
        return None
    policy = LocalPolicy.from_string(
        """
raise "external write after PII access" if:
    (call1: ToolCall) -> (call2: ToolCall)
    call1 is tool:crm_read_customer
    call2 is tool:send_email
""")
    trace: list = []

    def decide(r):
        name = r.get("tool", "").replace(".", "_")
        call = {"role": "assistant", "content": None, "tool_calls": [
            {"id": str(len(trace)), "type": "function",
             "function": {"name": name, "arguments": r.get("args", {})}}]}
        if len(trace) >= len(REQUESTS):  # one session per pass, as for Warden
            trace.clear()
        trace.append(call)
        return policy.analyze(trace)

    return timed("invariant-ai LocalPolicy.analyze (pure Python)", decide, REQUESTS, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warden", default=str(REPO / "target" / "release" / "warden"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--invariant", action="store_true")
    parser.add_argument("--redis", metavar="URL", help="also time in-process decisions with sessions in this Redis")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, warden {warden.__file__}")
    engine = warden.Engine.from_file(str(POLICY))
    # The boundary alone: a call into the extension that decides nothing.
    timed("baseline: Engine.decide_many([]) (no decision)", engine.decide_many, [[]], args.seconds)
    # Each request in the session `s1` of examples/requests.jsonl, as an agent sends them.
    local = timed("in-process Engine.decide(dict)", engine.decide, REQUESTS, args.seconds)
    texts = [json.dumps(r) for r in REQUESTS]
    timed("in-process Engine.decide(json text)", engine.decide, texts, args.seconds)

    if args.redis:
        shared = warden.Engine.from_file(str(POLICY), redis_url=args.redis, redis_prefix=f"warden-bench-{os.getpid()}")
        timed("in-process Engine.decide(dict), Redis sessions", shared.decide, REQUESTS, args.seconds)

    @warden.guard(tool="kb.search", engine=engine, check_results=False)
    def search(query: str) -> str:
        return query

    timed("in-process @warden.guard call", lambda q: search(q), ["refunds"], args.seconds)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_daemon(args.warden, pathlib.Path(tmp))
        try:
            client = warden.Client(url)
            remote = timed("HTTP Client.decide (warden serve, keep-alive)", client.decide, REQUESTS, args.seconds)
        finally:
            proc.terminate()
            proc.wait()
    print(f"in-process is {remote / local:,.0f}x faster than HTTP to the daemon")
    if args.invariant:
        pure = invariant_check(args.seconds)
        if pure is not None:
            print(f"in-process is {pure / local:,.0f}x faster than invariant-ai")
    target = 5e-6
    verdict = "met" if local < target else "MISSED"
    print(f"target in-process < 5 µs per decision: {verdict} ({local * 1e6:.2f} µs)")


if __name__ == "__main__":
    main()
