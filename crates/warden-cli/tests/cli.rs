//! The `warden` binary through its command line: exit codes, output formats, errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn warden(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warden runs");
    if let Some(input) = stdin {
        // The process may exit before reading (e.g. an unreadable policy): ignore a closed pipe.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("warden exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn check_accepts_valid_policies() {
    let policy = repo().join("examples/support-agent.yaml");
    let out = warden(&["check", policy.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": ok (6 rules, sha256:"));
}

#[test]
fn check_prints_every_error_as_file_line_col_and_exits_2() {
    let bad = temp_file(
        "bad.yaml",
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, if: \"taint:\" }\n  - { id: a, effect: deny }\n",
    );
    let out = warden(&["check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let shown = bad.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("{shown}:4:34: rule `a`: `if`")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{shown}:5:11: `id`: duplicate rule id `a`")),
        "{err}"
    );

    let out = warden(&["check", "/nonexistent/policy.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
}

#[test]
fn eval_decides_json_lines_keeping_sessions_across_lines() {
    let policy = repo().join("examples/support-agent.yaml");
    let requests = repo().join("examples/requests.jsonl");
    let out = warden(
        &[
            "eval",
            "--policy",
            policy.to_str().unwrap(),
            requests.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let decisions: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, serde_json::Value)> = decisions
        .iter()
        .map(|d| {
            (
                d["decision"].as_str().unwrap().to_owned(),
                d["rule"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("allow".into(), serde_json::Value::Null),
            ("allow".into(), serde_json::Value::Null),
            ("allow".into(), serde_json::Value::Null),
            ("deny".into(), "no-exfil".into()),
            ("allow".into(), serde_json::Value::Null),
            ("deny".into(), "no-external-recipients".into()),
            ("deny".into(), serde_json::Value::Null),
        ]
    );
    assert_eq!(decisions[2]["taints"], serde_json::json!(["pii"]));
    assert_eq!(decisions[3]["policy"]["name"], "support-agent");
    assert_eq!(decisions[3]["policy"]["version"], "1.0.0");
}

#[test]
fn eval_reads_one_pretty_printed_request_from_stdin() {
    let policy = repo().join("examples/support-agent.yaml");
    let out = warden(
        &["eval", "--policy", policy.to_str().unwrap(), "-"],
        Some("{\n  \"tool\": \"kb.search\",\n  \"args\": {\"q\": \"x\"}\n}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(d["decision"], "allow");
}

#[test]
fn eval_rejects_bad_requests_naming_the_field_with_exit_2() {
    let policy = repo().join("examples/support-agent.yaml");
    let p = policy.to_str().unwrap();
    for (input, needle) in [
        ("{\"tool\":\"kb.x\",\"tol\":1}\n", "field `tol`"),
        ("{\"tool\":\"kb.x\",\"args\":\"nope\"}\n", "field `args`"),
        (
            "{\"kind\":\"http\",\"http\":{\"verb\":\"GET\"}}\n",
            "field `http.verb`",
        ),
        (
            "{\"tool\":\"kb.x\"}\n{not json\n",
            "<stdin>:2: invalid JSON",
        ),
    ] {
        let out = warden(&["eval", "--policy", p], Some(input));
        assert_eq!(out.status.code(), Some(2), "{input}");
        assert!(
            text(&out.stderr).contains(needle),
            "{input}: {}",
            text(&out.stderr)
        );
    }
    let out = warden(&["eval", "--policy", "/nonexistent.yaml"], Some("{}"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn test_runs_scenarios_and_reports_counts() {
    let scenarios = repo().join("tests/scenarios");
    let out = warden(&["test", scenarios.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let last = text(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

#[test]
fn test_exits_1_on_a_failing_step_and_names_it() {
    let file = temp_file(
        "failing.yaml",
        "name: f\npolicy: { warden: 1, name: f }\nsteps:\n  - request: { tool: t }\n    expect: { decision: deny }\n  - request: { tool: t }\n    expect: { decision: allow }\n",
    );
    let out = warden(&["test", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("failing.yaml: step 2: decision: expected \"allow\", got \"deny\""),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn test_exits_2_on_unreadable_scenarios() {
    let file = temp_file("broken.yaml", "name: [unclosed\n");
    let out = warden(&["test", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("broken.yaml:"));
    let out = warden(&["test", "/nonexistent-dir"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_usage_exits_2() {
    let out = warden(&["frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = warden(&["--help"], None);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn eval_runs_rego_only_policies_like_opa() {
    let module = temp_file(
        "authz.rego",
        "package authz\nimport rego.v1\n\nallow if input.user in data.admins\nroles contains r if some r in input.roles\n",
    );
    let data = temp_file("data.json", r#"{"admins": ["alice"]}"#);
    let (m, d) = (module.to_str().unwrap(), data.to_str().unwrap());
    let out = warden(
        &[
            "eval",
            "--policy",
            m,
            "--data",
            d,
            "--query",
            "data.authz.allow",
        ],
        Some("{\"user\":\"alice\"}\n{\"user\":\"bob\"}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"result\":true}\n{}\n");

    let out = warden(
        &["eval", "--policy", m, "--query", "data.authz.roles"],
        Some(r#"{"roles":["b","a","b"]}"#),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v, serde_json::json!({"result": ["a", "b"]}));

    // A Rego policy needs a query; a query needs a Rego policy; errors carry file:line:col.
    let out = warden(&["eval", "--policy", m], Some("{}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs `--query`"));
    let yaml = repo().join("examples/support-agent.yaml");
    let out = warden(
        &[
            "eval",
            "--policy",
            yaml.to_str().unwrap(),
            "--query",
            "data.x",
        ],
        Some("{}"),
    );
    assert_eq!(out.status.code(), Some(2));
    let broken = temp_file("broken.rego", "package b\nimport rego.v1\nallow if {\n");
    let out = warden(
        &[
            "eval",
            "--policy",
            broken.to_str().unwrap(),
            "--query",
            "data.b.allow",
        ],
        Some("{}"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.rego:"),
        "{}",
        text(&out.stderr)
    );
    let out = warden(
        &["eval", "--policy", m, "--query", "data.authz.nothing"],
        Some("{}"),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn eval_mixes_json_lines_and_pretty_printed_requests() {
    let policy = repo().join("examples/support-agent.yaml");
    let input = "{\"session\":\"s\",\"tool\":\"crm.read_x\"}\n\n{\n  \"session\": \"s\",\n  \"tool\": \"send_email\",\n  \"args\": {\"to\": \"} { [\"}\n}\n{\"session\":\"s\",\"tool\":\"kb.search\"}\n";
    let out = warden(&["eval", "--policy", policy.to_str().unwrap()], Some(input));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let decisions: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions[1]["rule"], "no-exfil");
    assert_eq!(decisions[2]["decision"], "allow");
    // An unterminated request is reported at the line it starts on.
    let out = warden(
        &["eval", "--policy", policy.to_str().unwrap()],
        Some("{\"tool\":\"kb.a\"}\n{\"tool\":\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("<stdin>:2: invalid JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_and_eval_reject_undefined_rego_functions_and_recursion_with_exit_2() {
    // A Warden policy whose Rego module calls a function nobody defined: a load error naming
    // the module, line and column, not a deny discovered at the first request.
    let module = temp_file(
        "undefined_fn.rego",
        "package guard\nimport rego.v1\n\nblocked if lookup(input.args.to)\n",
    );
    let policy = temp_file(
        "undefined_fn.yaml",
        &format!(
            "warden: 1\nname: guard\nrego:\n  modules: [{}]\nrules:\n  - {{ id: guard, effect: deny, rego: data.guard.blocked }}\n",
            module.display()
        ),
    );
    let out = warden(&["check", policy.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("undefined_fn.rego:4:12: call to undefined function lookup"),
        "{err}"
    );

    // A Rego-only policy with two rules that depend on each other.
    let recursive = temp_file(
        "recursive.rego",
        "package loop\nimport rego.v1\n\na if b\nb if a\n",
    );
    let out = warden(
        &[
            "eval",
            "--policy",
            recursive.to_str().unwrap(),
            "--query",
            "data.loop.a",
        ],
        Some("{}"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("recursive.rego"), "{err}");
    assert!(err.contains("recursion"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "no partial output: {}",
        text(&out.stdout)
    );
}

/// `warden bench --json` on `args` (policy flags and request file), parsed.
fn bench_json(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let out = warden(&all, stdin);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_decides_the_requests_over_and_over_and_counts_the_outcomes() {
    let policy = repo().join("examples/support-agent.yaml");
    let policy = policy.to_str().unwrap();
    // Read (allow, taints the session), email (deny: tainted), approve (allow, clears it): each
    // pass of one thread denies exactly one request in three.
    let requests = concat!(
        r#"{"session":"s1","tool":"crm.read_customer","args":{"id":7}}"#,
        "\n",
        r#"{"session":"s1","tool":"send_email","args":{"to":"x@example.com"}}"#,
        "\n",
        r#"{"session":"s1","tool":"human_approve"}"#,
        "\n",
    );
    let report = bench_json(&["--policy", policy, "--seconds", "0.2"], Some(requests));
    let decisions = report["decisions"].as_u64().unwrap();
    let (allow, deny) = (
        report["allow"].as_u64().unwrap(),
        report["deny"].as_u64().unwrap(),
    );
    assert!(decisions >= 256, "{report}");
    assert_eq!(report["requests"], 3);
    assert_eq!(report["errors"], 0);
    assert_eq!(allow + deny, decisions);
    // A run ends where the clock is read (every 256 decisions), often mid-pass: a pass cut
    // after the email has its deny, one cut before it does not.
    assert_eq!(deny, (decisions + 1) / 3, "{report}");
    assert!(report["per_second"].as_f64().unwrap() > 0.0);
    assert!(report["ns_per_decision"].as_f64().unwrap() > 0.0);

    // Several threads share the sessions; every decision is still counted once.
    let report = bench_json(
        &["--policy", policy, "--seconds", "0.2", "--threads", "3"],
        Some(requests),
    );
    assert_eq!(report["threads"], 3);
    assert_eq!(
        report["allow"].as_u64().unwrap() + report["deny"].as_u64().unwrap(),
        report["decisions"].as_u64().unwrap()
    );

    // Text output names the figures.
    let out = warden(
        &["bench", "--policy", policy, "--seconds", "0.1"],
        Some(requests),
    );
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("3 request(s), 1 thread(s)"), "{stdout}");
    assert!(
        stdout.contains("per second") && stdout.contains("ns each"),
        "{stdout}"
    );
}

#[test]
fn bench_runs_rego_queries_and_counts_defined_results() {
    let rego = temp_file(
        "bench.rego",
        "package b\n\nimport rego.v1\n\nallow if input.user == \"alice\"\n",
    );
    let rego = rego.to_str().unwrap();
    let inputs = "{\"user\":\"alice\"}\n{\"user\":\"bob\"}\n";
    let report = bench_json(
        &[
            "--policy",
            rego,
            "--query",
            "data.b.allow",
            "--seconds",
            "0.2",
        ],
        Some(inputs),
    );
    let decisions = report["decisions"].as_u64().unwrap();
    let defined = report["defined"].as_u64().unwrap();
    assert!(decisions >= 256, "{report}");
    assert_eq!(defined + report["undefined"].as_u64().unwrap(), decisions);
    // Alice's input is defined, Bob's is not: one in two, up to the pass the run ended in.
    assert_eq!(defined, decisions.div_ceil(2), "{report}");
}

#[test]
fn bench_rejects_bad_input_with_exit_2_before_timing() {
    let policy = repo().join("examples/support-agent.yaml");
    let policy = policy.to_str().unwrap();
    let one = r#"{"tool":"kb.search"}"#;
    for (args, stdin, expected) in [
        (
            vec!["--seconds", "0"],
            one,
            "`--seconds` must be more than 0",
        ),
        (vec!["--seconds", "4000"], one, "at most 3600"),
        (
            vec!["--threads", "0"],
            one,
            "`--threads` must be from 1 to 256",
        ),
        (vec![], "", "<stdin>: no requests"),
        (
            vec![],
            "{\"tool\":\"a\"}\n{\"tool\": 5}\n",
            "<stdin>:2: field `tool`",
        ),
        (vec![], "{\"tool\":\n", "<stdin>:1: invalid JSON"),
    ] {
        let mut all = vec!["bench", "--policy", policy];
        all.extend(args.iter().copied());
        let out = warden(&all, Some(stdin));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing measured");
    }
    // An invalid policy is named with its line and column.
    let broken = temp_file(
        "broken-bench.yaml",
        "warden: 1\nname: x\nrules: [{ id: r, effect: maybe }]\n",
    );
    let out = warden(&["bench", "--policy", broken.to_str().unwrap()], Some(one));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken-bench.yaml:3:"),
        "{}",
        text(&out.stderr)
    );
}
