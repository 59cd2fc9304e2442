package authz

import rego.v1

default allow := false

allow if input.user in data.admins

allow if {
	input.action == "read"
	startswith(input.resource, "public/")
}
