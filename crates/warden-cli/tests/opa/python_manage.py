"""OPA's Python client (PyPI `opa-python-client`), unchanged, managing policies and data on
`warden serve`: list and describe policies, push a module, write, patch and delete data, delete
the module; an agent's key is refused every change.

usage: python3 python_manage.py PORT ADMIN_KEY AGENT_KEY
Prints one JSON object: what each client call answered or raised ({"error": ...}).
"""

import json
import sys

from opa_client import OpaClient

port, admin_key, agent_key = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def attempt(f):
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - the test reads what was raised
        errors = getattr(e, "errors", None)
        return {"error": f"{type(e).__name__}: {e}", "errors": errors}


admin = OpaClient(host="127.0.0.1", port=port, token=admin_key)
agent = OpaClient(host="127.0.0.1", port=port, token=agent_key)

EXTRA = """package extra

allow if input.n <= data.limits.max
"""

# Written in Rego v0 syntax: the client upgrades it when the server says `if` is required.
OLD_STYLE = """package old

allow {
    input.n == 1
}
"""

out = {}
out["list_before"] = attempt(agent.get_policies_list)
out["info_before"] = attempt(agent.get_policies_info)
out["agent_put"] = attempt(lambda: agent.update_policy_from_string(EXTRA, "extra"))
out["put"] = attempt(lambda: admin.update_policy_from_string(EXTRA, "extra"))
out["broken"] = attempt(
    lambda: admin.update_policy_from_string("package broken\n\nallow if {{\n", "broken")
)
out["old_style"] = attempt(lambda: admin.update_policy_from_string(OLD_STYLE, "old"))
out["old_style_decides"] = attempt(lambda: admin.query_rule({"n": 1}, "old", "allow"))
out["list_after"] = attempt(admin.get_policies_list)
out["info_after"] = attempt(admin.get_policies_info)
out["policy"] = attempt(lambda: admin.get_policy("extra"))
out["agent_policy"] = attempt(lambda: agent.get_policy("extra"))
out["agent_data"] = attempt(lambda: agent.update_or_create_data({"max": 3}, "limits"))
out["data"] = attempt(lambda: admin.update_or_create_data({"max": 3}, "limits"))
out["five_over_three"] = attempt(lambda: agent.query_rule({"n": 5}, "extra", "allow"))
out["patch"] = attempt(
    lambda: admin.patch_data("limits", [{"op": "replace", "path": "/max", "value": 10}])
)
out["five_under_ten"] = attempt(lambda: agent.query_rule({"n": 5}, "extra", "allow"))
out["bad_patch"] = attempt(
    lambda: admin.patch_data("limits", [{"op": "remove", "path": "/nothing"}])
)
out["limits"] = attempt(lambda: agent.get_data("limits"))
out["delete_data"] = attempt(lambda: admin.delete_data("limits"))
out["limits_gone"] = attempt(lambda: agent.get_data("limits"))
out["delete_policy"] = attempt(lambda: admin.delete_policy("extra"))
out["extra_gone"] = attempt(lambda: agent.query_rule({"n": 1}, "extra", "allow"))
out["delete_missing"] = attempt(lambda: admin.delete_policy("extra"))
out["list_end"] = attempt(admin.get_policies_list)
print(json.dumps(out))
