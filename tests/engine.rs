//! The engine through the library API: atomic sessions, bounded history, hot swap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;
use warden::{CompileOptions, CompiledPolicy, Engine, Request, Verdict, load_policy_str};

fn request(json: &str) -> Request {
    Request::from_json(json.as_bytes()).expect("valid request")
}

#[test]
fn engine_is_send_sync_and_cheap_to_share() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<CompiledPolicy>();
}

/// Many threads send the same session a tool that is allowed only while a taint is absent and
/// that adds the taint: exactly one call may be allowed.
#[test]
fn read_decide_update_is_atomic_per_session() {
    let policy = load_policy_str(
        "once.yaml",
        "warden: 1\nname: once\nrules:\n  - { id: first, effect: allow, tools: [claim], add_taints: [claimed] }\n  - { id: again, effect: deny, tools: [claim], if: \"taint:claimed\" }\n",
    )
    .expect("policy loads");
    for round in 0..20 {
        let engine = Arc::new(Engine::new(policy.clone()));
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let engine = Arc::clone(&engine);
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let req = request(r#"{"session":"shared","tool":"claim"}"#);
                    barrier.wait();
                    engine.decide(&req).expect("decides").verdict
                })
            })
            .collect();
        let allowed = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|v| *v == Verdict::Allow)
            .count();
        assert_eq!(allowed, 1, "round {round}: {allowed} calls were allowed");
    }
}

