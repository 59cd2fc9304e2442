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
        json!({"pointer": "/to", "held": 0, "failed": 2, "unknown": 0})
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
