//! CLI tests for `warden keys gen-signing|gen-audit|jwks`, `warden token verify` and
//! `warden audit verify|recover`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::json;
use warden_audit::{AuditConfig, AuditLog, AuditRecord};
use warden_proof::{Ed25519Key, Grant, SecretString, SoftwareKeyProvider, TokenIssuer};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn gen_signing_jwks_and_token_verify() {
    let d = tempfile::tempdir().unwrap();
    let key_path = d.path().join("signing.pem");
    let o = warden(&["keys", "gen-signing", "--out", s(&key_path)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let kid = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Refuses to overwrite without --force.
    let o = warden(&["keys", "gen-signing", "--out", s(&key_path)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--force"));

    let o = warden(&["keys", "jwks", s(&key_path)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let jwks_path = d.path().join("jwks.json");
    std::fs::write(&jwks_path, &o.stdout).unwrap();
    let jwks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    // The JWKS never carries the private part.
    assert!(jwks["keys"][0].get("d").is_none());

    // Mint with the library from the same PEM file.
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let key = Ed25519Key::from_pkcs8_pem(&SecretString::from(pem)).unwrap();
    let issuer = TokenIssuer::new(Arc::new(SoftwareKeyProvider::new(key)), "warden");
    let args = json!({"to": "alice@corp.test", "body": "hello"});
    let now = 1_800_000_000u64;
    let token = issuer
        .mint(
            &Grant {
                principal: Some("agent"),
                session: Some("s1"),
                tool: "send_email",
                args: &args,
                policy_digest: "sha256:00",
            },
            now,
        )
        .unwrap();
    let args_path = d.path().join("args.json");
    std::fs::write(&args_path, serde_json::to_vec(&args).unwrap()).unwrap();
    let now_s = now.to_string();
    let base = [
        "token",
        "verify",
        "--jwks",
        s(&jwks_path),
        "--args",
        s(&args_path),
        "--now",
        &now_s,
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.push(&token);
        warden(&a)
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("valid"));
    assert!(text(&o).contains("\"tool\": \"send_email\""));
    let o = run(&["--tool", "send_email", "--issuer", "warden"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = run(&["--tool", "http_post"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("invalid: token is for tool `send_email`"),
        "{}",
        text(&o)
    );

    let o = run(&["--issuer", "someone-else"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Other arguments.
    let other_args = d.path().join("other.json");
    std::fs::write(&other_args, br#"{"to":"mallory@evil.test","body":"hello"}"#).unwrap();
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&jwks_path),
        "--args",
        s(&other_args),
        "--now",
        &now_s,
        &token,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("arguments do not match"), "{}", text(&o));

    // Expired.
    let later = (now + 3600).to_string();
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&jwks_path),
        "--args",
        s(&args_path),
        "--now",
        &later,
        &token,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("expired"), "{}", text(&o));

    // Wrong signature: a JWKS of another key with the same kid.
    let other_key = d.path().join("other.pem");
    warden(&["keys", "gen-signing", "--out", s(&other_key)]);
    let o = warden(&["keys", "jwks", s(&other_key)]);
    let mut forged: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    forged["keys"][0]["kid"] = json!(kid);
    let forged_path = d.path().join("forged.json");
    std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&forged_path),
        "--args",
        s(&args_path),
        "--now",
        &now_s,
        &token,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("bad signature"), "{}", text(&o));

    // Garbage token; unreadable inputs.
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&jwks_path),
        "--args",
        s(&args_path),
        "x.y",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let missing = d.path().join("missing.json");
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&missing),
        "--args",
        s(&args_path),
        &token,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = warden(&[
        "token",
        "verify",
        "--jwks",
        s(&args_path),
        "--args",
        s(&args_path),
        &token,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn audit_verify_and_recover() {
    let d = tempfile::tempdir().unwrap();
    let key_path = d.path().join("audit.key");
    let o = warden(&["keys", "gen-audit", "--out", s(&key_path)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let key = warden_proof::MacKey::from_hex(&SecretString::from(
        std::fs::read_to_string(&key_path).unwrap(),
    ))
    .unwrap();
    let log_dir = d.path().join("log");
    let mut cfg = AuditConfig::new(&log_dir);
    cfg.max_file_bytes = 2000;
    let log = AuditLog::open(cfg, Some(Arc::new(SoftwareKeyProvider::mac_only(key)))).unwrap();
    for i in 0..25 {
        log.append(AuditRecord {
            time_ms: i,
            kind: "tool_call".into(),
            decision: "allow".into(),
            policy: "sha256:00".into(),
            ..AuditRecord::default()
        })
        .unwrap();
    }
    log.close().unwrap();

    let o = warden(&["audit", "verify", s(&log_dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verified 25 entries"), "{}", text(&o));
    let o = warden(&["audit", "verify", "--key", s(&key_path), s(&log_dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("hashes and MACs"), "{}", text(&o));

    // Explicit files, in order.
    let mut files: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    let mut a = vec!["audit", "verify"];
    let names: Vec<String> = files.iter().map(|f| s(f).to_owned()).collect();
    a.extend(names.iter().map(String::as_str));
    let o = warden(&a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Delete the middle file: exit 1 with the first broken sequence number.
    let mut a = vec!["audit", "verify", names[0].as_str()];
    a.extend(names[2..].iter().map(String::as_str));
    let o = warden(&a);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("first broken sequence number:"),
        "{}",
        text(&o)
    );

    // Torn last line: broken, then `audit recover` makes it verify. A crash tears only a line
    // written after the last checkpoint; this log was closed cleanly (checkpointed at 25), so its
    // checkpoint goes first to stage one.
    std::fs::remove_file(log_dir.join(warden_audit::CHECKPOINT_FILE)).unwrap();
    let last = files.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..bytes.len() - 10]).unwrap();
    let o = warden(&["audit", "verify", s(&log_dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("first broken sequence number: 25"),
        "{}",
        text(&o)
    );
    let o = warden(&["audit", "recover", s(last)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = warden(&["audit", "verify", "--key", s(&key_path), s(&log_dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verified 24 entries"), "{}", text(&o));

    // A wrong key: exit 1 at sequence 1.
    let wrong = d.path().join("wrong.key");
    warden(&["keys", "gen-audit", "--out", s(&wrong)]);
    let o = warden(&["audit", "verify", "--key", s(&wrong), s(&log_dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("first broken sequence number: 1"),
        "{}",
        text(&o)
    );

    // Unreadable input: exit 2.
    let o = warden(&["audit", "verify", s(&d.path().join("nope.jsonl"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = warden(&[
        "audit",
        "verify",
        "--key",
        s(&d.path().join("nokey")),
        s(&log_dir),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
