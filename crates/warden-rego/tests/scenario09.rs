//! Conformance scenario 09 (`rego`), step by step, through the crate's API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use serde_json::json;

#[test]
fn scenario_09_steps() {
    let (policy, ids) = compile(
        &[("payments.rego", PAYMENTS)],
        &["data.payments.too_large", "data.payments.after_fetch"],
    );
    let (limit, injection) = (ids[0], ids[1]);
    let transfer = |amount: i64| json!({"session": "s", "tool": "transfer_funds", "args": {"amount": amount}, "context": {"limit": 100}});

    // step 1: small transfer, nothing matches -> allow
    let i1 = input(transfer(50), &["payment"], &[], &[]);
    assert!(!policy.eval_truthy(limit, &i1).unwrap());
    assert!(!policy.eval_truthy(injection, &i1).unwrap());
    // step 2: 500 > 100 -> deny by `limit`
    let i2 = input(transfer(500), &["payment"], &[], &["transfer_funds"]);
    assert!(policy.eval_truthy(limit, &i2).unwrap());
    assert!(!policy.eval_truthy(injection, &i2).unwrap());
    // step 3: web_fetch has no classes -> allow
    let i3 = input(
        json!({"session": "s", "tool": "web_fetch", "args": {"url": "https://x.test"}}),
        &[],
        &[],
        &["transfer_funds"],
    );
    assert!(!policy.eval_truthy(limit, &i3).unwrap());
    assert!(!policy.eval_truthy(injection, &i3).unwrap());
    // step 4: a payment after web_fetch -> deny by `injection-path`
    let i4 = input(
        transfer(5),
        &["payment"],
        &[],
        &["transfer_funds", "web_fetch"],
    );
    assert!(!policy.eval_truthy(limit, &i4).unwrap());
    assert!(policy.eval_truthy(injection, &i4).unwrap());
    // The same answers from an input converted once per decision.
    for (i, expect) in [
        (&i1, [false, false]),
        (&i2, [true, false]),
        (&i3, [false, false]),
        (&i4, [false, true]),
    ] {
        let prepared = policy.prepare_input(i).unwrap();
        assert_eq!(
            policy.eval_truthy_prepared(limit, &prepared).unwrap(),
            expect[0]
        );
        assert_eq!(
            policy.eval_truthy_prepared(injection, &prepared).unwrap(),
            expect[1]
        );
    }
}

#[test]
fn scenario_09_values_for_opa_users() {
    let (policy, _) = compile(&[("payments.rego", PAYMENTS)], &[]);
    let i = input(
        json!({"tool": "transfer_funds", "args": {"amount": 500}, "context": {"limit": 100}}),
        &["payment"],
        &[],
        &[],
    );
    assert_eq!(
        policy.eval_value("data.payments.too_large", &i).unwrap(),
        Some(json!(true))
    );
    assert_eq!(
        policy.eval_value("data.payments.after_fetch", &i).unwrap(),
        None
    );
    assert_eq!(
        policy.eval_value("data.payments", &i).unwrap(),
        Some(json!({"too_large": true}))
    );
    assert_eq!(policy.eval_value("data.nothing.here", &i).unwrap(), None);
    assert_eq!(
        policy
            .eval_value("data.payments.too_large == true", &i)
            .unwrap(),
        Some(json!(true))
    );
    assert_eq!(
        policy.eval_value("input.args.amount + 1", &i).unwrap(),
        Some(json!(501))
    );
}

#[test]
fn input_without_context_is_undefined_not_an_error() {
    let (policy, ids) = compile(&[("payments.rego", PAYMENTS)], &["data.payments.too_large"]);
    let i = input(
        json!({"tool": "transfer_funds", "args": {"amount": 500}}),
        &["payment"],
        &[],
        &[],
    );
    assert!(!policy.eval_truthy(ids[0], &i).unwrap());
    assert!(!policy.eval_truthy(ids[0], &json!(null)).unwrap());
}
