"""OpenAI Agents SDK (``openai-agents``): function tools the policy guards.

``guard_function_tool`` wraps a ``FunctionTool`` (e.g. from ``@function_tool``): the policy
decides each call with the arguments the model sent (redacted ones reach the function) and
each result (a redacted result is what the model sees). A denial is returned to the model as
the tool's output (``on_deny="message"``, the default: the run goes on and the model reads
why) or raised as ``PolicyDenied`` (``on_deny="raise"``).

``input_guardrail`` / ``output_guardrail`` are the SDK's own tool guardrails
(``tool_input_guardrails=[...]`` on a function tool): they can reject a call or a result with
the policy's reason, but not rewrite it; use ``guard_function_tool`` for redaction.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from agents import (
    FunctionTool,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
)
from agents.tool_context import ToolContext

from ..guard import Decider, Guard, PolicyDenied, SessionArg

__all__ = ["guard_function_tool", "input_guardrail", "output_guardrail"]


def guard_function_tool(
    tool: FunctionTool,
    engine: Optional[Decider] = None,
    *,
    session: SessionArg = None,
    principal: SessionArg = None,
    check_results: bool = True,
    on_deny: str = "message",
) -> FunctionTool:
    """A copy of ``tool`` whose ``on_invoke_tool`` asks the policy first and after."""
    if on_deny not in ("raise", "message"):
        raise ValueError("on_deny: expected `raise` or `message`")
    guard = Guard(engine, session=session, principal=principal, check_results=check_results)
    inner = tool.on_invoke_tool
    name = tool.name

    async def on_invoke_tool(ctx: ToolContext[Any], input_json: str) -> Any:
        try:
            args = json.loads(input_json) if input_json else {}
        except ValueError:
            # Malformed model output: the SDK's own tool reports it.
            return await inner(ctx, input_json)
        try:
            if isinstance(args, dict):
                checked = await guard.acheck_call(name, args)
                if checked is not args:
                    input_json = json.dumps(checked)
            return await guard.acheck_result(name, await inner(ctx, input_json))
        except PolicyDenied as e:
            if on_deny == "raise":
                raise
            return str(e)

    return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)


def _args(data: ToolInputGuardrailData) -> dict:
    raw = getattr(data.context, "tool_arguments", None) or "{}"
    try:
        args = json.loads(raw)
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


def input_guardrail(
    engine: Optional[Decider] = None,
    *,
    session: SessionArg = None,
    principal: SessionArg = None,
) -> ToolInputGuardrail:
    """A tool input guardrail: the policy decides the call; a denial rejects it with the
    policy's reason as the tool's output (the model reads it; the run goes on)."""
    guard = Guard(engine, session=session, principal=principal)

    async def check(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        try:
            await guard.acheck_call(data.context.tool_name, _args(data))
        except PolicyDenied as e:
            return ToolGuardrailFunctionOutput.reject_content(
                str(e), output_info={"rule": e.rule, "reasons": e.reasons}
            )
        return ToolGuardrailFunctionOutput.allow()

    return ToolInputGuardrail(guardrail_function=check, name="warden_input")


def output_guardrail(
    engine: Optional[Decider] = None,
    *,
    session: SessionArg = None,
    principal: SessionArg = None,
) -> ToolOutputGuardrail:
    """A tool output guardrail: the policy decides the result; a denial replaces it with the
    policy's reason."""
    guard = Guard(engine, session=session, principal=principal)

    async def check(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        try:
            await guard.acheck_result(data.context.tool_name, data.output)
        except PolicyDenied as e:
            return ToolGuardrailFunctionOutput.reject_content(
                str(e), output_info={"rule": e.rule, "reasons": e.reasons}
            )
        return ToolGuardrailFunctionOutput.allow()

    return ToolOutputGuardrail(guardrail_function=check, name="warden_output")
