"""An agent on the official MCP Python SDK: connects over Streamable HTTP to URL (argv[1]) with the
API key in WARDEN_API_KEY, calls each tool of the JSON list argv[2] ([{"tool", "args"}]) in turn,
and prints one JSON line per call: {"text": ...} for a result, {"error": {"code", "message",
"data"}} for a JSON-RPC error."""
import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client


async def main():
    url, calls = sys.argv[1], json.loads(sys.argv[2])
    headers = {"x-api-key": os.environ["WARDEN_API_KEY"]}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                for call in calls:
                    try:
                        result = await session.call_tool(call["tool"], call.get("args", {}))
                        text = "".join(c.text for c in result.content if c.type == "text")
                        print(json.dumps({"text": text}), flush=True)
                    except MCPError as e:
                        error = {"code": e.error.code, "message": e.error.message, "data": e.error.data}
                        print(json.dumps({"error": error}), flush=True)


asyncio.run(main())
