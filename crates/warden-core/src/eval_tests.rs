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

/// Runs `tools` in one session, applying each change, and returns the last decision's verdict.
fn run(p: &CompiledPolicy, state: &mut SessionState, tools: &[&str]) -> Verdict {
    let mut last = Verdict::Allow;
    for tool in tools {
        let e = evaluate(
            p,
            &req(&format!(r#"{{"session":"s","tool":"{tool}"}}"#)),
            state,
        );
        if let Some(change) = &e.change {
            state.apply(change);
        }
        last = e.decision.verdict;
    }
    last
}

#[test]
fn unbounded_after_holds_past_any_number_of_calls_in_constant_memory() {
    let p = policy(
        "  - { id: post-after-read, effect: deny, tools: [post], after: { tools: [read] } }\n",
        "default: allow\n",
    );
    assert_eq!(p.history_limit, 0, "no history is needed");
    let mut state = SessionState::default();
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Allow);
    run(&p, &mut state, &["read"]);
    let harmless = vec!["noop"; 5000];
    run(&p, &mut state, &harmless);
    assert!(state.history.is_empty());
    assert_eq!(state.seen.len(), 1);
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
}

#[test]
fn a_marker_is_set_from_history_kept_before_the_rule_existed() {
    // The session's history was kept by a policy with `within`; the reloaded policy's
    // unbounded rule sees it and sets its marker before the history bound drops it.
    let p = policy(
        "  - { id: seq, effect: deny, tools: [post], after: { tools: [read] } }\n",
        "default: allow\n",
    );
    let mut state = SessionState::default();
    state.history.push_back(HistoryEntry {
        tool: "read".into(),
        classes: Arc::from(Vec::new()),
    });
    run(&p, &mut state, &["noop"]);
    assert!(state.history.is_empty());
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
}

#[test]
fn within_beyond_the_rego_cap_is_kept_exactly() {
    let p = policy(
        "  - { id: seq, effect: deny, tools: [post], after: { tools: [read], within: 5000 } }\n",
        "default: allow\n",
    );
    assert_eq!(p.history_limit, 5000);
    let mut state = SessionState::default();
    run(&p, &mut state, &["read"]);
    run(&p, &mut state, &vec!["noop"; 4998]);
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
    // `read` is now the 5000th call back: still within.
    run(&p, &mut state, &["noop"]);
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
    run(&p, &mut state, &["noop"]);
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Allow);
}

#[test]
fn within_beyond_the_maximum_is_a_load_error_naming_the_rule() {
    let text = "warden: 1\nname: t\nrules:\n  - { id: too-far, effect: deny, tools: [p], after: { tools: [r], within: 10001 } }\n";
    let e = CompiledPolicy::compile("t.yaml", text, CompileOptions::default()).unwrap_err();
    let message = &e.diagnostics[0].message;
    assert!(
        message.contains("rule `too-far`") && message.contains("10000"),
        "{message}"
    );
    let options = CompileOptions {
        max_within: 20_000,
        ..CompileOptions::default()
    };
    assert_eq!(
        CompiledPolicy::compile("t.yaml", text, options)
            .unwrap()
            .history_limit,
        10001
    );
}

#[test]
fn marker_keys_ignore_order_and_separate_lists() {
    let p = policy(
        "  - { id: a, effect: deny, tools: [p], after: { tools: [x, y], classes: [c] } }
  - { id: b, effect: deny, tools: [q], after: { tools: [y, x], classes: [c] } }
  - { id: c, effect: deny, tools: [r], after: { classes: [x, y, c] } }
",
        "",
    );
    assert_eq!(p.markers.len(), 2);
}

#[test]
fn a_kept_entry_sets_the_marker_as_it_leaves_the_history() {
    let p = policy(
        "  - { id: seq, effect: deny, tools: [post], after: { tools: [read] } }
  - { id: near, effect: warn, tools: [x], after: { tools: [y], within: 2 } }
",
        "default: allow\n",
    );
    assert_eq!(p.history_limit, 2);
    let mut state = SessionState::default();
    state.history.push_back(HistoryEntry {
        tool: "read".into(),
        classes: Arc::from(Vec::new()),
    });
    run(&p, &mut state, &["noop"]);
    assert!(state.seen.is_empty(), "still in history");
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
    run(&p, &mut state, &["noop"]);
    assert_eq!(state.seen.len(), 1, "set as `read` left the history");
    run(&p, &mut state, &["noop", "noop", "noop"]);
    assert_eq!(run(&p, &mut state, &["post"]), Verdict::Deny);
}
