// A real MCP client (the official TypeScript SDK) driven by the Rust end-to-end tests.
// Usage: node client.cjs NPM_DIR SPEC_JSON
//   SPEC: {"transport": "stdio", "command": "...", "args": [...], "clients": N, "steps": [...]}
//      or {"transport": "http", "url": "http://host:port/mcp", "clients": N, "steps": [...]}
//      ("protocol": "2026-07-28" with http: the v2 SDK client, stateless)
//   step: {"client": i, "op": "list"} | {"client": i, "op": "call" | "task", "tool": "...", "args": {...}}
//         (with "progress": true, the line also has "progress_ms" and "done_ms": when each progress
//         notification and the result arrived, in ms after the call)
// Prints one JSON line per step: {"ok": RESULT} (for list: {"ok": {"tools": [names]}}) or
// {"error": {"code": C, "message": M}}; then {"sessions": [ids]} for http.
'use strict';
const { createRequire } = require('node:module');
const path = require('node:path');

async function main() {
  const [npmDir, specText] = process.argv.slice(2);
  const req = createRequire(path.join(path.resolve(npmDir), 'package.json'));
  const { Client } = req('@modelcontextprotocol/sdk/client/index.js');
  const spec = JSON.parse(specText);
  const clients = [];
  for (let i = 0; i < (spec.clients || 1); i++) {
    let transport;
    if (spec.transport === 'stdio') {
      const { StdioClientTransport } = req('@modelcontextprotocol/sdk/client/stdio.js');
      transport = new StdioClientTransport({
        command: spec.command, args: spec.args, env: { ...process.env }, stderr: 'inherit',
      });
    } else {
      const { StreamableHTTPClientTransport } = req('@modelcontextprotocol/sdk/client/streamableHttp.js');
      // `spec.headers`: extra request headers (e.g. the daemon's API key).
      transport = new StreamableHTTPClientTransport(new URL(spec.url), { requestInit: { headers: spec.headers || {} } });
    }
    let client;
    if (spec.protocol === '2026-07-28') {
      // The v2 SDK (`@modelcontextprotocol/client`): probes with `server/discover`, then sends
      // per-request `_meta` and the `Mcp-Method` / `Mcp-Name` headers, with no session.
      const v2 = req('@modelcontextprotocol/client');
      transport = new v2.StreamableHTTPClientTransport(new URL(spec.url));
      client = new v2.Client({ name: 'warden-e2e', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    } else {
      client = new Client({ name: 'warden-e2e', version: '1.0.0' }, { capabilities: {} });
    }
    await client.connect(transport);
    clients.push({ client, transport });
  }
  for (const step of spec.steps) {
    const { client } = clients[step.client || 0];
    try {
      if (step.op === 'task') {
        // A task-augmented call (2025-11-25): tools/call with `task`, then tasks/get and tasks/result.
        const types = [];
        let line = null;
        for await (const message of client.experimental.tasks.callToolStream({ name: step.tool, arguments: step.args || {} })) {
          types.push(message.type);
          if (message.type === 'result') line = { ok: message.result };
          if (message.type === 'error') line = { error: { code: message.error.code, message: String(message.error.message) } };
        }
        console.log(JSON.stringify({ ...(line || { error: { message: 'no result' } }), stream: types }));
      } else if (step.op === 'list') {
        const result = await client.listTools();
        console.log(JSON.stringify({ ok: { tools: result.tools.map((t) => t.name) } }));
      } else {
        const start = Date.now();
        const progress = [];
        const options = step.progress ? { onprogress: () => progress.push(Date.now() - start) } : undefined;
        const result = await client.callTool({ name: step.tool, arguments: step.args || {} }, undefined, options);
        const line = { ok: result };
        if (step.progress) Object.assign(line, { progress_ms: progress, done_ms: Date.now() - start });
        console.log(JSON.stringify(line));
      }
    } catch (e) {
      console.log(JSON.stringify({ error: { code: e.code, message: String(e.message) } }));
    }
  }
  if (spec.protocol === '2026-07-28') {
    const { client } = clients[0];
    console.log(JSON.stringify({ era: client.getProtocolEra(), version: client.getNegotiatedProtocolVersion() }));
  }
  const sessions = [];
  for (const { client, transport } of clients) {
    if (spec.transport !== 'stdio' && spec.protocol !== '2026-07-28') {
      sessions.push(transport.sessionId);
      await transport.terminateSession();
    }
    await client.close();
  }
  console.log(JSON.stringify({ sessions }));
}

main().then(() => process.exit(0), (e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
