//! Policy tooling through the `warden` binary: `warden test --coverage` and `warden schema`
//! (the checked-in schema kept fresh, every policy in the repository valid against it under the
//! independent PyPI `jsonschema` validator, known-bad ones rejected).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("warden runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-tooling-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const COVERED_SCENARIO: &str = r#"name: coverage
policy:
  warden: 1
  name: cov
  tools: { send_email: [external_write], "crm.*": [sensitive_read] }
  rules:
    - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
    - { id: writes, effect: allow, classes: [external_write] }
    - id: no-exfil
      effect: deny
      classes: [external_write]
      if: "taint:pii and not principal:admin"
    - { id: evil, effect: deny, tools: [send_email], args: { /to: { matches: "@evil" } } }
    - { id: unused, effect: deny, tools: [shell] }
steps:
  - request: { session: s, tool: send_email, args: { to: a@corp.test } }
    expect: { decision: allow }
  - request: { session: s, tool: crm.read }
    expect: { decision: allow, taints: [pii] }
  - request: { session: s, tool: send_email, args: { to: a@corp.test } }
    expect: { decision: deny, rule: no-exfil }
"#;

#[test]
fn coverage_reports_rules_subexpressions_and_args_as_a_table() {
    let dir = temp_dir("cov-text");
    std::fs::write(dir.join("s.yaml"), COVERED_SCENARIO).unwrap();
    let out = warden(&["test", dir.to_str().unwrap(), "--coverage"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("3 passed, 0 failed\n"), "{stdout}");
    for line in [
        "  rule      effect  reached  matched  decided",
        "  writes    allow         2        2        1",
        "  no-exfil  deny          2        1        1",
        "  never matched: rule `evil`",
        "  never matched: rule `unused`",
        "  `if` never false: rule `no-exfil`: not principal:admin",
        "  `if` never true: rule `no-exfil`: principal:admin",
        "  argument condition never held: rule `evil`: /to",
        "  9/14 points (64.3%)",
        "coverage: 9/14 points (64.3%) over 1 policy",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn coverage_as_json_and_fail_under() {
    let dir = temp_dir("cov-json");
    std::fs::write(dir.join("s.yaml"), COVERED_SCENARIO).unwrap();
    let path = dir.to_str().unwrap();
    let out = warden(&["test", path, "--coverage", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("3 passed, 0 failed"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["covered"], 9);
    assert_eq!(report["points"], 14);
    assert_eq!(report["percent"], 64.3);
    let policy = &report["policies"][0];
    assert_eq!(policy["policy"], "cov");
    assert_eq!(policy["requests"], 3);
    let rule = &policy["rules"][2];
    assert_eq!(rule["id"], "no-exfil");
    assert_eq!(
        rule["conditions"][1],
        json!({"expr": "taint:pii", "when_true": 1, "when_false": 1})
    );
    assert_eq!(
        policy["rules"][3]["args"][0],
        json!({"on": "args", "pointer": "/to", "held": 0, "failed": 2, "unknown": 0})
    );

    // Below the bar: exit 1, saying so; at or above it: exit 0 (`--fail-under` implies coverage).
    let out = warden(&["test", path, "--fail-under", "70"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("coverage 64.3% is below --fail-under 70%"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("coverage: 9/14 points"));
    let out = warden(&["test", path, "--fail-under", "64"]);
    assert_eq!(out.status.code(), Some(0));

    // A bad percentage is bad input.
    let out = warden(&["test", path, "--fail-under", "101"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a percentage from 0 to 100"));
}

#[test]
fn coverage_merges_scenarios_that_share_a_policy_and_decides_as_the_engine() {
    // The project's own scenarios: they pass with coverage on, and the two that share
    // `policies/json-policy.json` are reported once.
    let out = warden(&[
        "test",
        repo().join("tests/scenarios").to_str().unwrap(),
        "--coverage",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let policies = report["policies"].as_array().unwrap();
    let digests: std::collections::BTreeSet<&str> = policies
        .iter()
        .map(|p| p["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), policies.len());
    assert!(report["points"].as_u64().unwrap() > 0);
}

// ---------------------------------------------------------------------------------------------
// The policy JSON Schema.

#[test]
fn checked_in_schema_is_what_warden_schema_prints() {
    let out = warden(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let checked_in = std::fs::read_to_string(repo().join("schema/policy.schema.json")).unwrap();
    assert!(
        text(&out.stdout) == checked_in,
        "schema/policy.schema.json is stale: run `cargo run -p warden-cli -- schema > schema/policy.schema.json`"
    );
}

/// Every policy document in the repository: example and test policy files, the inline
/// policies of the scenarios, the policy loader's fuzz corpus (its valid entries).
fn repository_policies() -> Vec<(String, Value)> {
    let root = repo();
    let mut out = Vec::new();
    let read = |path: &Path| -> Value {
        // As the loader reads YAML: YAML 1.2 booleans only (`id: y` is the string "y").
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = true;
        serde_saphyr::from_str_with_options(&std::fs::read_to_string(path).unwrap(), options)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let mut files = Vec::new();
    for dir in [
        "examples",
        "tests/scenarios/policies",
        "fuzz/corpus/policy_loader",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    for path in files {
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let policy_like = path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        if !policy_like || name.ends_with("bad.yaml") || name.ends_with("authz-data.json") {
            continue; // not a policy / deliberately invalid
        }
        let doc = read(&path);
        assert!(doc.get("warden").is_some(), "{name} is not a policy");
        out.push((name, doc));
    }
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(root.join("tests/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    scenarios.sort();
    for path in scenarios {
        let doc = read(&path);
        if let Some(policy) = doc.get("policy") {
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            out.push((format!("{name} (policy)"), policy.clone()));
        }
    }
    out
}

/// Runs tests/peers/validate_schema.py (PyPI `jsonschema`): each document's errors.
fn validate(documents: &[(String, Value)]) -> Vec<(String, Vec<Value>)> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schema/policy.schema.json")).unwrap(),
    )
    .unwrap();
    let request = json!({
        "schema": schema,
        "documents": documents.iter().map(|(name, doc)| json!({"name": name, "doc": doc})).collect::<Vec<_>>(),
    });
    let mut pythonpath: Vec<String> = std::env::var("PYTHONPATH")
        .ok()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let local = repo().join(".ci/.pydeps");
    if local.is_dir() {
        pythonpath.insert(0, local.to_string_lossy().into_owned());
    }
    let mut child = Command::new("python3")
        .arg(repo().join("tests/peers/validate_schema.py"))
        .env("PYTHONPATH", pythonpath.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is required for this test: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the validator failed (install the peers: `python3 -m pip install --no-deps --target \
         .ci/.pydeps -r tests/peers/requirements.txt`): {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (
                v["name"].as_str().unwrap().to_owned(),
                v["errors"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

#[test]
fn every_policy_in_the_repository_is_valid_against_the_schema() {
    let documents = repository_policies();
    assert!(documents.len() >= 15, "found only {}", documents.len());
    for (name, errors) in validate(&documents) {
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn the_schema_rejects_known_bad_policies() {
    let base = json!({"warden": 1, "name": "bad", "rules": [{"id": "r", "effect": "allow"}]});
    let with = |patch: &dyn Fn(&mut Value)| {
        let mut doc = base.clone();
        patch(&mut doc);
        doc
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown top-level field",
            with(&|d| d["rulez"] = json!([])),
            "additionalProperties",
        ),
        (
            "unknown rule field",
            with(&|d| d["rules"][0]["tool"] = json!(["x"])),
            "additionalProperties",
        ),
        (
            "bad effect",
            with(&|d| d["rules"][0]["effect"] = json!("permit")),
            "enum",
        ),
        (
            "wrong type",
            with(&|d| d["rules"][0]["tools"] = json!("send_email")),
            "type",
        ),
        ("wrong version", with(&|d| d["warden"] = json!(2)), "const"),
        ("missing name", json!({"warden": 1}), "required"),
        (
            "within 0",
            with(&|d| d["rules"][0]["after"] = json!({"tools": ["x"], "within": 0})),
            "minimum",
        ),
        (
            "after without tools or classes",
            with(&|d| d["rules"][0]["after"] = json!({"within": 2})),
            "anyOf",
        ),
        (
            "taints on a deny rule",
            with(&|d| {
                d["rules"][0]["effect"] = json!("deny");
                d["rules"][0]["add_taints"] = json!(["t"]);
            }),
            "not",
        ),
        (
            "not a JSON Pointer",
            with(&|d| d["rules"][0]["args"] = json!({"to": {"exists": true}})),
            "pattern",
        ),
        (
            "empty argument condition",
            with(&|d| d["rules"][0]["args"] = json!({"/to": {}})),
            "minProperties",
        ),
        (
            "unknown detector",
            with(&|d| d["content"] = json!({"detectors": ["ssn"]})),
            "enum",
        ),
    ];
    let documents: Vec<(String, Value)> = cases
        .iter()
        .map(|(name, doc, _)| ((*name).to_owned(), doc.clone()))
        .collect();
    let results = validate(&documents);
    assert_eq!(results.len(), cases.len());
    for ((name, errors), (_, _, keyword)) in results.iter().zip(&cases) {
        assert!(
            errors.iter().any(|e| e["keyword"] == *keyword),
            "{name}: expected a `{keyword}` error, got {errors:?}"
        );
    }
    // And the loader agrees that each is invalid.
    let dir = temp_dir("schema-bad");
    for (name, doc, _) in &cases {
        let path = dir.join(format!("{}.json", name.replace(' ', "-")));
        std::fs::write(&path, doc.to_string()).unwrap();
        let out = warden(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: the loader accepts it");
    }
}

// ---------------------------------------------------------------------------------------------
// `warden analyze`: findings and flow proofs.

const LINTED: &str = r#"warden: 1
name: lint
tools:
  "crm.read_*": [sensitive_read]
  send_email: [external_write]
  "kb.*": [internal_read]
  shell: [exec]
rules:
  - { id: kb, effect: allow, classes: [internal_read] }
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii, unread] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii" }
  - { id: again, effect: allow, tools: [send_email] }
  - { id: ops-shell, effect: allow, tools: [shell], principals: ["ops:*"] }
  - { id: secret, effect: deny, if: "taint:secret" }
  - { id: ghost, effect: allow, classes: [admin] }
  - { id: dead, effect: allow, tools: [send_email], if: "taint:pii" }
  - { id: same, effect: deny, classes: [internal_read] }
"#;

#[test]
fn analyze_reports_findings_with_locations_and_exits_1_on_errors() {
    let dir = temp_dir("analyze");
    let policy = dir.join("lint.yaml");
    std::fs::write(&policy, LINTED).unwrap();
    let p = policy.to_str().unwrap();
    let out = warden(&["analyze", p]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        format!(
            "{p}:7:3: info[never-allowed]: tool `shell` can never be called by requests without a principal, any principal the policy does not name"
        ),
        format!(
            "{p}:9:11: error[conflict]: rule `kb` (allow) and deny rule `same` (line 18) have the same scope"
        ),
        format!(
            "{p}:10:72: warning[taint-never-read]: taint `unread` is added (rule `reads`) but no `if` reads it"
        ),
        format!(
            "{p}:13:11: warning[redundant]: rule `again` is subsumed by earlier rule `writes` (line 11)"
        ),
        format!(
            "{p}:15:37: error[never-matches]: rule `secret` never matches: its `if` can never hold"
        ),
        format!(
            "{p}:15:37: warning[taint-never-added]: taint `secret` is used by rule `secret` but no rule adds it"
        ),
        format!(
            "{p}:16:11: error[never-matches]: rule `ghost` never matches: no tool of the registry has class admin"
        ),
        format!(
            "{p}:17:11: warning[shadowed]: rule `dead` (allow) never decides: deny rule `no-exfil` (line 12) matches whenever it does"
        ),
        format!("{p}: 3 error(s), 5 warning(s), 1 info"),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in\n{stdout}"
        );
    }

    let out = warden(&["analyze", p, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 3);
    let ghost = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "ghost")
        .unwrap();
    assert_eq!(
        ghost,
        &json!({"severity": "error", "code": "never-matches", "line": 16, "column": 11, "rule": "ghost",
                "message": "rule `ghost` never matches: no tool of the registry has class admin"})
    );

    // A clean policy: exit 0.
    let out = warden(&[
        "analyze",
        repo().join("examples/support-agent.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Bad input: exit 2 naming the problem.
    let out = warden(&["analyze", "/nonexistent/policy.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "warden: 1\nname: x\nrules: [{ id: a, effect: permit }]\n",
    )
    .unwrap();
    let out = warden(&["analyze", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.yaml:3:"),
        "{}",
        text(&out.stderr)
    );
}

/// Decides `requests` (JSON Lines) with `warden eval`: each decision's verdict.
fn eval_verdicts(policy: &str, requests: &str) -> Vec<String> {
    let dir = temp_dir("eval-counterexample");
    let file = dir.join("requests.jsonl");
    std::fs::write(&file, requests).unwrap();
    let out = warden(&["eval", "--policy", policy, file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["decision"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn forbid_proves_or_prints_a_shortest_counterexample_that_eval_reproduces() {
    let support = repo().join("examples/support-agent.yaml");
    let p = support.to_str().unwrap();

    // Proved: right after a sensitive read, no external write goes through.
    let out = warden(&[
        "analyze",
        p,
        "--forbid",
        "class:sensitive_read -> class:external_write within 1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("proved: no session can make `class:sensitive_read -> class:external_write within 1` through allowed calls ("), "{stdout}");
    assert!(stdout.contains(" states explored"), "{stdout}");
    assert!(stdout.contains("over-approximated (argument conditions and Rego assumed both ways): no-external-recipients"), "{stdout}");

    // Not proved: a human approval clears the taint, so read -> approve -> send is possible.
    let out = warden(&[
        "analyze",
        p,
        "--forbid",
        "class:sensitive_read -> class:external_write",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let proof = &report["proofs"][0];
    assert_eq!(proof["proved"], false);
    let steps = proof["counterexample"].as_array().unwrap();
    let tools: Vec<&str> = steps
        .iter()
        .map(|s| s["request"]["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["crm.read_", "human_approve", "send_email"]);
    assert!(steps.iter().all(|s| s["reproduced"] == true));
    let requests: String = steps
        .iter()
        .map(|s| format!("{}\n", s["request"]))
        .collect();
    assert_eq!(eval_verdicts(p, &requests), ["allow", "allow", "allow"]);

    // The text form prints the same requests, one per line.
    let out = warden(&["analyze", p, "--forbid", "crm.read_* -> send_email"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "counterexample: `crm.read_* -> send_email` is possible in 3 allowed request(s)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "{\"session\":\"proof\",\"kind\":\"tool_call\",\"tool\":\"human_approve\"}\n"
        ),
        "{stdout}"
    );

    // Bad patterns and bounds: exit 2.
    for bad in ["a -> b within 0", "a -> -> b", "class: -> x", "a b -> c"] {
        let out = warden(&["analyze", p, &format!("--forbid={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("forbidden sequence"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    let out = warden(&[
        "analyze",
        p,
        "--forbid",
        "class:sensitive_read -> class:external_write within 1",
        "--max-states",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("more than 1 session states reachable"));
}

#[test]
fn a_counterexample_that_needs_arguments_says_so() {
    let dir = temp_dir("flow-args");
    let policy = dir.join("args.yaml");
    std::fs::write(
        &policy,
        r#"warden: 1
name: args
tools: { "crm.read": [sensitive_read], send_email: [external_write] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - id: internal-mail
    effect: allow
    tools: [send_email]
    args: { /to: { matches: "@corp\\.test$" } }
"#,
    )
    .unwrap();
    let out = warden(&[
        "analyze",
        policy.to_str().unwrap(),
        "--forbid",
        "crm.read -> send_email",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("  step 2 is denied without arguments: it needs arguments for which `internal-mail` holds"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "over-approximated (argument conditions and Rego assumed both ways): internal-mail"
        ),
        "{stdout}"
    );
}

#[test]
fn analyze_weighs_priorities_and_leaves_audit_rules_out() {
    let dir = temp_dir("analyze-priority");
    let policy = dir.join("priority.yaml");
    std::fs::write(
        &policy,
        "warden: 1\nname: p\nrules:\n\
         \x20 - { id: no-rm, effect: deny, tools: [rm] }\n\
         \x20 - { id: admins-rm, effect: allow, tools: [rm], priority: 10 }\n\
         \x20 - { id: never-fmt, effect: deny, tools: [fmt], priority: 10 }\n\
         \x20 - { id: fmt, effect: allow, tools: [fmt] }\n\
         \x20 - { id: watch-rm, effect: audit, tools: [rm] }\n\
         \x20 - { id: ls, effect: allow, tools: [ls] }\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let out = warden(&["analyze", p]);
    let stdout = text(&out.stdout);
    // The higher-priority allow is not shadowed by the deny below it.
    assert!(!stdout.contains("`admins-rm`"), "{stdout}");
    // The allow below a higher-priority deny of the same scope never applies.
    assert!(
        stdout.contains(&format!(
            "{p}:7:11: error[conflict]: rule `fmt` (allow) and deny rule `never-fmt` (line 6) have the same scope"
        )),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // An audit rule neither shadows nor conflicts with anything.
    assert!(!stdout.contains("`watch-rm`"), "{stdout}");
}
