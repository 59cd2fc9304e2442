#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Policy semantics that once failed open (issue 22, item 9), each attacked through the real
//! binary: `warden eval` for the decision itself, `warden serve` where state must survive.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

mod common;

use common::WARDEN;
use common::serve::Server;

/// Runs `warden ARGS` with `stdin`.
fn warden(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(WARDEN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warden runs");
    // Written from another thread: the decisions fill stdout while the requests are written.
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        // The process may exit before reading (a policy that does not load): a closed pipe is
        // expected then.
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().expect("warden exits");
    writer.join().unwrap();
    out
}

/// `warden eval --policy POLICY` over `requests` (one JSON value each); the decisions.
fn eval(policy: &Path, requests: &[Value]) -> Vec<Value> {
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let out = warden(&["eval", "--policy", policy.to_str().unwrap()], &input);
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decisions: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decisions.len(), requests.len());
    decisions
}

/// Writes `text` as `name` in a fresh directory kept for the test's life.
fn policy_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn call(session: &str, tool: &str) -> Value {
    json!({"session": session, "tool": tool})
}

/// Read a secret, make `n` harmless calls, then post: the post must be denied.
fn read_then_harmless_then_post(n: usize) -> Vec<Value> {
    let mut requests = vec![call("s", "read_secret")];
    requests.extend((0..n).map(|_| call("s", "noop")));
    requests.push(call("s", "post"));
    requests
}

const SEQUENCE: &str = r#"
warden: 1
name: seq
default: allow
rules:
  - id: no-post-after-secret
    effect: deny
    tools: [post]
    after: { tools: [read_secret] }
    reason: "posting after reading a secret"
"#;

#[test]
fn a_sequence_rule_without_within_holds_past_the_history_cap() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(&dir, "seq.yaml", SEQUENCE);
    let decisions = eval(&policy, &read_then_harmless_then_post(1500));
    let last = decisions.last().unwrap();
    assert_eq!(last["decision"], "deny", "{last}");
    assert_eq!(last["rule"], "no-post-after-secret");
    // Another session is not affected.
    let other = eval(&policy, &[call("t", "post")]);
    assert_eq!(other[0]["decision"], "allow");
}

#[test]
fn a_sequence_marker_survives_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/seq.yaml"), SEQUENCE).unwrap();
    let config = dir.path().join("warden.yaml");
    std::fs::write(
        &config,
        "policies: policies\nkeys_file: keys.json\nstate_file: state/sessions.redb\n\
         rate_limit: { per_second: 0 }\nanonymous_policy: seq\nwatch: false\n",
    )
    .unwrap();
    let start = |n: u32| {
        Server::spawn(
            &[
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &dir.path().join("port"),
            &dir.path().join(format!("log-{n}.txt")),
        )
    };
    let server = start(1);
    let read = server.post_json("/v1/decide", None, &call("p", "read_secret"));
    assert_eq!(read.body["decision"], "allow", "{}", read.text);
    // More harmless calls than the old 1,000-entry history held, in batches.
    for _ in 0..3 {
        let batch: Vec<Value> = (0..400).map(|_| call("p", "noop")).collect();
        let reply = server.post_json("/v1/decide/batch", None, &Value::Array(batch));
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    server.stop();

    let server = start(2);
    let post = server.post_json("/v1/decide", None, &call("p", "post"));
    assert_eq!(post.body["decision"], "deny", "{}", post.text);
    assert_eq!(post.body["rule"], "no-post-after-secret");
    server.stop();
}

#[test]
fn within_beyond_the_old_cap_is_kept_and_beyond_the_maximum_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        "within.yaml",
        &SEQUENCE.replace(
            "after: { tools: [read_secret] }",
            "after: { tools: [read_secret], within: 5000 }",
        ),
    );
    let decisions = eval(&policy, &read_then_harmless_then_post(3000));
    assert_eq!(decisions.last().unwrap()["decision"], "deny");

    let too_far = policy_file(
        &dir,
        "too-far.yaml",
        &SEQUENCE.replace(
            "after: { tools: [read_secret] }",
            "after: { tools: [read_secret], within: 1000000 }",
        ),
    );
    let out = warden(&["check", too_far.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rule `no-post-after-secret`") && stderr.contains("within"),
        "{stderr}"
    );
    let out = warden(&["eval", "--policy", too_far.to_str().unwrap()], "{}\n");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dry_run_keeps_redacted_when_the_computed_decision_is_deny() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        "dry.yaml",
        r#"
warden: 1
name: dry
default: allow
mode: dry_run
content: { detectors: [email], input: redact }
rules:
  - { id: no-send, effect: deny, tools: [send] }
"#,
    );
    let d = eval(
        &policy,
        &[json!({"tool": "send", "args": {"to": "alice@corp.test"}})],
    );
    assert_eq!(d[0]["decision"], "allow", "{}", d[0]);
    assert_eq!(d[0]["dry_run_decision"], "deny");
    assert_eq!(d[0]["rule"], "no-send");
    // The request goes through in dry run: the caller must forward the redacted form.
    assert_eq!(d[0]["redacted"], json!({"to": "[REDACTED:email]"}));
}

