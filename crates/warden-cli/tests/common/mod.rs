//! Test harness shared by the tests that run the real `warden` binary: starting `warden serve`
//! here, the running daemon and its HTTP client in [`serve`], the MCP peers in [`mcp`]. Every
//! test binary includes all of it and uses a part, hence `dead_code` (the allow covers the
//! submodules too).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod mcp;
pub mod serve;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files of the audit log in `dir`, in chain order.
pub fn audit_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Every entry of the audit log in `dir` (its `audit-NNNNNN.jsonl` files in order), oldest
/// first; a line that does not parse (one being written while the daemon runs) is left out.
pub fn audit_entries(dir: &Path) -> Vec<serde_json::Value> {
    audit_files(dir)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `warden` binary under test.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

/// Scenario 02's policy (a support agent that may not email out after reading the CRM until a
/// human review), the daemon tests' default policy.
pub const SUPPORT_AGENT: &str = r#"
warden: 1
name: support-agent
version: "1.0.0"
tools: { "crm.read_*": [sensitive_read], send_email: [external_write], human_approve: [review] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii", reason: "external write after PII access" }
  - { id: review, effect: allow, tools: [human_approve], remove_taints: [pii] }
"#;

/// An HTTP client that hands every status to the test and opens a fresh connection per
/// request: the server may close a connection whose request body it did not read (401, 413),
/// and a pooled POST is not retried.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections(0)
        .build()
        .into()
}

/// Spawns `warden serve ARGS --port-file PORT_FILE` with stderr in `log` and waits until it
/// has written its bound address; returns the child and `host:port`.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned to the caller, whose handle kills and waits for it on drop"
)]
pub fn spawn_serve(args: &[&std::ffi::OsStr], port_file: &Path, log: &Path) -> (Child, String) {
    let _ = std::fs::remove_file(port_file);
    let mut child = Command::new(WARDEN)
        .arg("serve")
        .args(args)
        .arg("--port-file")
        .arg(port_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(port_file)
            && !addr.is_empty()
        {
            return (child, addr.trim().to_owned());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
