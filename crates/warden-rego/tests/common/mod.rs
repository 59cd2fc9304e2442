//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use warden_rego::{QueryId, RegoLimits, RegoModule, RegoPolicy};

/// Scenario 09's module, verbatim.
pub const PAYMENTS: &str = r#"package payments
import rego.v1
too_large if {
  "payment" in input.classes
  input.args.amount > input.context.limit
}
after_fetch if {
  "payment" in input.classes
  "web_fetch" in input.state.history
}
"#;

pub fn compile(sources: &[(&str, &str)], queries: &[&str]) -> (RegoPolicy, Vec<QueryId>) {
    let modules = sources
        .iter()
        .map(|(n, s)| RegoModule::new(*n, *s))
        .collect();
    RegoPolicy::compile(modules, None, queries, RegoLimits::default()).expect("compiles")
}

/// The Rego `input` the core builds: the request plus `classes` and `state`.
pub fn input(
    request: serde_json::Value,
    classes: &[&str],
    taints: &[&str],
    history: &[&str],
) -> serde_json::Value {
    let mut v = request;
    let obj = v.as_object_mut().expect("request is an object");
    obj.entry("kind").or_insert_with(|| "tool_call".into());
    obj.insert("classes".into(), serde_json::json!(classes));
    obj.insert(
        "state".into(),
        serde_json::json!({"taints": taints, "history": history}),
    );
    v
}
