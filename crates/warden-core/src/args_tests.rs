#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;

fn cond(pointer: &str, checks: Vec<ArgCheck>) -> ArgCondition {
    ArgCondition {
        pointer: pointer.to_owned(),
        subject: Subject::Args,
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

fn judge(check: &ArgCheck, value: serde_json::Value) -> Judgement {
    check.judge(Some(&value))
}

#[test]
fn a_value_of_another_type_cannot_be_judged() {
    use Judgement::{No, Unknown, Yes};
    let evil = ArgCheck::Matches(compile_regex("@evil\\.").unwrap());
    assert_eq!(judge(&evil, json!("bob@evil.test")), Yes);
    assert_eq!(judge(&evil, json!("bob@good.test")), No);
    assert_eq!(judge(&evil, json!(["bob@evil.test"])), Unknown);
    assert_eq!(judge(&evil, json!({"to": "bob@evil.test"})), Unknown);
    assert_eq!(judge(&evil, json!(7)), Unknown);
    assert_eq!(evil.judge(None), No, "absent is judged");

    let flag = ArgCheck::Equals(json!(true));
    assert_eq!(judge(&flag, json!(true)), Yes);
    assert_eq!(judge(&flag, json!(false)), No);
    assert_eq!(judge(&flag, json!("true")), Unknown);
    assert_eq!(judge(&flag, json!(1)), Unknown);

    let env = ArgCheck::OneOf(vec![json!("prod"), json!(1)]);
    assert_eq!(judge(&env, json!("dev")), No, "judged by the string option");
    assert_eq!(judge(&env, json!(2)), No, "judged by the number option");
    assert_eq!(judge(&env, json!(["prod"])), Unknown);

    let null = ArgCheck::Equals(json!(null));
    assert_eq!(judge(&null, json!(null)), Yes);
    assert_eq!(judge(&null, json!("x")), No, "null judges any value");

    let tags = ArgCheck::Contains(json!("secret"));
    assert_eq!(judge(&tags, json!(["a", "secret"])), Yes);
    assert_eq!(judge(&tags, json!(["a", "b"])), No);
    assert_eq!(judge(&tags, json!([["secret"]])), Unknown);
    assert_eq!(judge(&tags, json!(["a", 1])), Unknown);
    assert_eq!(judge(&tags, json!(5)), Unknown);

    assert_eq!(judge(&ArgCheck::MaxLen(3), json!(12345)), Unknown);
}

#[test]
fn any_and_all_range_over_array_elements() {
    use Judgement::{No, Unknown, Yes};
    let evil = || {
        vec![ArgCheck::Matches(
            compile_regex("(?i)@evil\\.test\\.?$").unwrap(),
        )]
    };
    let any = ArgCheck::Any(evil());
    assert_eq!(judge(&any, json!(["a@corp.test", "bob@EVIL.test"])), Yes);
    assert_eq!(judge(&any, json!(["a@corp.test"])), No);
    assert_eq!(
        judge(&any, json!("bob@evil.test.")),
        Yes,
        "a scalar is a list of one"
    );
    assert_eq!(judge(&any, json!([])), No);
    assert_eq!(judge(&any, json!(["a@corp.test", 5])), Unknown);
    assert_eq!(judge(&any, json!(["bob@evil.test", 5])), Yes);

    let corp = ArgCheck::All(vec![ArgCheck::Matches(
        compile_regex("@corp\\.test$").unwrap(),
    )]);
    assert_eq!(judge(&corp, json!(["a@corp.test", "b@corp.test"])), Yes);
    assert_eq!(judge(&corp, json!(["a@corp.test", "b@evil.test"])), No);
    assert_eq!(judge(&corp, json!(["a@corp.test", {"x": 1}])), Unknown);
    assert_eq!(judge(&corp, json!([])), Yes);
    assert_eq!(
        ArgCheck::All(evil()).judge(None),
        No,
        "absent is not an empty list"
    );
}

#[test]
fn kleene_logic_lets_a_certain_no_win() {
    // `/n` cannot be judged but `/to` is certainly not evil: the condition set does not hold.
    let n = cond("/n", vec![ArgCheck::Equals(json!(5))]);
    let to = cond(
        "/to",
        vec![ArgCheck::Matches(compile_regex("evil").unwrap())],
    );
    let args = json!({"n": "5", "to": "alice@corp.test"});
    let all = Judgement::all([n.judge(Some(&args)), to.judge(Some(&args))]);
    assert_eq!(all, Judgement::No);
    let args = json!({"n": "5", "to": "bob@evil.test"});
    let all = Judgement::all([n.judge(Some(&args)), to.judge(Some(&args))]);
    assert_eq!(all, Judgement::Unknown);
}

#[test]
fn big_integers_compare_exactly() {
    let big: serde_json::Value = serde_json::from_str("1234567890123456789").unwrap();
    let rounded: serde_json::Value = serde_json::from_str("1234567890123456768.0").unwrap();
    let same_text_float: serde_json::Value = serde_json::from_str("1234567890123456789.0").unwrap();
    assert!(!json_eq(&big, &rounded));
    assert!(!json_eq(&rounded, &big));
    assert_eq!(json_eq3(&big, &same_text_float), Judgement::Unknown);
    let near: serde_json::Value = serde_json::from_str("1234567890123456788").unwrap();
    assert!(!json_eq(&big, &near));
    assert!(json_eq(
        &json!(9007199254740991_i64),
        &json!(9007199254740991.0)
    ));
    assert_eq!(
        json_eq3(&json!(9007199254740993_i64), &json!(9007199254740992.0)),
        Judgement::Unknown
    );
    assert!(json_eq(&json!(-3), &json!(-3.0)));
    assert!(!json_eq(&json!(3), &json!(3.5)));
    assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
    assert!(!json_eq(&json!(i64::MIN), &json!(u64::MAX)));
    // Equality on the allow side needs certainty; a deny rule fires on Unknown.
    assert!(!ArgCheck::Equals(big.clone()).holds(Some(&same_text_float)));
    assert!(ArgCheck::OneOf(vec![json!(1), big.clone()]).holds(Some(&big)));
}

fn num(v: Value) -> serde_json::Number {
    match v {
        Value::Number(n) => n,
        other => panic!("not a number: {other}"),
    }
}

#[test]
fn comparisons_order_numbers_by_exact_value() {
    use Judgement::{No, Unknown, Yes};
    let gt = |bound: Value| ArgCheck::Compare(Comparison::Gt, num(bound));
    let lte = |bound: Value| ArgCheck::Compare(Comparison::Lte, num(bound));
    assert_eq!(judge(&gt(json!(100)), json!(101)), Yes);
    assert_eq!(judge(&gt(json!(100)), json!(100)), No);
    assert_eq!(judge(&gt(json!(100)), json!(100.5)), Yes);
    assert_eq!(judge(&gt(json!(100.5)), json!(100)), No);
    assert_eq!(judge(&gt(json!(-2.5)), json!(-2)), Yes);
    assert_eq!(judge(&gt(json!(-2.5)), json!(-3)), No);
    assert_eq!(judge(&lte(json!(1)), json!(1.0)), Yes);
    assert_eq!(judge(&lte(json!(0.1)), json!(0.2)), No);
    // u64 beyond i64, exactly.
    assert_eq!(judge(&gt(json!(u64::MAX - 1)), json!(u64::MAX)), Yes);
    assert_eq!(judge(&gt(json!(i64::MIN)), json!(u64::MAX)), Yes);
    // An integer next to a large float that may be its rounded form: cannot be ordered.
    assert_eq!(
        judge(
            &gt(json!(1_234_567_890_123_456_789_u64)),
            json!(1_234_567_890_123_456_768.0)
        ),
        Unknown
    );
    // Far from it: ordered.
    assert_eq!(
        judge(&gt(json!(1e18)), json!(2_000_000_000_000_000_000_u64)),
        Yes
    );
    assert_eq!(judge(&gt(json!(1e300)), json!(u64::MAX)), No);
    // Not a number: cannot judge (a deny rule matches, an allow rule does not).
    assert_eq!(judge(&gt(json!(1)), json!("5")), Unknown);
    assert_eq!(judge(&gt(json!(1)), json!(true)), Unknown);
    assert_eq!(gt(json!(1)).judge(None), No);
}

#[test]
fn context_conditions_resolve_in_the_request_context() {
    let request: crate::request::Request = serde_json::from_value(json!({
        "kind": "tool_call", "tool": "t",
        "args": {"amount": 5},
        "context": {"team/size": 7, "limits": {"daily": 50}}
    }))
    .unwrap();
    let on = |subject, pointer: &str, check| ArgCondition {
        pointer: pointer.to_owned(),
        subject,
        checks: vec![check],
    };
    let over = |bound: Value| ArgCheck::Compare(Comparison::Gt, num(bound));
    assert_eq!(
        on(Subject::Context, "/limits/daily", over(json!(40))).judge_request(&request),
        Judgement::Yes
    );
    assert_eq!(
        on(Subject::Context, "/team~1size", over(json!(7))).judge_request(&request),
        Judgement::No
    );
    assert_eq!(
        on(Subject::Context, "/amount", ArgCheck::Exists(true)).judge_request(&request),
        Judgement::No
    );
    assert_eq!(
        on(Subject::Args, "/amount", over(json!(4))).judge_request(&request),
        Judgement::Yes
    );
}
