"""LangChain (``langchain-core``): a tool whose calls and results the policy decides.

    from warden.integrations.langchain import guard_tool
    safe = guard_tool(send_email, engine)        # a BaseTool, e.g. from @tool
    safe.invoke({"to": "bob@evil.test", "body": "..."})   # raises warden.PolicyDenied

The guarded tool is a ``StructuredTool`` with the original's name, description and argument
schema, so agents and ``bind_tools`` see the same tool. With ``on_deny="message"`` a denial
is a ``ToolException`` LangChain's own error handling returns to the model as the tool's
output (``denied by policy: ...``) instead of an exception in the caller.
"""

from __future__ import annotations

from typing import Any, Optional

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ..guard import Decider, Guard, PolicyDenied, SessionArg

__all__ = ["guard_tool"]


def guard_tool(
    tool: BaseTool,
    engine: Optional[Decider] = None,
    *,
    session: SessionArg = None,
    principal: SessionArg = None,
    check_results: bool = True,
    on_deny: str = "raise",
) -> StructuredTool:
    """``tool`` guarded by ``engine`` (default: ``warden.set_default``'s): each call is decided
    with the tool's arguments (redacted ones reach the tool), each result as a ``tool_result``
    (a redacted result is what the caller gets). ``on_deny``: ``"raise"`` (``PolicyDenied``)
    or ``"message"`` (the denial becomes the tool's output through ``ToolException``)."""
    if on_deny not in ("raise", "message"):
        raise ValueError("on_deny: expected `raise` or `message`")
    guard = Guard(engine, session=session, principal=principal, check_results=check_results)
    name = tool.name

    def denied(e: PolicyDenied) -> Exception:
        return ToolException(str(e)) if on_deny == "message" else e

    def run(**kwargs: Any) -> Any:
        try:
            args = guard.check_call(name, kwargs)
            return guard.check_result(name, tool.invoke(args))
        except PolicyDenied as e:
            raise denied(e) from None

    async def arun(**kwargs: Any) -> Any:
        try:
            args = await guard.acheck_call(name, kwargs)
            return await guard.acheck_result(name, await tool.ainvoke(args))
        except PolicyDenied as e:
            raise denied(e) from None

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        infer_schema=False,
        handle_tool_error=on_deny == "message",
    )