#[test]
fn argument_conditions_fail_closed_on_arrays_and_other_types() {
    let dir = tempfile::tempdir().unwrap();
    let deny = policy_file(
        &dir,
        "deny.yaml",
        r#"
warden: 1
name: deny-side
default: allow
rules:
  - { id: no-evil, effect: deny, tools: [mail], args: { /to: { matches: "@evil\\.test$" } } }
  - { id: no-force, effect: deny, tools: [push], args: { /force: { equals: true } } }
  - { id: no-evil-any, effect: deny, tools: [mail2], args: { /to: { any: { matches: "@evil\\.test$" } } } }
"#,
    );
    let d = eval(
        &deny,
        &[
            json!({"tool": "mail", "args": {"to": ["bob@evil.test"]}}),
            json!({"tool": "mail", "args": {"to": {"address": "bob@evil.test"}}}),
            json!({"tool": "push", "args": {"force": "true"}}),
            json!({"tool": "push", "args": {"force": 1}}),
            json!({"tool": "mail2", "args": {"to": ["alice@corp.test", "bob@evil.test"]}}),
            // Judged: not evil, not forced, no element evil.
            json!({"tool": "mail", "args": {"to": "alice@corp.test"}}),
            json!({"tool": "push", "args": {"force": false}}),
            json!({"tool": "mail2", "args": {"to": ["alice@corp.test"]}}),
        ],
    );
    let verdicts: Vec<(&str, &str)> = d
        .iter()
        .map(|d| {
            (
                d["decision"].as_str().unwrap(),
                d["rule"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("deny", "no-evil"),
            ("deny", "no-evil"),
            ("deny", "no-force"),
            ("deny", "no-force"),
            ("deny", "no-evil-any"),
            ("allow", ""),
            ("allow", ""),
            ("allow", ""),
        ]
    );

    let allow = policy_file(
        &dir,
        "allow.yaml",
        r#"
warden: 1
name: allow-side
default: deny
rules:
  - { id: corp-only, effect: allow, tools: [mail], args: { /to: { matches: "@corp\\.test$" } } }
  - { id: dry-only, effect: allow, tools: [push], args: { /dry: { equals: true } } }
  - { id: all-corp, effect: allow, tools: [mail2], args: { /to: { all: { matches: "@corp\\.test$" } } } }
"#,
    );
    let d = eval(
        &allow,
        &[
            json!({"tool": "mail", "args": {"to": ["alice@corp.test", "bob@evil.test"]}}),
            json!({"tool": "push", "args": {"dry": "true"}}),
            json!({"tool": "mail2", "args": {"to": ["alice@corp.test", "bob@evil.test"]}}),
            json!({"tool": "mail2", "args": {"to": ["alice@corp.test", {"x": 1}]}}),
            json!({"tool": "mail", "args": {"to": "alice@corp.test"}}),
            json!({"tool": "push", "args": {"dry": true}}),
            json!({"tool": "mail2", "args": {"to": ["alice@corp.test", "carol@corp.test"]}}),
        ],
    );
    let verdicts: Vec<&str> = d.iter().map(|d| d["decision"].as_str().unwrap()).collect();
    assert_eq!(
        verdicts,
        ["deny", "deny", "deny", "deny", "allow", "allow", "allow"]
    );
}

#[test]
fn the_example_policy_blocks_recipient_variants() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/support-agent.yaml");
    let send = |n: usize, to: Value| json!({"session": format!("s{n}"), "tool": "send_email", "args": {"to": to}});
    let d = eval(
        &policy,
        &[
            send(1, json!("bob@EVIL.test")),
            send(2, json!("bob@evil.test.")),
            send(3, json!(["alice@customer.test", "bob@evil.test"])),
            send(4, json!("Bob <bob@Example.Test>")),
            send(5, json!("bob@mail.evil.test")),
            send(6, json!("alice@customer.test")),
            send(7, json!("bob@notevil.test")),
        ],
    );
    for (n, d) in d.iter().enumerate().take(5) {
        assert_eq!(d["decision"], "deny", "request {n}: {d}");
        assert_eq!(d["rule"], "no-external-recipients", "request {n}: {d}");
    }
    assert_eq!(d[5]["decision"], "allow", "{}", d[5]);
    assert_eq!(d[6]["decision"], "allow", "{}", d[6]);
}

#[test]
fn big_integers_compare_exactly_in_equals_and_one_of() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        &dir,
        "big.yaml",
        r#"
warden: 1
name: big
default: deny
rules:
  - { id: one-account, effect: allow, tools: [pay], args: { /account: { equals: 1234567890123456789 } } }
  - { id: listed, effect: allow, tools: [refund], args: { /account: { one_of: [7, 1234567890123456789] } } }
  - { id: frozen, effect: deny, tools: [pay, refund], args: { /account: { equals: 9007199254740993 } } }
"#,
    );
    // Requests are written as text: the numbers must reach the binary exactly as given.
    let lines = [
        r#"{"tool":"pay","args":{"account":1234567890123456768.0}}"#,
        r#"{"tool":"pay","args":{"account":1234567890123456788}}"#,
        r#"{"tool":"refund","args":{"account":1234567890123456768.0}}"#,
        r#"{"tool":"refund","args":{"account":1.2345678901234568e18}}"#,
        r#"{"tool":"pay","args":{"account":1234567890123456789}}"#,
        r#"{"tool":"refund","args":{"account":7.0}}"#,
        r#"{"tool":"refund","args":{"account":9007199254740993.0}}"#,
    ];
    let out = warden(
        &["eval", "--policy", policy.to_str().unwrap()],
        &lines.join("\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decisions: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdicts: Vec<&str> = decisions
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["deny", "deny", "deny", "deny", "allow", "allow", "deny"],
        "{decisions:?}"
    );
    // A float of 2^53 or more cannot be compared exactly with an integer: the deny rule holds.
    assert_eq!(decisions[6]["rule"], "frozen");
}