#[test]
fn history_is_bounded_by_the_longest_within_and_unbounded_after_uses_a_marker() {
    let text = "warden: 1\nname: h\ndefault: allow\nrules:\n  - { id: seq, effect: deny, tools: [x], after: { tools: [y], within: 3 } }\n";
    let engine = Engine::new(load_policy_str("h.yaml", text).expect("loads"));
    for _ in 0..50 {
        engine
            .decide(&request(r#"{"session":"s","tool":"t"}"#))
            .expect("decides");
    }
    let state = engine
        .sessions()
        .get("s")
        .wait()
        .expect("store")
        .expect("session");
    assert_eq!(state.history.len(), 3);

    // `after` without `within` keeps no history: a marker remembers the call for good, however
    // many calls follow (more than the Rego history cap here).
    let text = "warden: 1\nname: h\ndefault: allow\nrules:\n  - { id: seq, effect: deny, tools: [x], after: { tools: [y] } }\n";
    let policy = CompiledPolicy::compile(
        "h.yaml",
        text,
        CompileOptions {
            history_cap: 7,
            ..CompileOptions::default()
        },
    )
    .expect("loads");
    let engine = Engine::new(policy);
    for i in 0..20 {
        let tool = if i == 0 { "y" } else { "t" };
        engine
            .decide(&request(&format!(r#"{{"session":"s","tool":"{tool}"}}"#)))
            .expect("decides");
    }
    let state = engine
        .sessions()
        .get("s")
        .wait()
        .expect("store")
        .expect("session");
    assert_eq!(state.history.len(), 0);
    assert_eq!(state.seen.len(), 1);
    let d = engine
        .decide(&request(r#"{"session":"s","tool":"x"}"#))
        .expect("decides");
    assert_eq!(d.verdict, Verdict::Deny);

    // A policy without sequence rules keeps no history at all.
    let engine = Engine::new(
        load_policy_str("n.yaml", "warden: 1\nname: n\ndefault: allow\n").expect("loads"),
    );
    engine
        .decide(&request(r#"{"session":"s","tool":"t"}"#))
        .expect("decides");
    assert!(engine.sessions().get("s").wait().expect("store").is_none());
}

#[test]
fn denied_requests_and_sessionless_requests_create_no_session() {
    let engine = Engine::new(
        load_policy_str("d.yaml", "warden: 1\nname: d\nrules:\n  - { id: t, effect: allow, tools: [ok], add_taints: [x] }\n").expect("loads"),
    );
    engine
        .decide(&request(r#"{"session":"a","tool":"nope"}"#))
        .expect("decides");
    engine
        .decide(&request(r#"{"tool":"ok"}"#))
        .expect("decides");
    assert_eq!(engine.sessions().len(), 0);
    engine
        .decide(&request(r#"{"session":"a","tool":"ok"}"#))
        .expect("decides");
    assert_eq!(engine.sessions().len(), 1);
}

#[test]
fn swapping_the_policy_applies_to_the_next_decision() {
    let allow = load_policy_str("a.yaml", "warden: 1\nname: a\ndefault: allow\n").expect("loads");
    let deny = load_policy_str("d.yaml", "warden: 1\nname: d\n").expect("loads");
    let engine = Engine::new(allow);
    let req = request(r#"{"tool":"t"}"#);
    assert_eq!(
        engine.decide(&req).expect("decides").verdict,
        Verdict::Allow
    );
    engine.swap_policy(deny);
    let d = engine.decide(&req).expect("decides");
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(&*d.policy.name, "d");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn policy_loader_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        let _ = load_policy_str("p.yaml", &text);
    }

    #[test]
    fn policy_loader_never_panics_on_policy_shaped_text(
        parts in prop::collection::vec(prop::sample::select(vec![
            "warden: 1\n", "name: x\n", "rules:\n", "  - { id: a, effect: allow }\n",
            "  - id: b\n", "    effect: deny\n", "    if: \"taint:x and (\"\n", "    args: { /a: { matches: \"[\" } }\n",
            "    after: { within: -1 }\n", "tools: { \"*\": [c] }\n", "{", "}", "[", "]", ":", "- ", "&a ", "*a ", "!!str ",
            "default: allow\n", "mode: dry_run\n", "    kinds: [prompt]\n", "\t", "\"", "'",
        ]), 0..20)
    ) {
        let _ = load_policy_str("p.yaml", &parts.concat());
    }
}

/// Two Rego policies that answer differently; `name` tells which snapshot decided.
fn rego_policy(name: &str, limit: u32) -> CompiledPolicy {
    let text = format!(
        "warden: 1\nname: {name}\ndefault: allow\nrego:\n  modules:\n    p.rego: |\n      package p\n      import rego.v1\n      too_large if input.args.amount > {limit}\nrules:\n  - {{ id: limit-{name}, effect: deny, rego: data.p.too_large }}\n"
    );
    load_policy_str("rego.yaml", &text).expect("policy loads")
}

/// 8 threads decide while the policy is swapped 100 times: every decision is wholly the old or
/// the new snapshot's (name, verdict and rule agree), none fails, and after the last swap every
/// thread's next decision uses the final snapshot.
#[test]
fn rego_decisions_during_100_reloads_come_from_one_whole_snapshot() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = Arc::new(Engine::new(rego_policy("a", 10)));
    let stop = Arc::new(AtomicBool::new(false));
    let req = request(r#"{"tool":"pay","args":{"amount":50}}"#);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let engine = Arc::clone(&engine);
            let stop = Arc::clone(&stop);
            let req = req.clone();
            thread::spawn(move || {
                let mut seen = [0usize; 2];
                while !stop.load(Ordering::Acquire) {
                    let d = engine.decide(&req).expect("never an error");
                    match &*d.policy.name {
                        // a: limit 10, so 50 is denied by a's own rule.
                        "a" => {
                            assert_eq!(d.verdict, Verdict::Deny);
                            assert_eq!(d.rule.as_deref(), Some("limit-a"));
                            seen[0] += 1;
                        }
                        // b: limit 100, so 50 is allowed.
                        "b" => {
                            assert_eq!(d.verdict, Verdict::Allow);
                            assert_eq!(d.rule, None);
                            seen[1] += 1;
                        }
                        other => panic!("unknown snapshot {other}"),
                    }
                }
                // The swap loop has finished: the next decision uses the final snapshot (b).
                let d = engine.decide(&req).expect("decides");
                assert_eq!(&*d.policy.name, "b");
                assert_eq!(d.verdict, Verdict::Allow);
                seen
            })
        })
        .collect();
    for i in 0..100 {
        let next = if i % 2 == 0 {
            rego_policy("b", 100)
        } else {
            rego_policy("a", 10)
        };
        engine.swap_policy(next);
        thread::yield_now();
    }
    engine.swap_policy(rego_policy("b", 100));
    stop.store(true, Ordering::Release);
    let mut totals = [0usize; 2];
    for w in workers {
        let seen = w.join().expect("worker");
        totals[0] += seen[0];
        totals[1] += seen[1];
    }
    assert!(
        totals[0] > 0 && totals[1] > 0,
        "both snapshots decided: {totals:?}"
    );
}

/// A Rego rule that runs past its time limit denies (fail closed) with `rego: limit exceeded`
/// and changes no session state, even though other matching rules would allow and taint.
#[test]
fn rego_limit_exceeded_denies_and_changes_nothing() {
    let text = "warden: 1\nname: slow\ndefault: allow\nrego:\n  modules:\n    slow.rego: |\n      package slow\n      import rego.v1\n      spin if {\n        some a in numbers.range(1, 5000)\n        some b in numbers.range(1, 5000)\n        a * b == -1\n      }\nrules:\n  - { id: taint, effect: allow, tools: [t], add_taints: [touched] }\n  - { id: slow, effect: allow, tools: [t], rego: data.slow.spin }\n";
    let options = CompileOptions {
        rego_limits: warden::rego::RegoLimits {
            max_eval_time: std::time::Duration::from_millis(20),
            ..warden::rego::RegoLimits::default()
        },
        ..CompileOptions::default()
    };
    let engine = Engine::new(CompiledPolicy::compile("slow.yaml", text, options).expect("loads"));
    let d = engine
        .decide(&request(r#"{"session":"s","tool":"t"}"#))
        .expect("decides");
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("rego:error"));
    assert_eq!(
        d.reasons.iter().map(|r| &**r).collect::<Vec<_>>(),
        ["rego: limit exceeded"]
    );
    assert!(d.taints.is_empty());
    assert!(engine.sessions().get("s").wait().expect("store").is_none());
    assert_eq!(engine.stats().rego_limit_exceeded, 1);
    assert_eq!(engine.stats().rego_errors, 0);
}

/// Rego's `input` is the request (with the default `kind` filled in) plus `classes` and `state`.
#[test]
fn rego_input_carries_every_request_field_classes_and_state() {
    let text = r#"warden: 1
name: shape
default: allow
tools: { "db.*": [data, read] }
rego:
  modules:
    shape.rego: |
      package shape
      import rego.v1
      http_ok if {
        input.kind == "http"
        input.http.method == "POST"
        input.http.headers["x-a"] == "1"
        input.principal == "user:p"
        input.session == "s"
        input.context.tenant.id == 7
        input.classes == []
        input.state == {"taints": [], "history": []}
      }
      call_ok if {
        input.kind == "tool_call"
        input.tool == "db.read"
        input.args.q[1].deep == true
        input.classes == ["data", "read"]
        input.state.taints == ["t"]
        input.state.history == ["mark"]
        not input.text
      }
rules:
  - { id: mark, effect: allow, tools: [mark], add_taints: [t] }
  - { id: http, effect: deny, rego: data.shape.http_ok }
  - { id: call, effect: deny, rego: data.shape.call_ok }
"#;
    let engine = Engine::new(load_policy_str("shape.yaml", text).expect("loads"));
    let d = engine
        .decide(&request(
            r#"{"session":"s","principal":"user:p","kind":"http","http":{"method":"POST","headers":{"x-a":"1"}},"context":{"tenant":{"id":7}}}"#,
        ))
        .expect("decides");
    assert_eq!(d.rule.as_deref(), Some("http"));
    engine
        .decide(&request(r#"{"session":"s2","tool":"mark"}"#))
        .expect("decides");
    let d = engine
        .decide(&request(
            r#"{"session":"s2","tool":"db.read","args":{"q":[0,{"deep":true}]}}"#,
        ))
        .expect("decides");
    assert_eq!(d.rule.as_deref(), Some("call"));
}
