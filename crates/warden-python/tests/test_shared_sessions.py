"""Sessions in the machine's real Redis (scripts/test starts it and sets WARDEN_TEST_REDIS_URL):
engines in two processes share a session, an engine with a tenant shares that tenant's sessions
with `warden serve`, and the settings are checked before anything connects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

import warden
from conftest import SUPPORT_POLICY

REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379")

READ = {"session": "s1", "tool": "crm.read_customer", "args": {"id": 42}}
SEND = {"session": "s1", "tool": "send_email", "args": {"to": "bob@customer.test"}}


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so runs and tests never see each other's sessions."""
    return f"warden-py-{uuid.uuid4().hex[:12]}"


def engine(prefix: str, **kwargs) -> warden.Engine:
    return warden.Engine.from_file(SUPPORT_POLICY, redis_url=REDIS_URL, redis_prefix=prefix, **kwargs)


def test_engines_in_two_processes_share_a_session(prefix):
    # Another interpreter reads the customer record: the session is tainted in Redis.
    child = (
        "import json, sys, warden\n"
        "e = warden.Engine.from_file(sys.argv[1], redis_url=sys.argv[2], redis_prefix=sys.argv[3])\n"
        "print(json.dumps(e.decide(json.loads(sys.argv[4])).to_dict()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child, str(SUPPORT_POLICY), REDIS_URL, prefix, json.dumps(READ)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert json.loads(out.stdout)["taints"] == ["pii"]
    # This process sees the taint: the email out is denied.
    here = engine(prefix)
    denied = here.decide(SEND)
    assert denied.verdict == "deny", denied
    assert denied.rule == "no-exfil"
    # The same policy with in-memory sessions, or another prefix, sees a fresh session.
    assert warden.Engine.from_file(SUPPORT_POLICY).decide(SEND).verdict == "allow"
    assert engine(prefix + "-other").decide(SEND).verdict == "allow"


def test_tenants_keep_their_own_sessions(prefix):
    acme, globex = engine(prefix, tenant="acme"), engine(prefix, tenant="globex")
    assert acme.decide(READ).taints == ["pii"]
    assert acme.decide(SEND).verdict == "deny"
    assert globex.decide(SEND).verdict == "allow"
    assert engine(prefix).decide(SEND).verdict == "allow"
    assert engine(prefix, tenant="acme").decide(SEND).verdict == "deny"


def test_an_engine_with_a_tenant_shares_the_daemons_sessions(daemon, prefix):
    (daemon.site / "warden.yaml").write_text(
        "policies: policies\nkeys_file: keys.json\nstate: memory\n"
        f"redis_url: {REDIS_URL}\nredis_prefix: {prefix}\n"
    )
    key = daemon.create_key("acme", "support-agent")
    url = daemon.start()
    # The agent's process reads the record in-process, as tenant acme.
    assert engine(prefix, tenant="acme").decide(READ).taints == ["pii"]

    with warden.Client(url, api_key=key) as client:
        # The daemon, deciding for acme's key, sees the taint and denies the email out.
        remote = client.decide(SEND)
        assert remote.verdict == "deny", remote
        assert remote.rule == "no-exfil"
        # And a session the daemon tainted is tainted for the engine.
        assert client.decide({**READ, "session": "s2"}).taints == ["pii"]
    assert engine(prefix, tenant="acme").decide({**SEND, "session": "s2"}).verdict == "deny"

def test_idle_sessions_expire_after_the_ttl(prefix):
    assert engine(prefix, session_ttl=1).decide(READ).taints == ["pii"]
    assert engine(prefix).decide(SEND).verdict == "deny"
    time.sleep(1.5)
    assert engine(prefix).decide(SEND).verdict == "allow"


def test_an_unreachable_redis_is_a_store_error_without_the_url():
    with pytest.raises(warden.StoreError) as raised:
        warden.Engine.from_file(SUPPORT_POLICY, redis_url="redis://:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(raised.value)
    assert isinstance(raised.value, warden.WardenError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"redis_url": "rediss://127.0.0.1:6379"}, "redis_url"),
        ({"redis_url": "http://127.0.0.1:6379"}, "redis_url"),
        ({"redis_url": REDIS_URL, "redis_prefix": ""}, "redis_prefix"),
        ({"redis_url": REDIS_URL, "session_ttl": 0}, "session_ttl"),
        ({"redis_url": REDIS_URL, "session_ttl": -1.0}, "session_ttl"),
        ({"session_ttl": 60}, "session_ttl"),
        ({"tenant": "a\x1fb"}, "tenant"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, field):
    with pytest.raises(ValueError) as raised:
        warden.Engine.from_file(SUPPORT_POLICY, **kwargs)
    assert str(raised.value).startswith(f"{field}:"), raised.value
    assert "hunter2" not in str(raised.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_must_build_its_own_engine(prefix):
    parent = engine(prefix)
    assert parent.decide(READ).verdict == "allow"
    pid = os.fork()
    if pid == 0:
        # The child: the parent's connections did not come along; deciding is refused at
        # once (it would otherwise wait forever), and a new engine works.
        code = 1
        try:
            try:
                parent.decide(SEND)
            except warden.DecideError as e:
                if "after fork" in str(e) and engine(prefix).decide(SEND).verdict == "deny":
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.decide(SEND).verdict == "deny"
