"""Small Streamable HTTP MCP upstreams that behave like servers seen in the field, for the bypass
tests. MODE (argv[1]) picks the behaviour:

- `utf7`: decodes each POST body with the `charset` its Content-Type names, as TypeScript SDK
  servers up to 1.24.3 did (UTF-7 hides a second `method` from a UTF-8 reader).
- `string-id`: answers request id N with the id "N" (a client matching ids loosely takes it).
- `bom-sse`: answers with an event stream starting with a byte-order mark.
- `replay`: answers on an event stream with event ids, and replays every earlier event to a GET
  carrying `Last-Event-ID`, as a resumable server does.
- `stray`: answers a tools/call with the real answer preceded by an answer to an id never sent.

Every tools/call answers with text holding an e-mail address (which the tests' policy redacts)
and leaves a file named after the tool in $WARDEN_MARKS. Prints the port on stdout.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
CONTACT = "carol.contact@example.org"
EVENTS = []  # (event id, data) sent so far, for `replay`


def result_for(name):
    return {"content": [{"type": "text", "text": f"{name} says: write to {CONTACT}"}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Mcp-Session-Id", "s-1")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if MODE == "replay" and self.headers.get("Last-Event-ID") is not None:
            body = b"".join(f"id: {i}\ndata: {d}\n\n".encode() for i, d in EVENTS)
            self.send(200, "text/event-stream", body)
        else:
            self.send(405, "text/plain", b"")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        charset = "utf-8"
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset":
                charset = value.strip('"')
        try:
            message = json.loads(raw.decode(charset if MODE == "utf7" else "utf-8"))
        except (ValueError, LookupError):
            self.send(400, "text/plain", b"bad json")
            return
        method, id_ = message.get("method"), message.get("id")
        if id_ is None:
            self.send(202, "text/plain", b"")
            return
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": MODE, "version": "1"}}
        elif method == "tools/call":
            name = message.get("params", {}).get("name")
            marks = os.environ.get("WARDEN_MARKS")
            if marks and isinstance(name, str):
                open(os.path.join(marks, name), "a").close()
            result = result_for(name)
        else:
            result = {}
        answer = {"jsonrpc": "2.0", "id": id_, "result": result}
        if MODE == "string-id" and method == "tools/call":
            answer["id"] = str(id_)
        data = json.dumps(answer)
        if MODE == "bom-sse" and method == "tools/call":
            self.send(200, "text/event-stream", b"\xef\xbb\xbfdata: " + data.encode() + b"\n\n")
        elif MODE == "replay":
            EVENTS.append((len(EVENTS) + 1, data))
            self.send(200, "text/event-stream", f"id: {len(EVENTS)}\ndata: {data}\n\n".encode())
        elif MODE == "stray" and method == "tools/call":
            stray = json.dumps({"jsonrpc": "2.0", "id": 999, "result": result})
            self.send(200, "text/event-stream", f"data: {stray}\n\ndata: {data}\n\n".encode())
        else:
            self.send(200, "application/json", data.encode())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
