"""An MCP server on the official Python SDK (low-level API) over Streamable HTTP (JSON answers)
that answers a call to any tool: `called NAME`, like any_tool_server.py over stdio. Listens on a
free loopback port and prints it on stdout; the endpoint is /mcp."""
import socket

import uvicorn
from mcp import types
from mcp.server.lowlevel import Server


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[])


async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text="called " + params.name)])


server = Server("any-tool", on_list_tools=list_tools, on_call_tool=call_tool)
app = server.streamable_http_app(json_response=True)

if __name__ == "__main__":
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
