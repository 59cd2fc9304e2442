#![allow(clippy::unwrap_used)]
//! Combining rules (spec section 6), directly on `evaluate`.

use super::*;
use crate::policy::CompileOptions;

fn policy(rules: &str, extra: &str) -> CompiledPolicy {
    let text = format!("warden: 1\nname: t\n{extra}rules:\n{rules}");
    CompiledPolicy::compile("t.yaml", &text, CompileOptions::default()).unwrap()
}

fn req(json: &str) -> Request {
    Request::from_json(json.as_bytes()).unwrap()
}

fn ids(items: &[Arc<str>]) -> Vec<&str> {
    items.iter().map(|s| &**s).collect()
}

const RULES: &str = "  - { id: w1, effect: warn, tools: [t] }
  - { id: a1, effect: allow, tools: [t], add_taints: [x, y], remove_taints: [old] }
  - { id: d1, effect: deny, tools: [t], if: \"taint:block\", reason: first }
  - { id: d2, effect: deny, tools: [t], if: \"taint:block\" }
  - { id: d3, effect: deny, tools: [t], if: \"taint:block\", reason: third }
  - { id: w2, effect: warn, tools: [t], remove_taints: [x] }
";

#[test]
fn deny_wins_names_the_first_deny_and_every_reason_in_order() {
    let p = policy(RULES, "");
    let mut state = SessionState::default();
    state.taints.insert("block".into());
    let e = evaluate(&p, &req(r#"{"session":"s","tool":"t"}"#), &state);
    assert_eq!(e.decision.verdict, Verdict::Deny);
    assert_eq!(e.decision.rule.as_deref(), Some("d1"));
    assert_eq!(ids(&e.decision.reasons), ["first", "third"]);
    assert!(e.decision.warnings.is_empty());
    assert!(e.change.is_none(), "a denied call changes no state");
    assert_eq!(ids(&e.decision.taints), ["block"]);
}

#[test]
fn allow_lists_warnings_in_document_order_and_removes_before_adds() {
    let p = policy(RULES, "");
    let mut state = SessionState::default();
    state.taints.insert("old".into());
    let e = evaluate(&p, &req(r#"{"session":"s","tool":"t"}"#), &state);
    assert_eq!(e.decision.verdict, Verdict::Allow);
    assert_eq!(e.decision.rule, None);
    assert!(e.decision.reasons.is_empty());
    assert_eq!(ids(&e.decision.warnings), ["w1", "w2"]);
    // w2 removes x, a1 adds x: removes apply first across all rules, so x stays.
    assert_eq!(ids(&e.decision.taints), ["x", "y"]);
    assert!(e.change.is_some());
}

#[test]
fn default_applies_when_nothing_matches() {
    let deny = policy(RULES, "");
    let e = evaluate(&deny, &req(r#"{"tool":"other"}"#), &SessionState::default());
    assert_eq!(
        (e.decision.verdict, e.decision.rule.clone()),
        (Verdict::Deny, None)
    );
    let allow = policy(RULES, "default: allow\n");
    let e = evaluate(
        &allow,
        &req(r#"{"tool":"other"}"#),
        &SessionState::default(),
    );
    assert_eq!(e.decision.verdict, Verdict::Allow);
}

#[test]
fn dry_run_reports_the_computed_decision_and_updates_state_as_if_allowed() {
    let p = policy(RULES, "mode: dry_run\n");
    let mut state = SessionState::default();
    state.taints.insert("block".into());
    let e = evaluate(&p, &req(r#"{"session":"s","tool":"t"}"#), &state);
    assert_eq!(e.decision.verdict, Verdict::Allow);
    assert_eq!(e.decision.dry_run_decision, Some(Verdict::Deny));
    assert_eq!(e.decision.rule.as_deref(), Some("d1"));
    let change = e.change.unwrap();
    assert_eq!(ids(&change.add), ["x", "y"]);
}

#[test]
fn no_session_means_no_state_read_or_written() {
    let p = policy(RULES, "");
    let e = evaluate(&p, &req(r#"{"tool":"t"}"#), &SessionState::default());
    assert_eq!(e.decision.verdict, Verdict::Allow);
    assert!(e.decision.taints.is_empty());
    assert!(e.change.is_none());
}
