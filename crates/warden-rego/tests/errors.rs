//! Load errors (module, line, column; undefined and invalid queries) and evaluation limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use warden_rego::{RegoError, RegoEvalError, RegoLimits, RegoModule, RegoPolicy};

fn load(sources: &[(&str, &str)], queries: &[&str]) -> Result<RegoPolicy, RegoError> {
    let modules = sources
        .iter()
        .map(|(n, s)| RegoModule::new(*n, *s))
        .collect();
    RegoPolicy::compile(modules, None, queries, RegoLimits::default()).map(|(p, _)| p)
}

#[test]
fn syntax_error_names_module_line_and_column() {
    let bad = "package bad\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n";
    let err = load(&[("ok.rego", PAYMENTS), ("bad.rego", bad)], &[]).unwrap_err();
    match &err {
        RegoError::Module {
            module,
            line,
            column,
            message,
        } => {
            assert_eq!(module, "bad.rego");
            assert_eq!(*line, 6, "{err}");
            assert!(*column >= 1, "{err}");
            assert!(!message.is_empty() && !message.contains("-->"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().starts_with("rego module `bad.rego` line 6"),
        "{err}"
    );
}

#[test]
fn v0_syntax_without_if_is_a_load_error() {
    let v0 = "package old\nallow { input.x == 1 }\n";
    let err = load(&[("old.rego", v0)], &[]).unwrap_err();
    assert!(
        matches!(err, RegoError::Module { ref module, line: 2, .. } if module == "old.rego"),
        "{err:?}"
    );
}

#[test]
fn compile_errors_are_load_errors() {
    // Unsafe variable.
    let unsafe_var = "package u\nimport rego.v1\nallow if x == 1\n";
    let err = load(&[("u.rego", unsafe_var)], &["data.u.allow"]).unwrap_err();
    assert!(
        matches!(err, RegoError::Module { ref module, line: 3, .. } if module == "u.rego"),
        "{err:?}"
    );
}

#[test]
fn undefined_function_and_recursion_are_evaluation_errors() {
    // Known gap: regorus resolves function names when a call is reached, so this loads.
    let undefined_fn = "package p\nimport rego.v1\nallow if nope(input.x)\n";
    let (policy, ids) = compile(&[("p.rego", undefined_fn)], &["data.p.allow"]);
    let err = policy.eval_truthy(ids[0], &json!({"x": 1})).unwrap_err();
    assert!(
        matches!(err, RegoEvalError::Eval { ref message } if message.contains("nope")),
        "{err:?}"
    );
    // Same for recursion between rules: detected when evaluated.
    let recursive = "package r\nimport rego.v1\na if b\nb if a\n";
    let (policy, ids) = compile(&[("r.rego", recursive)], &["data.r.a"]);
    let err = policy.eval_truthy(ids[0], &json!({})).unwrap_err();
    assert!(
        matches!(err, RegoEvalError::Eval { ref message } if message.contains("recursion")),
        "{err:?}"
    );
}

#[test]
fn undefined_query_is_a_load_error() {
    for q in [
        "data.payments.nope",
        "data.nope.too_large",
        "data.payments.too_large_x",
        "data.other",
    ] {
        let err = load(
            &[("payments.rego", PAYMENTS)],
            &["data.payments.too_large", q],
        )
        .unwrap_err();
        assert_eq!(
            err,
            RegoError::UndefinedQuery {
                query: q.to_string()
            },
            "{q}"
        );
        assert!(err.to_string().contains(q));
    }
}

#[test]
fn packages_rule_subpaths_and_base_data_are_defined_queries() {
    let roles = "package authz\nimport rego.v1\nroles := {\"admin\": [\"root\"]}\nallow if input.user in data.config.admins\n";
    let data = json!({"config": {"admins": ["alice"], "limit": 7}});
    let modules = vec![RegoModule::new("authz.rego", roles)];
    let queries = [
        "data.authz",
        "data.authz.roles.admin",
        "data.config.limit",
        "data",
        "data.authz.allow",
    ];
    let (policy, ids) =
        RegoPolicy::compile(modules, Some(data), &queries, RegoLimits::default()).unwrap();
    let i = json!({"user": "alice"});
    assert!(policy.eval_truthy(ids[0], &i).unwrap());
    assert!(policy.eval_truthy(ids[1], &i).unwrap());
    assert!(policy.eval_truthy(ids[2], &i).unwrap());
    assert!(policy.eval_truthy(ids[4], &i).unwrap());
    assert!(!policy.eval_truthy(ids[4], &json!({"user": "bob"})).unwrap());
    assert_eq!(
        policy.eval_value("data.config.limit", &i).unwrap(),
        Some(json!(7))
    );
    assert_eq!(policy.query_text(ids[2]), Some("data.config.limit"));
    // Missing base-data paths are undefined queries.
    let modules = vec![RegoModule::new("authz.rego", roles)];
    let err = RegoPolicy::compile(
        modules,
        Some(json!({"config": {}})),
        &["data.config.limit"],
        RegoLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RegoError::UndefinedQuery { .. }), "{err:?}");
}

#[test]
fn invalid_queries_and_data_are_load_errors() {
    for q in ["input.x", "data.payments.too_large == true", "", "data..x"] {
        let err = load(&[("payments.rego", PAYMENTS)], &[q]).unwrap_err();
        assert!(
            matches!(err, RegoError::InvalidQuery { ref query, .. } if query == q),
            "{q}: {err:?}"
        );
    }
    let err =
        RegoPolicy::compile(vec![], Some(json!([1])), &[], RegoLimits::default()).unwrap_err();
    assert!(matches!(err, RegoError::Data { .. }), "{err:?}");
}

#[test]
fn query_ids_are_bound_to_their_policy() {
    let (a, ia) = compile(&[("payments.rego", PAYMENTS)], &["data.payments.too_large"]);
    let (b, _) = compile(&[("payments.rego", PAYMENTS)], &["data.payments.too_large"]);
    assert!(a.eval_truthy(ia[0], &json!({})).is_ok());
    assert!(matches!(
        b.eval_truthy(ia[0], &json!({})),
        Err(RegoEvalError::Eval { .. })
    ));
}

const SLOW: &str = "package slow\nimport rego.v1\nspin if {\n  some a in numbers.range(1, 5000)\n  some b in numbers.range(1, 5000)\n  a * b == -1\n}\n";

#[test]
fn time_limit_stops_a_pathological_rule() {
    let limits = RegoLimits {
        max_eval_time: Duration::from_millis(20),
        ..RegoLimits::default()
    };
    let modules = vec![RegoModule::new("slow.rego", SLOW)];
    let (policy, ids) = RegoPolicy::compile(modules, None, &["data.slow.spin"], limits).unwrap();
    let started = Instant::now();
    let err = policy.eval_truthy(ids[0], &json!({})).unwrap_err();
    assert_eq!(err, RegoEvalError::LimitExceeded);
    assert_eq!(err.to_string(), "rego: limit exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The engine is usable afterwards (the timer restarts per evaluation).
    assert_eq!(
        policy.eval_truthy(ids[0], &json!({})).unwrap_err(),
        RegoEvalError::LimitExceeded
    );
    let err = policy.eval_value("data.slow.spin", &json!({})).unwrap_err();
    assert_eq!(err, RegoEvalError::LimitExceeded);
}

#[test]
fn input_nesting_limit() {
    let limits = RegoLimits {
        max_recursion_depth: 8,
        ..RegoLimits::default()
    };
    let modules = vec![RegoModule::new("payments.rego", PAYMENTS)];
    let (policy, ids) =
        RegoPolicy::compile(modules, None, &["data.payments.too_large"], limits).unwrap();
    let mut deep = json!(1);
    for _ in 0..8 {
        deep = json!([deep]);
    }
    assert!(policy.eval_truthy(ids[0], &json!({ "x": deep })).is_err());
    assert_eq!(
        policy
            .eval_truthy(ids[0], &json!({ "x": deep }))
            .unwrap_err(),
        RegoEvalError::LimitExceeded
    );
    let ok = deep.as_array().unwrap()[0].clone();
    assert!(!policy.eval_truthy(ids[0], &json!({ "x": ok })).unwrap());
    // A very deep input (beyond serde_json's own parse limit) is refused without recursion.
    let mut very = json!(null);
    for _ in 0..100_000 {
        very = serde_json::Value::Array(vec![very]);
    }
    assert_eq!(
        policy.eval_truthy(ids[0], &very).unwrap_err(),
        RegoEvalError::LimitExceeded
    );
    // Dropping `very` recursively would overflow the test thread's stack; leak it instead.
    std::mem::forget(very);
}

#[test]
fn builtin_errors_are_evaluation_errors() {
    let src = "package e\nimport rego.v1\nbad if to_number(input.s) > 1\n";
    let (policy, ids) = compile(&[("e.rego", src)], &["data.e.bad"]);
    let err = policy
        .eval_truthy(ids[0], &json!({"s": "abc"}))
        .unwrap_err();
    assert!(matches!(err, RegoEvalError::Eval { .. }), "{err:?}");
    assert!(policy.eval_truthy(ids[0], &json!({"s": "5"})).unwrap());
    // Conflicting values for a complete rule.
    let src = "package c\nimport rego.v1\nv := 1 if input.a\nv := 2 if input.b\n";
    let (policy, ids) = compile(&[("c.rego", src)], &["data.c.v"]);
    assert!(matches!(
        policy.eval_truthy(ids[0], &json!({"a": true, "b": true})),
        Err(RegoEvalError::Eval { .. })
    ));
    assert!(policy.eval_truthy(ids[0], &json!({"a": true})).unwrap());
}
