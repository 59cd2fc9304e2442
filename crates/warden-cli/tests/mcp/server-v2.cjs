// A stateless MCP server (protocol 2026-07-28) built with the official TypeScript SDK v2
// (`@modelcontextprotocol/server`), served with `createMcpHandler` on node:http.
// server-everything speaks the 2025 revisions only; this is the 2026-07-28 peer.
// Usage: PORT=P node server-v2.cjs NPM_DIR
'use strict';
const http = require('node:http');
const path = require('node:path');
const { createRequire } = require('node:module');

const req = createRequire(path.join(path.resolve(process.argv[2]), 'package.json'));
const { McpServer, createMcpHandler } = req('@modelcontextprotocol/server');
const z = createRequire(req.resolve('@modelcontextprotocol/server'))('zod');

const text = (t) => ({ content: [{ type: 'text', text: t }] });
const factory = () => {
  const server = new McpServer({ name: 'warden-v2-peer', version: '1.0.0' });
  server.registerTool('echo', { description: 'Echoes back the input string', inputSchema: z.object({ message: z.string() }) },
    async ({ message }) => text(`Echo: ${message}`));
  server.registerTool('fetch', { description: 'Fetches a web page', inputSchema: z.object({ url: z.string() }) },
    async ({ url }) => text(`page ${url}: contact dave@example.net`));
  server.registerTool('secret', { description: 'Reads a secret', inputSchema: z.object({}) },
    async () => text('s3cr3t'));
  return server;
};
const handler = createMcpHandler(factory);

http.createServer(async (request, response) => {
  try {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const hasBody = !['GET', 'HEAD'].includes(request.method);
    const headers = Object.entries(request.headers).filter(([, v]) => typeof v === 'string');
    const fetchRequest = new Request(`http://${request.headers.host}${request.url}`, {
      method: request.method, headers, body: hasBody ? Buffer.concat(chunks) : undefined,
    });
    const answer = await handler.fetch(fetchRequest);
    response.writeHead(answer.status, Object.fromEntries(answer.headers));
    if (answer.body) for await (const chunk of answer.body) response.write(chunk);
    response.end();
  } catch (e) {
    console.error(e);
    response.writeHead(500).end();
  }
}).listen(Number(process.env.PORT), '127.0.0.1');
