// An MCP upstream stand-in for the console tests (crates/warden-cli/tests/console.rs): Streamable
// HTTP with JSON answers at /mcp, Node's standard library only. Its tools are read from the JSON
// file TOOLS_FILE at every tools/list, so a test changes a tool's definition while it runs (what
// the pins hold back until a person approves it); no existing stand-in can. A tools/call of any
// tool answers `called NAME`; the arguments are never echoed. Listens on a free loopback port and
// prints it on stdout.
'use strict';
const http = require('node:http');
const fs = require('node:fs');

const TOOLS_FILE = process.env.TOOLS_FILE;

function answer(id, result) {
  return { jsonrpc: '2.0', id, result };
}

function handle(message) {
  switch (message.method) {
    case 'initialize':
      return answer(message.id, {
        protocolVersion: (message.params && message.params.protocolVersion) || '2025-06-18',
        capabilities: { tools: { listChanged: false } },
        serverInfo: { name: 'console-test-upstream', version: '1.0.0' },
      });
    case 'tools/list':
      return answer(message.id, { tools: JSON.parse(fs.readFileSync(TOOLS_FILE, 'utf8')) });
    case 'tools/call':
      return answer(message.id, { content: [{ type: 'text', text: 'called ' + message.params.name }] });
    case 'ping':
      return answer(message.id, {});
    default:
      return { jsonrpc: '2.0', id: message.id, error: { code: -32601, message: 'method not found' } };
  }
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/mcp') {
    res.writeHead(405).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let message;
    try {
      message = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(
        JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } }));
      return;
    }
    // A notification (no id) is accepted without an answer.
    if (message.id === undefined) {
      res.writeHead(202).end();
      return;
    }
    let answered;
    try {
      answered = handle(message);
    } catch (e) {
      answered = { jsonrpc: '2.0', id: message.id, error: { code: -32603, message: String(e) } };
    }
    const body = JSON.stringify(answered);
    res.writeHead(200, { 'content-type': 'application/json', 'mcp-session-id': 'console-test' }).end(body);
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(server.address().port + '\n');
});
