"""OPA's Python client (PyPI `opa-python-client`), unchanged, against `warden serve`.

usage: python3 python_client.py PORT REGO_KEY
Prints one JSON object: what each client call answered or raised ({"error": ...}).
"""

import json
import sys

from opa_client import OpaClient

port, key = int(sys.argv[1]), sys.argv[2]


def attempt(f):
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - the test reads what was raised
        return {"error": f"{type(e).__name__}: {e}"}


client = OpaClient(host="127.0.0.1", port=port, token=key)
stranger = OpaClient(host="127.0.0.1", port=port, token="wdn_not_a_key")
out = {
    "connection": attempt(client.check_connection),
    "config": attempt(client.get_config),
    "health": attempt(client.check_health),
    "health_bundles": attempt(lambda: client.check_health(query={"bundles": True})),
    "data": attempt(lambda: client.get_data("admins")),
    "element": attempt(lambda: client.get_data("admins/0")),
    "rule": attempt(lambda: client.query_rule({"user": "alice"}, "authz", "allow")),
    "rule_metrics": attempt(
        lambda: client.query_rule({"user": "mallory"}, "authz", "allow", {"metrics": True})
    ),
    "ad_hoc": attempt(lambda: client.ad_hoc_query("x := data.admins[_]")),
    "ad_hoc_input": attempt(
        lambda: client.ad_hoc_query("data.authz.allow == true", {"user": "alice"})
    ),
    "bulk": attempt(
        lambda: client.bulk_query_rule(
            [{"user": "alice"}, {"user": "mallory"}, {"user": "bob"}], "authz", "allow"
        )
    ),
    "bulk_keyed": attempt(
        lambda: client.bulk_query_rule({"a": {"user": "bob"}, "m": {"user": "mal"}}, "authz", "allow")
    ),
    "undefined": attempt(lambda: client.get_data("nothing_here")),
    "stranger": attempt(lambda: stranger.query_rule({"user": "alice"}, "authz", "allow")),
}
print(json.dumps(out))
