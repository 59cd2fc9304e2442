"""Warden for Python agents: policy decisions for tool calls, in microseconds, with a reason.

The engine is Warden's Rust engine, in-process (``Engine``), or a running ``warden serve``
(``Client``); both answer ``decide(request)`` with the same typed ``Decision``. On top of them:
``guard`` for plain and async functions, and adapters for LangChain, the OpenAI Agents SDK and
MCP clients (``warden.integrations``).

    >>> import warden
    >>> engine = warden.Engine.from_file("examples/support-agent.yaml")
    >>> engine.decide({"session": "s1", "tool": "crm.read_customer", "args": {"id": 42}}).taints
    ['pii']
    >>> engine.decide({"session": "s1", "tool": "send_email", "args": {"to": "bob@customer.test"}})
    Decision(verdict="deny", rule="no-exfil", reasons=["external write after PII access"], taints=["pii"], findings=0, redacted=None)
"""

from ._warden import (
    KNOWN_DETECTORS,
    DecideError,
    Decision,
    Engine,
    Finding,
    PolicyError,
    PolicyInfo,
    RequestError,
    Scanner,
    StoreError,
    WardenError,
)
from .client import Client
from .guard import (
    Guard,
    PolicyDenied,
    current_session,
    get_default,
    guard,
    session,
    set_default,
)

__all__ = [
    "KNOWN_DETECTORS",
    "Client",
    "DecideError",
    "Decision",
    "Engine",
    "Finding",
    "Guard",
    "PolicyDenied",
    "PolicyError",
    "PolicyInfo",
    "RequestError",
    "Scanner",
    "StoreError",
    "WardenError",
    "current_session",
    "get_default",
    "guard",
    "redact",
    "scan",
    "session",
    "set_default",
]

_scanner = None


def _default_scanner() -> Scanner:
    # Compiled on first use: every built-in detector, injection heuristics on.
    global _scanner
    if _scanner is None:
        _scanner = Scanner()
    return _scanner


def scan(text: str) -> "list[Finding]":
    """Findings of every built-in detector and the injection heuristics in ``text``
    (positions and detector ids, never the text found). No policy needed."""
    return _default_scanner().scan(text)


def redact(value):
    """``value`` (a str or a JSON value) with every built-in detector's findings replaced by
    ``[REDACTED:<detector>]``, keeping its shape. No policy needed."""
    return _default_scanner().redact(value)
