"""Verify a Warden decision token with PyJWT (+ cryptography), independently of Warden's code.

usage: verify_pyjwt.py JWKS TOKEN ARGS TOOL NOW [AUDIENCE]
Prints the claims as JSON and exits 0 when valid; prints the error and exits 1 otherwise;
exits 3 when PyJWT or cryptography is missing.
"""
import hashlib
import json
import sys

try:
    import jwt
    from jwt import PyJWK
except ImportError as e:  # pragma: no cover
    print(f"MISSING: {e}", file=sys.stderr)
    sys.exit(3)


def jcs_simple(value):
    # RFC 8785 for values without floats and with ASCII keys: sorted keys, no whitespace, UTF-8.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main():
    jwks_path, token_path, args_path, tool, now = sys.argv[1:6]
    audience = sys.argv[6] if len(sys.argv) > 6 else None
    jwks = json.load(open(jwks_path))
    token = open(token_path).read().strip()
    args = json.load(open(args_path))
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT", header
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pyjwk = PyJWK.from_dict(key)
    try:
        claims = jwt.decode(
            token,
            key=pyjwk.key,
            algorithms=["EdDSA"],
            options={"require": ["exp", "iat", "jti", "iss"], "verify_iat": False},
            audience=audience,
            leeway=0,
        )
    except jwt.PyJWTError as e:
        print(f"REJECTED: {type(e).__name__}: {e}")
        sys.exit(1)
    # exp checked against the real clock by PyJWT; also against the given `now`.
    if int(now) >= claims["exp"]:
        print("REJECTED: expired at given now")
        sys.exit(1)
    if claims["tool"] != tool:
        print("REJECTED: tool")
        sys.exit(1)
    want = "sha256:" + hashlib.sha256(jcs_simple(args)).hexdigest()
    if claims["args_hash"] != want:
        print("REJECTED: args_hash")
        sys.exit(1)
    print(json.dumps(claims))


main()
