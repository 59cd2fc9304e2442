"""Shared fixtures: the repository, the `warden` binary (built by cargo, scripts/test-python),
and a running `warden serve` on a free loopback port."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
WARDEN_BIN = pathlib.Path(os.environ.get("WARDEN_BIN", REPO / "target" / "debug" / "warden"))

SUPPORT_POLICY = EXAMPLES / "support-agent.yaml"

# Redacts PII in arguments and results, denies prompt injection in results, and taints the
# session on a CRM read so that a later email out is denied.
GUARD_POLICY = """
warden: 1
name: agent-guard
version: "1.0.0"
default: deny
tools:
  "crm.*": [sensitive_read]
  send_email: [external_write]
  lookup: [internal_read]
content:
  detectors: [email, credit_card, phone]
  input: redact
  output: redact
  injection: deny
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: lookups, effect: allow, classes: [internal_read] }
  - { id: writes, effect: allow, classes: [external_write] }
  - id: no-exfil
    effect: deny
    kinds: [tool_call]
    classes: [external_write]
    if: "taint:pii"
    reason: "external write after PII access"
  - id: no-evil
    effect: deny
    tools: [send_email]
    args: { /to: { matches: "(?i)evil\\\\.test" } }
    reason: "recipient domain is blocked"
"""


def binary() -> pathlib.Path:
    if not WARDEN_BIN.exists():
        pytest.fail(f"{WARDEN_BIN} is missing: run `cargo build -p warden-cli` (scripts/test-python does)")
    return WARDEN_BIN


@pytest.fixture
def guard_policy_text() -> str:
    return GUARD_POLICY


class Daemon:
    """A `warden serve` started for one test; killed at the end."""

    def __init__(self, site: pathlib.Path) -> None:
        self.site = site
        self.proc = None
        self.addr = ""

    def create_key(self, tenant: str, policy: str) -> str:
        out = subprocess.run(
            [binary(), "keys", "create", "--tenant", tenant, "--policy", policy,
             "--config", str(self.site / "warden.yaml")],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    def start(self) -> str:
        port_file = self.site / "port"
        log = open(self.site / "log.txt", "wb")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--config", str(self.site / "warden.yaml"),
             "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL, stderr=log, cwd=self.site,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                self.addr = port_file.read_text().strip()
                return f"http://{self.addr}"
            if self.proc.poll() is not None:
                raise RuntimeError((self.site / "log.txt").read_text())
            time.sleep(0.02)
        raise RuntimeError("warden serve did not start within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon(tmp_path: pathlib.Path):
    """A daemon site: policies/agent-guard.yaml and support-agent.yaml, API keys in keys.json,
    support-agent for anonymous callers; call `.start()` after creating keys."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "agent-guard.yaml").write_text(GUARD_POLICY)
    (tmp_path / "policies" / "support-agent.yaml").write_text(SUPPORT_POLICY.read_text())
    (tmp_path / "warden.yaml").write_text(
        "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n"
        "anonymous_policy: support-agent\n"
    )
    d = Daemon(tmp_path)
    yield d
    d.stop()
