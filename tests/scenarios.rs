//! Runs the project's own scenario suite (`tests/scenarios/`) through the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use warden::scenario::{collect_files, load_scenario, run_scenario};

#[test]
fn every_scenario_step_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let files = collect_files(&[dir]).expect("scenario directory is readable");
    assert!(
        files.len() >= 9,
        "expected the scenario suite, found {files:?}"
    );
    let mut failures = Vec::new();
    let mut passed = 0;
    for file in &files {
        let scenario = load_scenario(file).unwrap_or_else(|e| panic!("{e}"));
        let report = run_scenario(&scenario);
        passed += report.passed;
        failures.extend(
            report
                .failures
                .iter()
                .map(|f| format!("{}: {f}", file.display())),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(passed >= 70, "only {passed} steps ran");
}

#[test]
fn a_wrong_expectation_is_reported_with_expected_and_actual() {
    let dir = tempdir();
    let file = dir.join("wrong.yaml");
    std::fs::write(
        &file,
        "name: wrong\npolicy: { warden: 1, name: w, rules: [{ id: a, effect: allow, tools: [t], add_taints: [x] }] }\n\
         steps:\n  - request: { session: s, tool: t }\n    expect: { decision: deny, taints: [y] }\n\
         \x20 - request: { tool: u }\n    expect: { decision: deny, rule: null }\n",
    )
    .expect("write scenario");
    let scenario = load_scenario(&file).expect("valid scenario");
    let report = run_scenario(&scenario);
    assert_eq!(report.passed, 1);
    assert_eq!(report.failures.len(), 1);
    let line = report.failures[0].to_string();
    assert_eq!(
        line,
        r#"step 1: decision: expected "deny", got "allow"; taints: expected ["y"], got ["x"]"#
    );
}

#[test]
fn inline_policy_errors_point_into_the_scenario_file() {
    let dir = tempdir();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\npolicy:\n  warden: 1\n  name: b\n  rules:\n    - { id: a, effect: allow, if: \"taint:\" }\nsteps: []\n",
    )
    .expect("write scenario");
    let err = load_scenario(&file)
        .expect_err("invalid policy")
        .to_string();
    assert!(err.contains("bad.yaml:6:36: rule `a`: `if`"), "{err}");
}

#[test]
fn unknown_expect_keys_are_rejected() {
    let dir = tempdir();
    let file = dir.join("keys.yaml");
    std::fs::write(
        &file,
        "name: k\npolicy: { warden: 1, name: k }\nsteps:\n  - request: {}\n    expect: { decision: deny, rules: x }\n",
    )
    .expect("write scenario");
    let err = load_scenario(&file).expect_err("bad key").to_string();
    assert!(err.contains("unknown `expect` key `rules`"), "{err}");
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warden-scenario-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
