"""The official MCP Python SDK over TLS: initializes a session with URL, the server verified
against CA_BUNDLE, presenting CLIENT_CERT/CLIENT_KEY when given (mutual TLS).

usage: python3 mcp_sdk.py URL CA_BUNDLE [CLIENT_CERT CLIENT_KEY [TOOL]]
Prints one JSON object: {"server": NAME} or {"error": TYPE}; with TOOL, the tool is called after
listing the tools, and "call" holds its text, or "denied: MESSAGE" when Warden refused it.
"""

import asyncio
import json
import ssl
import sys

import httpx2
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.client.streamable_http import streamable_http_client


async def main():
    url, bundle = sys.argv[1], sys.argv[2]
    context = ssl.create_default_context(cafile=bundle)
    if len(sys.argv) > 4:
        context.load_cert_chain(sys.argv[3], sys.argv[4])
    async with httpx2.AsyncClient(verify=context, timeout=10) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                result = await session.initialize()
                seen = {"server": result.server_info.name}
                if len(sys.argv) > 5:
                    await session.list_tools()
                    try:
                        called = await session.call_tool(sys.argv[5], {})
                        texts = [c.text for c in called.content if getattr(c, "text", None)]
                        seen["call"] = ("denied: " if called.is_error else "") + " ".join(texts)
                    except MCPError as e:
                        seen["call"] = f"denied: {e.error.message}"
                return seen


try:
    print(json.dumps(asyncio.run(main())))
except BaseException as e:  # noqa: BLE001 - the test reads what was raised
    import traceback

    traceback.print_exception(e, file=sys.stderr)
    print(json.dumps({"error": type(e).__name__}))
