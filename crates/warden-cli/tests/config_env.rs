//! The configuration from the environment, through the CLI: where the file is found, the
//! `WARDEN_*` variables over it, secrets from files and never shown, `warden config check` and
//! `warden config show`, and a daemon started with a setting from a variable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{SUPPORT_AGENT, WARDEN};
use serde_json::{Value, json};

/// A directory with `warden.yaml` (policies in `pol/`).
fn site(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pol")).unwrap();
    std::fs::write(dir.path().join("pol/support-agent.yaml"), SUPPORT_AGENT).unwrap();
    std::fs::write(dir.path().join("warden.yaml"), config).unwrap();
    dir
}

/// `warden ARGS` in `dir` with only `vars` of the WARDEN_* variables set.
fn warden(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(WARDEN);
    command.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("WARDEN_") {
            command.env_remove(k);
        }
    }
    command.envs(vars.iter().copied()).output().unwrap()
}

fn shown(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_file_is_found_and_variables_override_it() {
    let dir = site("policies: pol\nmax_batch_items: 10\nlisten: 127.0.0.1:9911\n");
    // ./warden.yaml is found without --config.
    let plain = shown(&warden(dir.path(), &["config", "show"], &[]));
    assert_eq!(plain["file"], "warden.yaml");
    assert_eq!(plain["config"]["max_batch_items"], 10);
    // Variables override the file, a section's field by name; a secret comes from a file and
    // is never shown.
    std::fs::write(
        dir.path().join("db-url"),
        "postgres://warden:hunter2@db/warden\n",
    )
    .unwrap();
    let out = warden(
        dir.path(),
        &["config", "show"],
        &[
            ("WARDEN_MAX_BATCH_ITEMS", "3"),
            ("WARDEN_RATE_LIMIT_PER_SECOND", "9"),
            ("WARDEN_DATABASE_URL_FILE", "db-url"),
            ("WARDEN_MAX_BATCH", "1"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("hunter2"), "{text}");
    let with_vars = shown(&out);
    assert_eq!(with_vars["config"]["max_batch_items"], 3);
    assert_eq!(
        with_vars["config"]["rate_limit"],
        json!({"per_second": 9, "burst": 2000})
    );
    assert_eq!(with_vars["config"]["database_url"], "postgres://(hidden)");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("WARDEN_MAX_BATCH names no setting"),
        "a typo is warned about"
    );
    // WARDEN_CONFIG names another file, --config wins over both.
    std::fs::write(dir.path().join("other.yaml"), "max_batch_items: 77\n").unwrap();
    let other = shown(&warden(
        dir.path(),
        &["config", "show"],
        &[("WARDEN_CONFIG", "other.yaml")],
    ));
    assert_eq!(other["config"]["max_batch_items"], 77);
    let flag = shown(&warden(
        dir.path(),
        &["config", "show", "--config", "warden.yaml"],
        &[("WARDEN_CONFIG", "other.yaml")],
    ));
    assert_eq!(flag["config"]["max_batch_items"], 10);
}

#[test]
fn config_check_says_what_is_wrong_and_exits_2() {
    let dir = site("policies: pol\n");
    let ok = warden(dir.path(), &["config", "check"], &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("support-agent"));
    let bad_var = warden(
        dir.path(),
        &["config", "check"],
        &[("WARDEN_MAX_BATCH_ITEMS", "lots")],
    );
    assert_eq!(bad_var.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_var.stderr).contains("WARDEN_MAX_BATCH_ITEMS"));
    let no_secret = warden(
        dir.path(),
        &["config", "check"],
        &[("WARDEN_REDIS_URL_FILE", "/no/such/file")],
    );
    assert_eq!(no_secret.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("WARDEN_REDIS_URL_FILE"));
    std::fs::write(dir.path().join("pol/broken.yaml"), "warden: 1\nrules: 5\n").unwrap();
    let bad_policy = warden(dir.path(), &["config", "check"], &[]);
    assert_eq!(bad_policy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_policy.stderr).contains("broken.yaml"));
    let zero = warden(
        dir.path(),
        &["config", "check"],
        &[("WARDEN_MAX_CONNECTIONS", "0")],
    );
    assert_eq!(zero.status.code(), Some(2));
}

#[test]
fn the_daemon_runs_with_settings_from_variables() {
    let dir = site("policies: pol\nstate: memory\nanonymous_policy: support-agent\n");
    let port_file = dir.path().join("port");
    let mut child = Command::new(WARDEN)
        .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .current_dir(dir.path())
        .env("WARDEN_MAX_BATCH_ITEMS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&port_file)
            && !addr.is_empty()
        {
            break addr.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let batch = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|_| json!({"tool": "crm.read_customer"}))
            .collect();
        common::agent()
            .post(&format!("http://{addr}/v1/decide/batch"))
            .header("content-type", "application/json")
            .send(serde_json::to_vec(&items).unwrap())
            .unwrap()
    };
    let two = batch(2);
    assert_eq!(two.status(), 200);
    let mut three = batch(3);
    assert_eq!(three.status(), 400);
    let body = three.body_mut().read_to_string().unwrap();
    assert!(body.contains("at most 2"), "{body}");
    child.kill().unwrap();
    child.wait().unwrap();
}
