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

/// The load error of `sources`, as (module, line, column, message).
fn load_error(sources: &[(&str, &str)]) -> (String, u32, u32, String) {
    match load(sources, &[]) {
        Err(RegoError::Module {
            module,
            line,
            column,
            message,
        }) => (module, line, column, message),
        other => panic!("expected a module error, got {other:?}"),
    }
}

const LIB: &str = "package lib\nimport rego.v1\nf(x) := x + 1\n";

#[test]
fn undefined_function_is_a_load_error() {
    let cases: &[(&str, &str, u32, u32, &str)] = &[
        // In a rule body.
        ("allow if nope(input.x)\n", "p.rego", 3, 10, "nope"),
        // In a function body.
        (
            "f(x) := y if {\n  y := nope(x)\n}\n",
            "p.rego",
            4,
            8,
            "nope",
        ),
        // In a comprehension.
        (
            "xs := [y | some x in input.xs; y := nope(x)]\n",
            "p.rego",
            3,
            37,
            "nope",
        ),
        // Qualified with the package, or another package that defines other functions.
        (
            "allow if data.p.nope(input.x)\n",
            "p.rego",
            3,
            10,
            "data.p.nope",
        ),
        (
            "allow if data.lib.nope(input.x)\n",
            "p.rego",
            3,
            10,
            "data.lib.nope",
        ),
        // Through an import alias.
        (
            "import data.lib\nallow if lib.nope(1)\n",
            "p.rego",
            4,
            10,
            "lib.nope",
        ),
        // A namespace that is not a built-in one, a negation, an `else` body, `every`.
        (
            "allow if strings.nope(input.s)\n",
            "p.rego",
            3,
            10,
            "strings.nope",
        ),
        ("deny if not nope(input.x)\n", "p.rego", 3, 13, "nope"),
        (
            "v := 1 if input.a\nelse := 2 if nope(input.b)\n",
            "p.rego",
            4,
            14,
            "nope",
        ),
        (
            "ok if every x in input.xs { nope(x) }\n",
            "p.rego",
            3,
            29,
            "nope",
        ),
    ];
    for (body, module, line, column, name) in cases {
        let src = format!("package p\nimport rego.v1\n{body}");
        let (m, l, c, message) = load_error(&[("lib.rego", LIB), ("p.rego", &src)]);
        assert_eq!(
            (m.as_str(), l, c, message.as_str()),
            (
                *module,
                *line,
                *column,
                &*format!("call to undefined function {name}")
            ),
            "{body}"
        );
    }
    let err = load(
        &[(
            "p.rego",
            "package p\nimport rego.v1\nallow if nope(input.x)\n",
        )],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rego module `p.rego` line 3 column 10: call to undefined function nope"
    );
}

#[test]
fn recursion_is_a_load_error() {
    // Self-recursive rule.
    let src = "package r\nimport rego.v1\na if {\n  input.x\n  a\n}\n";
    assert_eq!(
        load_error(&[("r.rego", src)]),
        (
            "r.rego".to_string(),
            5,
            3,
            "recursion: rule data.r.a refers to itself".to_string()
        )
    );
    // Mutual recursion in one module.
    let src = "package r\nimport rego.v1\na if b\nb if a\n";
    let err = load(&[("r.rego", src)], &["data.r.a"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rego module `r.rego` line 3 column 6: recursion between rules data.r.a and data.r.b"
    );
    // Across two modules, through an import and an absolute reference.
    let m1 = "package m1\nimport rego.v1\nimport data.m2\nallow if m2.ok\n";
    let m2 = "package m2\nimport rego.v1\nok if data.m1.allow\n";
    assert_eq!(
        load_error(&[("m1.rego", m1), ("m2.rego", m2)]),
        (
            "m1.rego".to_string(),
            4,
            10,
            "recursion between rules data.m1.allow and data.m2.ok".to_string()
        )
    );
    // A longer cycle, through a function and a comprehension.
    let src = "package c\nimport rego.v1\nx if f(1)\nf(n) := y if { y := [1 | z] }\nz if x\n";
    let (module, line, _, message) = load_error(&[("c.rego", src)]);
    assert_eq!((module.as_str(), line), ("c.rego", 3));
    assert_eq!(
        message,
        "recursion between rules data.c.x, data.c.f and data.c.z"
    );
    // Recursive functions, even bounded ones (regorus would overflow its stack on the first).
    for src in [
        "package f\nimport rego.v1\nf(x) := y if { y := f(x) }\n",
        "package f\nimport rego.v1\nf(0) := 1\nf(x) := y if { x > 0; y := f(x - 1) }\n",
    ] {
        let (_, _, _, message) = load_error(&[("f.rego", src)]);
        assert_eq!(
            message, "recursion: rule data.f.f refers to itself",
            "{src}"
        );
    }
    // Reading a document that contains the rule itself (regorus silently gives undefined).
    for read in ["count(data.r)", "data.r[input.k]", "count(data)"] {
        let src = format!("package r\nimport rego.v1\ny := 2\nx := {read}\n");
        let (_, line, column, message) = load_error(&[("r.rego", &src)]);
        assert_eq!(
            (line, column),
            (4, 6 + u32::from(read.starts_with("count")) * 6)
        );
        assert!(message.contains("data.r.x"), "{read}: {message}");
    }
}

#[test]
fn valid_functions_and_references_still_load() {
    let lib = r#"package lib
import rego.v1
f(x) := x + 1
# Several definitions and else.
size(x) := "small" if x < 10
size(x) := "large" if x >= 10
grade(x) := "a" if x > 90
else := "b" if x > 80
else := "c"
default g(_) := 0
g(x) := 1 if x == "one"
consts := {"limit": 10}
"#;
    let main = r#"package main
import rego.v1
import data.lib
import data.lib as l
checks := [
  startswith(input.s, "ab"),
  regex.match(`^a.*`, input.s),
  count(input.xs) == 3,
  object.get(input, "s", "") == "abc",
  json.marshal({"a": 1}) == "{\"a\":1}",
  time.now_ns() > 0,
  is_number(to_number("1")),
  data.lib.f(1) == 2,
  lib.f(2) == 3,
  l.f(3) == 4,
  lib.size(3) == "small",
  lib.grade(85) == "b",
  lib.g("one") == 1,
  lib.g("two") == 0,
  helper(2) == 4,
  data.main.helper(3) == 6,
  lib.consts.limit == 10,
  data.lib.consts["limit"] == 10,
]
helper(x) := x * 2
all_ok if every c in checks { c }
# A local variable may reuse a rule's name without being a reference to it.
uses_local if {
  all_ok := 1
  all_ok == 1
}
chain if all_ok
deeper if chain
set contains x if some x in input.xs
counted := count(set)
nested := {k: v | some k, v in {"a": [y | some y in set]}}
mocked if not all_ok with input.s as "abz"
printed if print("x")
"#;
    let queries = [
        "data.main.all_ok",
        "data.main.deeper",
        "data.main.uses_local",
        "data.main.counted",
        "data.main.mocked",
    ];
    let (policy, ids) = compile(&[("lib.rego", lib), ("main.rego", main)], &queries);
    let i = json!({"s": "abc", "xs": [1, 2, 3]});
    for (q, id) in queries.iter().zip(&ids) {
        assert!(policy.eval_truthy(*id, &i).unwrap(), "{q}");
    }
    assert_eq!(
        policy.eval_value("data.main.checks", &i).unwrap(),
        Some(serde_json::Value::Array(vec![json!(true); 18]))
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
