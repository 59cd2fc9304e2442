"""An OTLP/gRPC and OTLP/HTTP trace receiver (PyPI `opentelemetry-proto` + `grpcio`) and a minimal MCP
Streamable HTTP upstream, for crates/warden-cli/tests/telemetry.rs.

Usage: collector.py OUT.jsonl. Prints one JSON line with the two ports, then serves until
killed. Each OTLP export is appended to OUT.jsonl as {"export": <the request as JSON>, "raw":
<its protobuf bytes, base64>}; each upstream request as {"upstream": {"traceparent": ...,
"method": ...}}.
"""

import base64
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()
OUT = open(sys.argv[1], "a", encoding="utf-8")


def record(entry):
    with LOCK:
        OUT.write(json.dumps(entry) + "\n")
        OUT.flush()


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        record(
            {
                "export": MessageToDict(request),
                "raw": base64.b64encode(request.SerializeToString()).decode(),
            }
        )
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpHttp(BaseHTTPRequestHandler):
    """OTLP/HTTP: `POST /v1/traces` with a binary protobuf ExportTraceServiceRequest."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        record(
            {
                "export": MessageToDict(request),
                "raw": base64.b64encode(body).decode(),
                "content_type": self.headers.get("content-type"),
            }
        )
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


class Upstream(BaseHTTPRequestHandler):
    """Answers `initialize` and `tools/list` as an MCP server would, in JSON."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        record(
            {
                "upstream": {
                    "traceparent": self.headers.get("traceparent"),
                    "method": body.get("method"),
                }
            }
        )
        if "id" not in body:
            self.send_response(202)
            self.end_headers()
            return
        if body.get("method") == "initialize":
            result = {
                "protocolVersion": body["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "stub", "version": "1.0.0"},
            }
        else:
            result = {"tools": []}
        answer = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    otlp_http = ThreadingHTTPServer(("127.0.0.1", 0), OtlpHttp)
    threading.Thread(target=otlp_http.serve_forever, daemon=True).start()
    ports = {"otlp": otlp_port, "mcp": upstream.server_address[1],
             "otlp_http": otlp_http.server_address[1]}
    print(json.dumps(ports), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
