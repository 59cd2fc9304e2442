package payments

import rego.v1

too_large if {
	"payment" in input.classes
	input.args.amount > input.context.limit
}

after_fetch if {
	"payment" in input.classes
	some h in input.state.history
	startswith(h, "web_")
}

tainted if "untrusted" in input.state.taints

# Division by zero is an evaluation error: the decision fails closed.
broken if {
	input.tool == "explode"
	1 / input.args.zero > 0
}

reviewers := {r | some r in data.reviewers}

needs_review if {
	input.kind == "tool_call"
	not input.principal in reviewers
	input.tool == "approve_refund"
}
