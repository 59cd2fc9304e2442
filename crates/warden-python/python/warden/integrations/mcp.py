"""MCP (the ``mcp`` Python SDK), client side: ``ClientSession.call_tool`` guarded.

    async with ClientSession(read, write) as mcp_session:
        await mcp_session.initialize()
        guarded = GuardedSession(mcp_session, engine, session="agent-1")
        result = await guarded.call_tool("send_email", {"to": "..."})  # PolicyDenied on deny

The arguments are decided as a ``tool_call`` (redacted ones go to the server), the result as
a ``tool_result`` whose ``result`` is the ``CallToolResult`` in its JSON form (``content``,
``structuredContent``, ``isError``), so a policy redacts ``/result/content/0/text`` and
taints the session on what the server answered. Every other attribute is the session's own.
"""

from __future__ import annotations

from typing import Any, Optional

from ..guard import Decider, Guard, SessionArg

__all__ = ["GuardedSession"]


class GuardedSession:
    """Wraps an ``mcp.ClientSession`` (or anything with its ``call_tool``)."""

    def __init__(
        self,
        session: Any,
        engine: Optional[Decider] = None,
        *,
        session_id: SessionArg = None,
        principal: SessionArg = None,
        check_results: bool = True,
    ) -> None:
        self._mcp = session
        self._guard = Guard(
            engine, session=session_id, principal=principal, check_results=check_results
        )

    async def call_tool(
        self, name: str, arguments: Optional[dict] = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``ClientSession.call_tool``, decided before and after; ``PolicyDenied`` on deny."""
        checked = await self._guard.acheck_call(name, arguments or {})
        result = await self._mcp.call_tool(name, checked, *args, **kwargs)
        if not self._guard.check_results or not hasattr(result, "model_dump"):
            return result
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        answer = await self._guard.acheck_result(name, dumped)
        if answer is dumped:
            return result
        return type(result).model_validate(answer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mcp, name)
