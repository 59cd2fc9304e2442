//! One corpus, every front door: the project's scenario suite (`tests/scenarios/`) decided
//! through the library, through `warden eval` and through the HTTP daemon (`warden serve`) must
//! meet every expectation, so the front doors cannot drift apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use warden::scenario::{PolicySource, Scenario, collect_files, compare, load_scenario};
use warden::{Decision, Engine};

mod common;

use std::ffi::OsStr;

use common::WARDEN;

/// A way into Warden: decides a scenario's requests in order, from fresh sessions.
trait FrontDoor {
    fn name(&self) -> &'static str;
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision>;
}

struct Library;

impl FrontDoor for Library {
    fn name(&self) -> &'static str {
        "library"
    }
    fn decide_all(&self, scenario: &Scenario, _dir: &Path) -> Vec<Decision> {
        let engine = Engine::new(scenario.policy.clone());
        requests(scenario)
            .iter()
            .map(|r| {
                engine
                    .decide(&warden::Request::from_value(r.clone()).unwrap())
                    .unwrap()
            })
            .collect()
    }
}

struct CliEval;

impl FrontDoor for CliEval {
    fn name(&self) -> &'static str {
        "warden eval"
    }
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision> {
        let policy = policy_file(scenario, dir);
        let mut child = Command::new(WARDEN)
            .args(["eval", "--policy", policy.to_str().unwrap(), "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for r in requests(scenario) {
            writeln!(stdin, "{r}").unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

struct Http;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl FrontDoor for Http {
    fn name(&self) -> &'static str {
        "HTTP /v1/decide"
    }
    fn decide_all(&self, scenario: &Scenario, dir: &Path) -> Vec<Decision> {
        let policy = policy_file(scenario, dir);
        let policies = policy.parent().unwrap();
        let name = OsStr::new(&*scenario.policy.info.name);
        let args: Vec<&OsStr> = [
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--state"),
            OsStr::new("memory"),
            OsStr::new("--no-decision-log"),
            OsStr::new("--policies"),
            policies.as_os_str(),
            OsStr::new("--anonymous-policy"),
            name,
        ]
        .to_vec();
        let (child, addr) = common::spawn_serve(&args, &dir.join("port"), &dir.join("serve.log"));
        let _daemon = Daemon(child);
        let agent = common::agent();
        requests(scenario)
            .iter()
            .map(|r| {
                let mut response = agent
                    .post(&format!("http://{}/v1/decide", addr.trim()))
                    .header("content-type", "application/json")
                    .send(r.to_string().as_bytes())
                    .unwrap();
                let body = response.body_mut().read_to_string().unwrap();
                assert_eq!(response.status().as_u16(), 200, "{body}");
                serde_json::from_str(&body).unwrap()
            })
            .collect()
    }
}

/// The scenario's requests as JSON, as a client would send them.
fn requests(scenario: &Scenario) -> Vec<serde_json::Value> {
    scenario
        .steps
        .iter()
        .map(|s| serde_json::to_value(s.request.as_ref().unwrap()).unwrap())
        .collect()
}

/// Writes the scenario's policy into `dir` (a copy of the scenario's folder, so Rego module
/// paths resolve as they do for the scenario) and returns its path.
fn policy_file(scenario: &Scenario, dir: &Path) -> PathBuf {
    let target = dir.join("policy").join("policy.yaml");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    match &scenario.source {
        PolicySource::Inline(text) => {
            copy_dir(scenario.path.parent().unwrap(), &dir.join("policy"));
            std::fs::write(&target, text).unwrap();
        }
        PolicySource::File(path) => {
            std::fs::copy(path, &target).unwrap();
        }
    }
    target
}

/// Copies the folders below `from` (not its files: a policy directory holds only the policy).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let dest = to.join(path.file_name().unwrap());
            std::fs::create_dir_all(&dest).unwrap();
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if file.is_file() {
                    std::fs::copy(&file, dest.join(file.file_name().unwrap())).unwrap();
                }
            }
        }
    }
}

#[test]
fn every_front_door_meets_every_scenario_expectation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios");
    let files = collect_files(&[root]).unwrap();
    assert!(files.len() >= 10, "{files:?}");
    let doors: [&dyn FrontDoor; 3] = [&Library, &CliEval, &Http];
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let scenario = load_scenario(file).unwrap();
        for door in doors {
            let dir = tempfile::tempdir().unwrap();
            let decisions = door.decide_all(&scenario, dir.path());
            assert_eq!(
                decisions.len(),
                scenario.steps.len(),
                "{} via {}",
                file.display(),
                door.name()
            );
            for (i, (step, decision)) in scenario.steps.iter().zip(&decisions).enumerate() {
                checked += 1;
                let mismatches = compare(&step.expect, decision);
                if !mismatches.is_empty() {
                    failures.push(format!(
                        "{} step {} via {}: {mismatches:?}",
                        file.display(),
                        i + 1,
                        door.name()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 3 * 90, "only {checked} checks ran");
}
