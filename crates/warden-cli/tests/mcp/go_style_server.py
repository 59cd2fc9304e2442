"""A stdio MCP server that reads JSON-RPC the way Go's encoding/json fills a struct: a key
matches a field case-insensitively, with Unicode simple folding (so `Method`, `NAME`,
`argumentſ` and `\u212aey` match), and the last matching key wins. Each tool call leaves a
file named after the tool in $WARDEN_MARKS."""
import json
import os
import sys


def fold(s):
    return s.lower().replace("\u017f", "s").replace("\u212a", "k")


def field(pairs, name):
    value = None
    for key, v in pairs:
        if key == name or fold(key) == fold(name):
            value = v
    return value


def pairs_hook(pairs):
    return pairs  # keep every key, in order


def reply(id_, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": id_, "result": result}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    try:
        message = json.loads(line, object_pairs_hook=pairs_hook)
    except ValueError:
        continue
    method = field(message, "method")
    id_ = field(message, "id")
    params = field(message, "params") or []
    if method == "initialize":
        reply(id_, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "go-style", "version": "1"}})
    elif method == "tools/list":
        reply(id_, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "get-env")]})
    elif method == "tools/call":
        name = field(params, "name")
        marks = os.environ.get("WARDEN_MARKS")
        if marks and isinstance(name, str):
            open(os.path.join(marks, name), "a").close()
        reply(id_, {"content": [{"type": "text", "text": "ran " + str(name)}]})
    elif id_ is not None:
        reply(id_, {})
