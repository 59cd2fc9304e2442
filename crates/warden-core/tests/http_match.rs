//! A rule's `http` member: native conditions on an HTTP request's method, path, headers and
//! query; load errors name the rule and the field.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use warden_core::eval::{NoObserver, evaluate_observed};
use warden_core::policy::{CompileOptions, CompiledPolicy};
use warden_core::{Request, SessionState, Verdict};

fn load(rules: &str) -> Result<CompiledPolicy, String> {
    let text = format!("warden: 1\nname: h\ndefault: allow\nrules:\n{rules}");
    CompiledPolicy::compile("h.yaml", &text, CompileOptions::default()).map_err(|e| e.to_string())
}

/// The decision and the deciding rule for `http` (the request's `http` member, as JSON).
fn decide(policy: &CompiledPolicy, http: &str) -> (Verdict, Option<String>) {
    let request =
        Request::from_json(format!(r#"{{"kind":"http","http":{http}}}"#).as_bytes()).unwrap();
    let e = evaluate_observed(policy, &request, &SessionState::default(), &mut NoObserver);
    (e.decision.verdict, e.decision.rule.map(|r| r.to_string()))
}

const ADMIN: &str = r#"  - id: no-admin-writes
    effect: deny
    http: { methods: [post, DELETE], paths: ["/admin/*", "/v1/users/*/roles"] }
  - id: prod-needs-ticket
    effect: deny
    http:
      headers: { X-Env: { equals: prod }, x-ticket: { exists: false } }
  - id: no-debug
    effect: deny
    http: { query: { debug: { one_of: ["1", "true"] } } }
"#;

#[test]
fn methods_and_path_globs_decide_an_http_request() {
    let p = load(ADMIN).unwrap();
    let deny = (Verdict::Deny, Some("no-admin-writes".to_owned()));
    assert_eq!(
        decide(&p, r#"{"method":"POST","path":"/admin/users"}"#),
        deny
    );
    assert_eq!(
        decide(&p, r#"{"method":"delete","path":"/v1/users/7/roles"}"#),
        deny,
        "methods compare without regard to case"
    );
    assert_eq!(
        decide(&p, r#"{"method":"POST","path":"/admin/x?y=1"}"#),
        deny,
        "a query left in the path is not matched by the glob"
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","path":"/admin/users"}"#).0,
        Verdict::Allow,
        "another method"
    );
    assert_eq!(
        decide(&p, r#"{"method":"POST","path":"/v1/users/7"}"#).0,
        Verdict::Allow,
        "another path"
    );
    assert_eq!(
        decide(&p, r#"{"path":"/admin/users"}"#).0,
        Verdict::Allow,
        "no method: a rule naming methods does not hold"
    );
}

#[test]
fn header_and_query_conditions_read_the_named_value() {
    let p = load(ADMIN).unwrap();
    assert_eq!(
        decide(&p, r#"{"method":"GET","headers":{"x-env":"prod"}}"#).1,
        Some("prod-needs-ticket".to_owned()),
        "header names compare without regard to case"
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","headers":{"X-ENV":"prod"}}"#).1,
        Some("prod-needs-ticket".to_owned())
    );
    assert_eq!(
        decide(
            &p,
            r#"{"method":"GET","headers":{"x-env":"prod","x-ticket":"T-1"}}"#
        )
        .0,
        Verdict::Allow
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","headers":{"x-env":"dev"}}"#).0,
        Verdict::Allow
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","query":{"debug":"true"}}"#).1,
        Some("no-debug".to_owned())
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","query":{"debug":"0"}}"#).0,
        Verdict::Allow
    );
}

#[test]
fn http_conditions_never_hold_for_a_request_without_http() {
    let p = load(
        "  - { id: absent-header, effect: deny, http: { headers: { x-a: { exists: false } } } }\n",
    )
    .unwrap();
    let request = Request::from_json(br#"{"tool":"t"}"#).unwrap();
    let e = evaluate_observed(&p, &request, &SessionState::default(), &mut NoObserver);
    assert_eq!(e.decision.verdict, Verdict::Allow);
    assert_eq!(decide(&p, "{}").0, Verdict::Deny);
}

#[test]
fn allow_rules_with_http_conditions_open_only_what_they_name() {
    let p = CompiledPolicy::compile(
        "h.yaml",
        "warden: 1\nname: h\nrules:\n  - { id: reads, effect: allow, kinds: [http], http: { methods: [GET, HEAD], paths: [\"/v1/*\"] } }\n",
        CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(
        decide(&p, r#"{"method":"GET","path":"/v1/items"}"#).0,
        Verdict::Allow
    );
    assert_eq!(
        decide(&p, r#"{"method":"PUT","path":"/v1/items"}"#).0,
        Verdict::Deny
    );
    assert_eq!(
        decide(&p, r#"{"method":"GET","path":"/internal"}"#).0,
        Verdict::Deny
    );
}

#[test]
fn bad_http_conditions_are_load_errors_naming_the_rule_and_field() {
    for (rule, says) in [
        ("{ id: r, effect: deny, http: {} }", "names none of"),
        (
            "{ id: r, effect: deny, http: { methods: [] } }",
            "`http.methods` is empty",
        ),
        (
            "{ id: r, effect: deny, http: { methods: [\"GE T\"] } }",
            "is not an HTTP method",
        ),
        (
            "{ id: r, effect: deny, http: { paths: [] } }",
            "`http.paths` is empty",
        ),
        (
            "{ id: r, effect: deny, http: { headers: { \"x y\": { exists: true } } } }",
            "`http.headers`: `x y` is not a valid name",
        ),
        (
            "{ id: r, effect: deny, http: { query: { q: { bogus: 1 } } } }",
            "bogus",
        ),
        (
            "{ id: r, effect: deny, kinds: [tool_call], http: { methods: [GET] } }",
            "hold for `http` requests only",
        ),
        ("{ id: r, effect: deny, http: { verbs: [GET] } }", "verbs"),
    ] {
        let err = load(&format!("  - {rule}\n")).unwrap_err();
        assert!(err.contains(says), "{rule}: {err}");
        assert!(err.contains("h.yaml:"), "{rule}: no location in {err}");
    }
}
