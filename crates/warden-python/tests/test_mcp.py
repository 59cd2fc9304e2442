"""The MCP client-side wrapper against a real MCP server (the `mcp` SDK's MCPServer over
stdio, in a child process): denied calls never reach the server, arguments reach it
redacted, results come back redacted, and results taint the session."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import warden
from warden.integrations.mcp import GuardedSession
from conftest import GUARD_POLICY

SERVER = pathlib.Path(__file__).with_name("mcp_server.py")


def test_call_tool_is_decided_before_and_after(tmp_path):
    engine = warden.Engine.from_str(GUARD_POLICY, "guard.yaml")
    log = tmp_path / "calls.jsonl"
    log.touch()

    async def main():
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER), str(log)])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as mcp_session:
                await mcp_session.initialize()
                guarded = GuardedSession(mcp_session, engine, session_id="mcp-1")
                # Attributes other than call_tool are the session's own.
                names = sorted(t.name for t in (await guarded.list_tools()).tools)
                assert names == ["crm.read_customer", "lookup", "send_email"]

                with pytest.raises(warden.PolicyDenied) as err:
                    await guarded.call_tool("send_email", {"to": "bob@evil.test", "body": "x"})
                assert err.value.rule == "no-evil"

                sent = await guarded.call_tool(
                    "send_email", {"to": "a@corp.test", "body": "card 4111 1111 1111 1111"})
                assert sent.content[0].text == "sent to [REDACTED:email]"

                read = await guarded.call_tool("crm.read_customer", {"id": 7})
                assert read.content[0].text == "Customer 7: Bob, phone [REDACTED:phone]"
                assert read.is_error is False

                with pytest.raises(warden.PolicyDenied) as err:
                    await guarded.call_tool("send_email", {"to": "a@corp.test", "body": "x"})
                assert err.value.rule == "no-exfil"

                with pytest.raises(warden.PolicyDenied) as err:
                    await guarded.call_tool("lookup", {"q": "refunds"})
                assert err.value.rule == "content:injection"

                with pytest.raises(warden.PolicyDenied):
                    await guarded.call_tool("delete_everything", {})

    asyncio.run(main())
    reached = [json.loads(line) for line in log.read_text().splitlines()]
    assert reached == [
        {"tool": "send_email", "args": {"to": "[REDACTED:email]", "body": "card [REDACTED:credit_card]"}},
        {"tool": "crm.read_customer", "args": {"id": 7}},
        {"tool": "lookup", "args": {"q": "refunds"}},
    ]
