"""An independent gRPC client for `warden serve`, generated at run time from Warden's proto by
PyPI `grpcio-tools`, with grpcio's own health and reflection clients.

usage: python3 client.py PROTO_DIR ADDRESS KEY POLICY_FILE
Prints one JSON object: what each call answered or raised.
"""

import json
import pathlib
import sys
import tempfile
import time

import grpc
import grpc_tools
from grpc_tools import protoc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from google.protobuf import json_format, struct_pb2

proto_dir, address, key, policy_file = sys.argv[1:5]

# Generate the client from the same proto the server was generated from.
out_dir = tempfile.mkdtemp()
well_known = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
status = protoc.main(
    [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"{proto_dir}/warden/v1/decision.proto",
    ]
)
assert status == 0, f"protoc failed: {status}"
sys.path.insert(0, out_dir)
from warden.v1 import decision_pb2 as pb, decision_pb2_grpc as pb_grpc  # noqa: E402

channel = grpc.insecure_channel(address)
stub = pb_grpc.DecisionServiceStub(channel)
auth = [("authorization", f"Bearer {key}")]
out = {}


def as_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def error(e):
    metadata = {k: v for k, v in (e.trailing_metadata() or ())}
    return {
        "code": e.code().name,
        "details": e.details(),
        "warden_code": metadata.get("warden-error-code"),
    }


def attempt(f):
    try:
        return f()
    except grpc.RpcError as e:
        return {"error": error(e)}


def call(tool, session, args=None):
    request = pb.DecisionRequest(tool=tool, session=session)
    if args is not None:
        request.args.CopyFrom(json_format.ParseDict(args, struct_pb2.Value()))
    return request


# Health: the server and the decision service; an unknown service is NOT_FOUND.
health = health_pb2_grpc.HealthStub(channel)
out["health"] = {
    name or "server": attempt(
        lambda name=name: health_pb2.HealthCheckResponse.ServingStatus.Name(
            health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        )
    )
    for name in ["", "warden.v1.DecisionService", "no.such.Service"]
}

# Reflection: the services, and the decision service's methods read from the server alone.
db = ProtoReflectionDescriptorDatabase(channel)
services = sorted(db.get_services())
from google.protobuf.descriptor_pool import DescriptorPool  # noqa: E402

pool = DescriptorPool(db)
described = pool.FindServiceByName("warden.v1.DecisionService")
out["reflection"] = {
    "services": services,
    "methods": sorted(m.name for m in described.methods),
}

# Unary decisions: the support agent reads a customer (tainted pii), then may not e-mail out.
out["no_key"] = attempt(lambda: as_dict(stub.Decide(call("crm.read_customer", "g1"), timeout=5)))
out["bad_key"] = attempt(
    lambda: as_dict(
        stub.Decide(
            call("crm.read_customer", "g1"),
            metadata=[("x-api-key", "wdn_not_a_key")],
            timeout=5,
        )
    )
)
out["read"] = attempt(
    lambda: as_dict(
        stub.Decide(call("crm.read_customer", "g1", {"id": 42}), metadata=auth, timeout=5)
    )
)
out["send"] = attempt(
    lambda: as_dict(
        stub.Decide(
            call("send_email", "g1", {"to": "x@example.com", "body": "hello"}),
            metadata=auth,
            timeout=5,
        )
    )
)
out["bad_kind"] = attempt(
    lambda: as_dict(stub.Decide(pb.DecisionRequest(kind="teleport"), metadata=auth, timeout=5))
)
out["too_large"] = attempt(
    lambda: as_dict(
        stub.Decide(
            call("send_email", "g9", {"body": "x" * 200_000}), metadata=auth, timeout=5
        )
    )
)

# A batch: all or nothing.
out["batch"] = attempt(
    lambda: as_dict(
        stub.DecideBatch(
            pb.DecideBatchRequest(
                requests=[call("crm.read_customer", "b1"), call("send_email", "b1")]
            ),
            metadata=auth,
            timeout=5,
        )
    )
)
out["batch_bad"] = attempt(
    lambda: as_dict(
        stub.DecideBatch(
            pb.DecideBatchRequest(
                requests=[call("crm.read_customer", "b2"), pb.DecisionRequest(kind="teleport")]
            ),
            metadata=auth,
            timeout=5,
        )
    )
)
out["batch_bad_session_untouched"] = attempt(
    lambda: as_dict(stub.Decide(call("send_email", "b2"), metadata=auth, timeout=5))
)


# A stream: answers in order, ids echoed, a bad request answered with an error in place.
def stream_requests():
    yield pb.DecideStreamRequest(id="a", request=call("crm.read_customer", "s1"))
    yield pb.DecideStreamRequest(id="b", request=pb.DecisionRequest(kind="teleport"))
    yield pb.DecideStreamRequest(id="c", request=call("send_email", "s1"))
    yield pb.DecideStreamRequest(id="d", request=call("human_approve", "s1"))
    yield pb.DecideStreamRequest(id="e", request=call("send_email", "s1"))


out["stream"] = attempt(
    lambda: [as_dict(r) for r in stub.DecideStream(stream_requests(), metadata=auth, timeout=10)]
)
out["stream_no_key"] = attempt(
    lambda: [as_dict(r) for r in stub.DecideStream(stream_requests(), timeout=10)]
)

# WatchPolicy: the version now, then the new one after the policy file changes.
watch = stub.WatchPolicy(pb.WatchPolicyRequest(), metadata=auth, timeout=20)
versions = [as_dict(next(watch))]
text = pathlib.Path(policy_file).read_text()
pathlib.Path(policy_file).write_text(text.replace('version: "1.0.0"', 'version: "1.1.0"'))
try:
    versions.append(as_dict(next(watch)))
except grpc.RpcError as e:
    versions.append({"error": error(e)})
watch.cancel()
out["watch"] = versions

print(json.dumps(out))
