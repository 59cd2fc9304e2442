//! Runs the data-driven cases in `tests/cases/*.yaml` (one test per file, every case listed on
//! failure).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use warden_rego::{RegoLimits, RegoModule, RegoPolicy};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    modules: BTreeMap<String, String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    query: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    expect: Option<Value>,
    #[serde(default)]
    undefined: bool,
    #[serde(default)]
    truthy: Option<bool>,
}

/// Sorts arrays (sets come back as arrays; expectations list them in any order).
fn normalise(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(normalise).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

fn run_file(text: &str) -> Vec<String> {
    let groups: Vec<Group> = serde_saphyr::from_str(text).expect("case file parses");
    let mut failures = Vec::new();
    let mut count = 0;
    for group in groups {
        let queries: Vec<&str> = group.cases.iter().map(|c| c.query.as_str()).collect();
        let modules = group
            .modules
            .iter()
            .map(|(n, s)| RegoModule::new(n, s))
            .collect();
        let (policy, ids) =
            match RegoPolicy::compile(modules, group.data.clone(), &queries, RegoLimits::default())
            {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{}: load error: {e}", group.name));
                    continue;
                }
            };
        for (case, id) in group.cases.iter().zip(ids) {
            count += 1;
            let input = case
                .input
                .clone()
                .or_else(|| group.input.clone())
                .unwrap_or(Value::Null);
            let label = format!("{} / {} / input {input}", group.name, case.query);
            let value = policy.eval_value(&case.query, &input);
            let truthy = policy.eval_truthy(id, &input);
            match (&value, &truthy) {
                (Ok(value), Ok(truthy)) => {
                    if case.undefined && value.is_some() {
                        failures.push(format!("{label}: expected undefined, got {value:?}"));
                    }
                    if let Some(expect) = &case.expect {
                        let got = value.as_ref().map(normalise);
                        if got.as_ref() != Some(&normalise(expect)) {
                            failures.push(format!("{label}: expected {expect}, got {value:?}"));
                        }
                    }
                    if let Some(t) = case.truthy
                        && t != *truthy
                    {
                        failures.push(format!("{label}: expected truthy {t}, got {truthy}"));
                    }
                    // eval_truthy and eval_value agree.
                    if *truthy != value.as_ref().is_some_and(json_truthy) {
                        failures.push(format!(
                            "{label}: eval_truthy {truthy} disagrees with value {value:?}"
                        ));
                    }
                }
                _ => failures.push(format!("{label}: error {value:?} / {truthy:?}")),
            }
        }
    }
    assert!(count > 0, "no cases ran");
    failures
}

/// The spec's truthiness on the JSON form of a value.
fn json_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(_) => true,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[test]
fn rules_yaml() {
    let failures = run_file(include_str!("cases/rules.yaml"));
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
