"""A policy agent for tests/envoy.rs (the protocol: crates/warden-envoy/README.md, "Policy
agents"). Standard library only. Usage: agent.py SOCKET [MODE]; listens on the Unix socket
SOCKET (replacing a stale one) created with mode MODE (octal, default 600) and prints "ready"
once listening. Offers:

- requireHeader (request): fails 403 with body "missing HEADER" when the configured header is
  absent;
- tagRequest (request, response): sets x-agent-tag to the configured value.
"""
import json
import os
import socketserver
import sys

DESCRIBE = {
    "policies": [
        {
            "name": "requireHeader",
            "phases": ["request"],
            "config_schema": {
                "type": "object",
                "required": ["header"],
                "additionalProperties": False,
                "properties": {"header": {"type": "string", "minLength": 1}},
            },
        },
        {
            "name": "tagRequest",
            "phases": ["request", "response"],
            "config_schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"value": {"type": "string"}},
            },
        },
    ]
}


def run(message):
    config = message.get("config") or {}
    exchange = message["exchange"]
    if message["policy"] == "requireHeader":
        header = config["header"].lower()
        if header in exchange["headers"]:
            return {"outcome": "pass"}
        return {
            "outcome": "fail",
            "status": 403,
            "headers": {"content-type": "text/plain"},
            "body": "missing " + header,
        }
    if message["policy"] == "tagRequest":
        return {"outcome": "pass", "set_headers": {"x-agent-tag": config.get("value", "tagged")}}
    return {"outcome": "fail", "status": 400, "body": "unknown policy"}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(1 << 20)
        if not line:
            return
        message = json.loads(line)
        op = message.get("op")
        if op == "describe":
            answer = DESCRIBE
        elif op == "health":
            answer = {"ok": True}
        else:
            answer = run(message)
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


path = sys.argv[1]
mode = int(sys.argv[2], 8) if len(sys.argv) > 2 else 0o600
if os.path.exists(path):
    os.unlink(path)
# Created without group or other access from the start: no window where others may connect.
os.umask(0o177)
server = Server(path, Handler)
os.chmod(path, mode)
print("ready", flush=True)
server.serve_forever()
