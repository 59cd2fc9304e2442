"""A JWKS endpoint and token minter for tests/envoy.rs (PyJWT + cryptography, EC P-256).

GET /jwks.json   the published keys (counted: GET /stats answers {"fetches": N})
POST /mint       {"kid", "claims"} -> the token signed by that key (ES256); an unpublished kid
                 is a key of its own that the set never holds
POST /publish    {"kid"} adds a new key to the published set (a rotation)
Prints its port on stdout once listening (loopback only)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

keys = {}
published = []
fetches = 0
lock = threading.Lock()


def key(kid):
    if kid not in keys:
        keys[kid] = ec.generate_private_key(ec.SECP256R1())
    return keys[kid]


key("k1")
published.append("k1")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body):
        data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global fetches
        with lock:
            if self.path == "/jwks.json":
                fetches += 1
                jwks = []
                for kid in published:
                    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key(kid).public_key()))
                    jwk.update({"kid": kid, "alg": "ES256", "use": "sig"})
                    jwks.append(jwk)
                self._send(200, {"keys": jwks})
            elif self.path == "/stats":
                self._send(200, {"fetches": fetches})
            else:
                self._send(404, {})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        doc = json.loads(self.rfile.read(length) or b"{}")
        with lock:
            if self.path == "/mint":
                token = jwt.encode(doc["claims"], key(doc["kid"]), algorithm="ES256",
                                   headers={"kid": doc["kid"]})
                self._send(200, {"token": token})
            elif self.path == "/publish":
                key(doc["kid"])
                published.append(doc["kid"])
                self._send(200, {})
            else:
                self._send(404, {})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
