#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;

fn cond(pointer: &str, checks: Vec<ArgCheck>) -> ArgCondition {
    ArgCondition {
        pointer: pointer.to_owned(),
        checks,
    }
}

#[test]
fn strict_equality() {
    assert!(json_eq(&json!(1), &json!(1.0)));
    assert!(!json_eq(&json!(1), &json!("1")));
    assert!(!json_eq(&json!(true), &json!(1)));
    assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
    assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
    assert!(!json_eq(&json!(u64::MAX), &json!(i64::MAX)));
    assert!(json_eq(&json!(null), &json!(null)));
}

#[test]
fn pointer_resolution_and_exists() {
    let args = json!({"a": {"b/c": null, "m~n": 5}, "list": [10, 20]});
    assert!(cond("/a/b~1c", vec![ArgCheck::Exists(true)]).holds(Some(&args)));
    assert!(cond("/a/m~0n", vec![ArgCheck::Equals(json!(5))]).holds(Some(&args)));
    assert!(cond("/list/1", vec![ArgCheck::Equals(json!(20))]).holds(Some(&args)));
    assert!(cond("/missing", vec![ArgCheck::Exists(false)]).holds(Some(&args)));
    assert!(!cond("/missing", vec![ArgCheck::Exists(true)]).holds(Some(&args)));
    assert!(cond("/x", vec![ArgCheck::Exists(false)]).holds(None));
    // Only `exists: false` holds on a missing value.
    for check in [
        ArgCheck::Equals(json!(null)),
        ArgCheck::OneOf(vec![json!(null)]),
        ArgCheck::Matches(compile_regex(".*").unwrap()),
        ArgCheck::Contains(json!("")),
        ArgCheck::MaxLen(100),
    ] {
        assert!(!check.holds(None), "{check:?}");
    }
}

#[test]
fn matches_contains_and_max_len_by_type() {
    let re = ArgCheck::Matches(compile_regex(r"\brm\s+-rf\b").unwrap());
    assert!(re.holds(Some(&json!("cd / && rm -rf tmp"))));
    assert!(!re.holds(Some(&json!(["rm -rf"]))));
    let contains = ArgCheck::Contains(json!("ab"));
    assert!(contains.holds(Some(&json!("xaby"))));
    assert!(contains.holds(Some(&json!(["x", "ab"]))));
    assert!(!contains.holds(Some(&json!(["xaby"]))));
    assert!(!contains.holds(Some(&json!({"ab": 1}))));
    assert!(ArgCheck::Contains(json!(2)).holds(Some(&json!([1, 2.0]))));
    let max = ArgCheck::MaxLen(3);
    assert!(max.holds(Some(&json!("héé"))));
    assert!(!max.holds(Some(&json!("abcd"))));
    assert!(max.holds(Some(&json!([1, 2, 3]))));
    assert!(!max.holds(Some(&json!(5))));
    assert!(
        ArgCheck::OneOf(vec![json!("prod"), json!("production")]).holds(Some(&json!("production")))
    );
}

#[test]
fn all_checks_must_hold() {
    let c = cond(
        "/env",
        vec![ArgCheck::Exists(true), ArgCheck::Equals(json!("prod"))],
    );
    assert!(c.holds(Some(&json!({"env": "prod"}))));
    assert!(!c.holds(Some(&json!({"env": "dev"}))));
}

#[test]
fn pointer_syntax() {
    assert!(validate_pointer("").is_ok());
    assert!(validate_pointer("/a/~0/~1").is_ok());
    assert!(validate_pointer("a").is_err());
    assert!(validate_pointer("/a~2").is_err());
    assert!(validate_pointer("/a~").is_err());
}
