"""Validates policy documents against Warden's policy JSON Schema with the PyPI `jsonschema`
validator (an implementation independent of Warden). Reads {"schema": ..., "documents":
[{"name": ..., "doc": ...}]} on stdin; prints one JSON object per document:
{"name": ..., "errors": [{"path": ..., "keyword": ..., "message": ...}]}."""

import json
import sys

import jsonschema

request = json.load(sys.stdin)
validator_class = jsonschema.validators.validator_for(request["schema"])
validator_class.check_schema(request["schema"])
validator = validator_class(request["schema"])
for item in request["documents"]:
    errors = [
        {"path": e.json_path, "keyword": e.validator, "message": e.message}
        for e in validator.iter_errors(item["doc"])
    ]
    print(json.dumps({"name": item["name"], "errors": errors}))

