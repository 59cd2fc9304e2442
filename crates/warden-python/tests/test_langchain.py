"""A LangChain tool (langchain-core `@tool`) guarded by policy, invoked through LangChain's
own tool machinery (`invoke` / `ainvoke`), no model involved."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool

import warden
from warden.integrations.langchain import guard_tool
from conftest import GUARD_POLICY

SENT: list = []


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    SENT.append((to, body))
    return f"sent to {to}"


@tool
def lookup(q: str) -> dict:
    """Look a customer up."""
    return {"name": "Bob", "phone": "+1 415 555 0100", "q": q}


@pytest.fixture
def engine() -> warden.Engine:
    SENT.clear()
    return warden.Engine.from_str(GUARD_POLICY, "guard.yaml")


def test_the_guarded_tool_is_the_same_tool_to_an_agent(engine):
    safe = guard_tool(send_email, engine)
    assert isinstance(safe, BaseTool)
    assert safe.name == "send_email" and safe.description == send_email.description
    assert safe.args == send_email.args


def test_a_denied_call_raises_policy_denied(engine):
    safe = guard_tool(send_email, engine)
    with pytest.raises(warden.PolicyDenied) as err:
        safe.invoke({"to": "bob@evil.test", "body": "hello"})
    assert err.value.rule == "no-evil"
    assert SENT == []


def test_arguments_and_results_are_redacted(engine):
    safe_send = guard_tool(send_email, engine, session="lc-1")
    assert safe_send.invoke({"to": "a@corp.test", "body": "card 4111 1111 1111 1111"}) == \
        "sent to [REDACTED:email]"
    assert SENT == [("[REDACTED:email]", "card [REDACTED:credit_card]")]
    safe_lookup = guard_tool(lookup, engine, session="lc-1")
    assert safe_lookup.invoke({"q": "bob"}) == {"name": "Bob", "phone": "[REDACTED:phone]", "q": "bob"}


def test_a_denial_as_the_tools_message_to_the_model(engine):
    read = guard_tool(lookup, engine, session="lc-2")
    crm = guard_tool(_crm_tool(), engine, session="lc-2")
    send = guard_tool(send_email, engine, session="lc-2", on_deny="message")
    crm.invoke({"id": 1})
    # A tool call as an agent executor makes it: the answer is a ToolMessage carrying the denial.
    message = send.invoke({"type": "tool_call", "id": "call-1", "name": "send_email",
                           "args": {"to": "a@corp.test", "body": "hi"}})
    assert isinstance(message, ToolMessage)
    assert message.status == "error"
    assert "denied by policy: external write after PII access (rule `no-exfil`)" in message.content
    assert SENT == []
    assert read.invoke({"q": "x"})["q"] == "x"


def _crm_tool() -> BaseTool:
    def read_customer(id: int) -> dict:
        """Read a customer."""
        return {"id": id}
    return tool("crm.read_customer")(read_customer)


def test_ainvoke_is_guarded(engine):
    safe = guard_tool(send_email, engine)

    async def main():
        with pytest.raises(warden.PolicyDenied):
            await safe.ainvoke({"to": "x@evil.test", "body": "b"})
        return await safe.ainvoke({"to": "x@ok.test", "body": "b"})

    assert asyncio.run(main()) == "sent to [REDACTED:email]"
