"""The scenario corpus (tests/scenarios/) through the Python API: every step decides as its
expectation says, and every decision equals, field for field, what the Rust CLI
(`warden eval`) decides for the same policy and requests."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest
import yaml

import warden
from conftest import REPO, binary

SCENARIOS = REPO / "tests" / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1 (`yes`, `no`, `on`, `off` are booleans); the scenarios are read
    by the Rust runner as YAML 1.2, where only `true` and `false` are."""


Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def test_the_corpus_is_there():
    assert len(FILES) >= 9, FILES


def policy_file(doc: dict, site: pathlib.Path) -> pathlib.Path:
    """The scenario's policy as a file both sides load: `policy_file` as it is, an inline
    policy as JSON in a directory that mirrors the scenario's (Rego module paths resolve)."""
    if "policy_file" in doc:
        return SCENARIOS / doc["policy_file"]
    for entry in SCENARIOS.iterdir():
        os.symlink(entry, site / entry.name)
    path = site / "inline-policy.json"
    path.write_text(json.dumps(doc["policy"]))
    return path


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_python_decides_as_the_cli_and_the_expectations(path, tmp_path):
    doc = yaml.load(path.read_text(), Loader=Yaml12Loader)
    policy = policy_file(doc, tmp_path)
    requests = [step["request"] for step in doc["steps"]]
    engine = warden.Engine.from_file(str(policy))
    decisions = [engine.decide(r).to_dict() for r in requests]

    stream = tmp_path / "requests.jsonl"
    stream.write_text("".join(json.dumps(r) + "\n" for r in requests))
    cli = subprocess.run([binary(), "eval", "--policy", str(policy), str(stream)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(expected) == len(requests)
    for i, (ours, theirs) in enumerate(zip(decisions, expected), 1):
        # A held call's approval is new in each engine: its id is random and its expiry is the
        # clock's. The rest must be equal, and both sides must hold the call the same way.
        mine, cli_approval = ours.pop("approval", None), theirs.pop("approval", None)
        assert (mine is None) == (cli_approval is None), f"step {i}: approval"
        if mine is not None:
            assert mine["status"] == cli_approval["status"], f"step {i}: approval status"
            for approval in (mine, cli_approval):
                assert re.fullmatch(r"apr_[0-9a-f]{32}", approval["id"]), approval
                assert approval["expires_ms"] > 0, approval
        assert ours == theirs, f"step {i}"

    for i, (step, ours) in enumerate(zip(doc["steps"], decisions), 1):
        for key, want in step["expect"].items():
            # A decision leaves `audited` out when no audit rule matched.
            got = ours.get(key, [] if key == "audited" else None)
            # As the Rust runner compares them: findings by detector id, findings, taints and
            # audit rules as multisets (src/scenario.rs).
            if key == "findings":
                got = [f["detector"] for f in got]
            if key in ("findings", "taints", "audited"):
                got, want = sorted(got), sorted(want)
            assert got == want, f"{path.name} step {i}: {key}"
