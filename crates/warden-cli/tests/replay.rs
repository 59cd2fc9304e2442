//! Capture and replay: `warden serve` with `capture:` writes what it decides (content scrubbed,
//! files 0600, rotated); `warden replay` re-decides it with another policy, sessions and tenants
//! kept apart, and reports what flips (exit 1, or 0 with `--allow-flips`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use common::serve::Server;
use common::{SUPPORT_AGENT, WARDEN};
use serde_json::{Value, json};

/// A secret that must never reach a capture file.
const EMAIL: &str = "ada.lovelace@example.test";

fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN).args(args).output().unwrap()
}

fn key(config: &Path, tenant: &str) -> String {
    let out = Command::new(WARDEN)
        .args([
            "keys",
            "create",
            "--tenant",
            tenant,
            "--policy",
            "support-agent",
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn lines_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn captured_traffic_replays_in_order_and_reports_what_a_new_policy_flips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("pol")).unwrap();
    // The policy's own custom detector: what it finds is scrubbed from the capture too.
    std::fs::write(
        root.join("pol/support-agent.yaml"),
        format!("{SUPPORT_AGENT}content: {{ custom: [ {{ id: employee, pattern: \"EMP-[0-9]{{6}}\" }} ] }}\n"),
    )
    .unwrap();
    let config = root.join("warden.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:0\npolicies: pol\nkeys_file: keys.json\nstate: memory\nwatch: false\n\
         capture: { dir: capture, max_file_bytes: 4096, max_files: 20 }\n",
    )
    .unwrap();
    let (acme, beta) = (key(&config, "acme"), key(&config, "beta"));
    let server = Server::spawn(
        &["--config", config.to_str().unwrap()],
        &root.join("port"),
        &root.join("log"),
    );
    let decide = |key: &str, body: Value| {
        let reply = server.post_json("/v1/decide", Some(key), &body);
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["decision"].as_str().unwrap().to_owned()
    };
    // acme's session s1 reads PII, then its e-mail is denied; beta's s1 (another tenant) and
    // acme's s2 (another session) send freely.
    let read = json!({"tool": "crm.read_customer", "session": "s1", "args": {"email": EMAIL}});
    assert_eq!(decide(&acme, read), "allow");
    let send =
        |session: &str| json!({"tool": "send_email", "session": session, "args": {"to": EMAIL}});
    assert_eq!(decide(&acme, send("s1")), "deny");
    assert_eq!(decide(&beta, send("s1")), "allow");
    assert_eq!(decide(&acme, send("s2")), "allow");
    // Enough traffic to rotate the 4 KiB files a few times.
    for i in 0..40 {
        let session = format!("bulk-{i}");
        let note = format!("badge EMP-{i:06} {}", "x".repeat(90));
        decide(
            &acme,
            json!({"tool": "crm.read_customer", "session": session, "args": {"note": note}}),
        );
    }
    let capture = root.join("capture");
    server.wait_for("every decision captured", |_| lines_in(&capture) == 44);
    drop(server);

    // Scrubbed, private, rotated.
    assert_eq!(
        std::fs::metadata(&capture).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&capture).unwrap() {
        let path = entry.unwrap().path();
        files += 1;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(EMAIL),
            "{}: the e-mail address was captured",
            path.display()
        );
        assert!(
            !text.contains("EMP-0000"),
            "{}: an employee id was captured",
            path.display()
        );
        if text.contains("badge") {
            assert!(
                text.contains("badge [REDACTED:employee] x"),
                "{}",
                path.display()
            );
        }
        assert!(!text.contains("wdn_"), "a key in the capture");
    }
    assert!(files >= 3, "rotated into {files} files");
    assert!(capture.join("capture.jsonl.1").exists());

    // The same policy: nothing flips (the deny needed acme's s1 taint, replayed in order; beta's
    // s1 is another session).
    let policy = root.join("pol/support-agent.yaml");
    let same = warden(&[
        "replay",
        "--capture",
        capture.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(
        same.status.success(),
        "{}{}",
        String::from_utf8_lossy(&same.stdout),
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(
        String::from_utf8_lossy(&same.stdout)
            .starts_with("44 decisions replayed against `support-agent`: 0 flipped")
    );

    // A new policy without the exfiltration rule, and with e-mail to anyone denied for review.
    let next = root.join("next.yaml");
    std::fs::write(
        &next,
        SUPPORT_AGENT
            .replace("  - { id: no-exfil, effect: deny, classes: [external_write], if: \"taint:pii\", reason: \"external write after PII access\" }\n", "")
            .replace("  - { id: writes, effect: allow, classes: [external_write] }\n", "  - { id: writes, effect: allow, classes: [external_write], if: \"taint:pii\" }\n"),
    )
    .unwrap();
    let flips = warden(&[
        "replay",
        "--capture",
        capture.to_str().unwrap(),
        "--policy",
        next.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        flips.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&flips.stderr)
    );
    let report: Value = serde_json::from_slice(&flips.stdout).unwrap();
    assert_eq!(report["replayed"], 44);
    assert_eq!(report["flipped"], 3, "{report}");
    let kinds: Vec<(String, String, u64)> = report["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["from"].as_str().unwrap().to_owned(),
                f["to"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("allow".into(), "deny".into(), 2)),
        "{report}"
    );
    assert!(
        kinds.contains(&("deny".into(), "allow".into(), 1)),
        "{report}"
    );
    assert_eq!(report["examples"][0]["rule_before"], "no-exfil", "{report}");
    assert!(report["decisions_per_second"].as_f64().unwrap() > 0.0);
    let allowed = warden(&[
        "replay",
        "--capture",
        capture.to_str().unwrap(),
        "--policy",
        next.to_str().unwrap(),
        "--allow-flips",
    ]);
    assert!(allowed.status.success());
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("3 flipped"));

    // Bad input: exit 2, naming the problem.
    let missing = warden(&[
        "replay",
        "--capture",
        "/nonexistent/capture.jsonl",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    let broken = root.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"tenant\": \"a\", \"request\": {\"tool\": 5}, \"decision\": \"allow\"}\n",
    )
    .unwrap();
    let out = warden(&[
        "replay",
        "--capture",
        broken.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jsonl:1"), "{stderr}");
}
