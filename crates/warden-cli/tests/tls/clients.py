"""TLS clients against `warden serve`: PyPI `requests` (HTTP/1.1) and `grpcio` (HTTP/2, gRPC
health), with and without a client certificate; and a load loop that counts failures while the
server's certificate is rotated.

usage: python3 clients.py ADDRESS CA_BUNDLE [CLIENT_CERT CLIENT_KEY]
       python3 clients.py --load SECONDS ADDRESS CA_BUNDLE
Prints one JSON object.
"""

import json
import sys
import time

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

BODY = {"tool": "crm.read_customer", "session": "tls"}


def attempt(f):
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - the test reads what was raised
        return {"error": type(e).__name__}


if sys.argv[1] == "--load":
    seconds, address, bundle = float(sys.argv[2]), sys.argv[3], sys.argv[4]
    ok = failed = 0
    errors = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        # A new connection every few requests, so that some are made after the rotation.
        with requests.Session() as session:
            for _ in range(5):
                try:
                    r = session.post(
                        f"https://{address}/v1/decide", json=BODY, verify=bundle, timeout=5
                    )
                    if r.status_code == 200:
                        ok += 1
                    else:
                        failed += 1
                        errors.append(r.status_code)
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    errors.append(type(e).__name__)
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5]}))
    sys.exit(0)

address, bundle = sys.argv[1], sys.argv[2]
cert = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
out = {}
out["requests"] = attempt(
    lambda: requests.post(
        f"https://{address}/v1/decide", json=BODY, verify=bundle, cert=cert, timeout=5
    ).json()["decision"]
)
root = open(bundle, "rb").read()
if cert:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=open(cert[1], "rb").read(),
        certificate_chain=open(cert[0], "rb").read(),
    )
else:
    credentials = grpc.ssl_channel_credentials(root_certificates=root)
host, port = address.rsplit(":", 1)
channel = grpc.secure_channel(f"localhost:{port}", credentials)
health = health_pb2_grpc.HealthStub(channel)
out["grpc_health"] = attempt(
    lambda: health_pb2.HealthCheckResponse.ServingStatus.Name(
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    )
)
print(json.dumps(out))
