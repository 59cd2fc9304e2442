"""An MCP server on the official Python SDK (low-level API) over stdio that answers a call to
any tool: `called NAME`. It lists no tools (the scenarios name their own), so the proxy's
decision alone tells a forwarded call from a refused one."""
import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server


async def list_tools(ctx, params):
    return types.ListToolsResult(tools=[])


async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text="called " + params.name)])


server = Server("any-tool", on_list_tools=list_tools, on_call_tool=call_tool)


async def main():
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
