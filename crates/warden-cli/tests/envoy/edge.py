"""Protocol edge cases against Warden's ext_proc and ext_authz services, from an independent
client (PyPI grpcio + xds-protos, Envoy's generated protos). Usage: edge.py HOST:PORT API_KEY.
Prints one JSON object: case -> what Warden answered (a gRPC status name, `immediate:<status>`,
or the phase of a CONTINUE answer with the headers it sets)."""
import json
import sys

import grpc
from google.protobuf import struct_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as epg
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm

addr, key = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(addr)
stub = epg.ExternalProcessorStub(channel)
TIMEOUT = 10


def attrs(route):
    s = struct_pb2.Struct()
    s.update({"xds.route_name": route, "source.address": "127.0.0.1:5555"})
    return {"envoy.filters.http.ext_proc": s}


def headers(pairs, eos, raw=True):
    hm = base_pb2.HeaderMap()
    for k, v in pairs:
        if raw:
            hm.headers.add(key=k, raw_value=v.encode())
        else:
            hm.headers.add(key=k, value=v)
    return ep.HttpHeaders(headers=hm, end_of_stream=eos)


def request_headers(route, pairs, eos, raw=True, body_mode=pm.ProcessingMode.BUFFERED):
    return ep.ProcessingRequest(
        request_headers=headers([(":method", "POST"), (":path", "/x")] + pairs, eos, raw),
        attributes=attrs(route),
        protocol_config=ep.ProtocolConfiguration(
            request_body_mode=body_mode, response_body_mode=pm.ProcessingMode.BUFFERED),
    )


def describe(answer):
    kind = answer.WhichOneof("response")
    if kind == "immediate_response":
        return "immediate:%d" % answer.immediate_response.status.code
    common = getattr(answer, kind).response
    sets = sorted(h.header.key for h in common.header_mutation.set_headers)
    return "%s:%s" % (kind, ",".join(sets))


def run(messages):
    """Sends `messages`, returning what each answer was, then the stream's end."""
    out = []
    try:
        for answer in stub.Process(iter(messages), timeout=TIMEOUT):
            out.append(describe(answer))
    except grpc.RpcError as e:
        out.append(e.code().name)
    return out


results = {}
results["out_of_order"] = run([ep.ProcessingRequest(response_headers=headers([(":status", "200")], True))])
results["no_phase"] = run([ep.ProcessingRequest()])
results["body_before_headers"] = run([ep.ProcessingRequest(request_body=ep.HttpBody(body=b"x", end_of_stream=True))])
results["unknown_route"] = run([request_headers("nowhere", [], True)])
results["value_not_raw_value"] = run([request_headers("keyed", [("x-api-key", key)], True, raw=False)])
results["raw_value"] = run([request_headers("keyed", [("x-api-key", key)], True)])
results["oversized_body"] = run([
    request_headers("scrub", [], False),
    ep.ProcessingRequest(request_body=ep.HttpBody(body=b"a" * (1024 * 1024 + 1), end_of_stream=True)),
])
results["streamed_chunk"] = run([
    request_headers("scrub", [], False),
    ep.ProcessingRequest(request_body=ep.HttpBody(body=b"part", end_of_stream=False)),
])
results["body_mode_none"] = run([request_headers("scrub", [], False, body_mode=pm.ProcessingMode.NONE)])
results["body_skipped"] = run([
    request_headers("scrub", [], False),
    ep.ProcessingRequest(response_headers=headers([(":status", "200")], True)),
])
results["huge_header"] = run([request_headers("open", [("x-big", "v" * 70000)], True)])
results["invalid_utf8_header"] = run([ep.ProcessingRequest(
    request_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=b"/x"),
        base_pb2.HeaderValue(key="x-bad", raw_value=b"\xff\xfe")]), end_of_stream=True),
    attributes=attrs("open"))])

# Bytes that are no ProcessingRequest at all.
garbage = channel.stream_stream(
    "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
    request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    list(garbage(iter([b"\xff\xff\xff\xff"]), timeout=TIMEOUT))
    results["malformed"] = ["OK"]
except grpc.RpcError as e:
    results["malformed"] = [e.code().name]

authz = external_auth_pb2_grpc.AuthorizationStub(channel)
try:
    authz.Check(external_auth_pb2.CheckRequest(), timeout=TIMEOUT)
    results["authz_empty"] = "OK"
except grpc.RpcError as e:
    results["authz_empty"] = e.code().name

print(json.dumps(results))
