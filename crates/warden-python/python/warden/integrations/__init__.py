"""Adapters for agent frameworks, each importing its framework only when used:

- ``warden.integrations.langchain``: ``guard_tool`` wraps a ``langchain-core`` tool;
- ``warden.integrations.openai_agents``: ``guard_function_tool`` wraps an Agents SDK
  ``FunctionTool``; ``input_guardrail`` / ``output_guardrail`` are its tool guardrails;
- ``warden.integrations.mcp``: ``GuardedSession`` wraps an ``mcp`` ``ClientSession``.
"""
