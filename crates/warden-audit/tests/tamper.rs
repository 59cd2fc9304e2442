//! Every way of mutating a log is detected by `verify`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use warden_audit::*;
use warden_proof::{KeyProvider, MacKey, SoftwareKeyProvider, canonicalize, sha256_prefixed};

const N: u64 = 60;

fn key() -> Arc<dyn KeyProvider> {
    Arc::new(SoftwareKeyProvider::mac_only(
        MacKey::from_bytes(vec![42; 32]).unwrap(),
    ))
}

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        time_ms: 1_795_501_752_000 + i,
        tenant: Some("acme".into()),
        principal: Some("agent-7".into()),
        session: Some(format!("s-{}", i % 3)),
        kind: "tool_call".into(),
        tool: Some("send_email".into()),
        args_hash: Some(format!("sha256:{:064x}", i)),
        decision: if i.is_multiple_of(4) { "deny" } else { "allow" }.into(),
        rule: (i.is_multiple_of(4)).then(|| "no-exfil".into()),
        findings: if i.is_multiple_of(5) {
            vec!["email".into()]
        } else {
            vec![]
        },
        policy: "sha256:feed".into(),
        latency_us: 7,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    }
}

/// An LLM answer's record: model, audit rules, tokens and cost.
fn answer(i: u64) -> AuditRecord {
    AuditRecord {
        kind: "completion".into(),
        tool: None,
        args_hash: None,
        model: Some("gpt-4o-mini".into()),
        audited: vec!["watch-llm".into(), "watch-costs".into()],
        input_tokens: Some(1200 + i),
        output_tokens: Some(300),
        cost_micro_usd: Some(360 + i),
        ..record(i)
    }
}

/// A MACed log of N entries over several files.
fn make_log(dir: &Path) -> Vec<PathBuf> {
    let mut cfg = AuditConfig::new(dir);
    cfg.max_file_bytes = 4096;
    let log = AuditLog::open(cfg, Some(key())).unwrap();
    for i in 1..=N {
        log.append(record(i)).unwrap();
    }
    let head = log.flush().unwrap();
    assert_eq!(head.seq, N);
    log.close().unwrap();
    files(dir)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    // The log files only, not the lock file or the checkpoint.
    let mut f: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    f.sort();
    f
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(p, s).unwrap();
}

fn check(dir: &Path, key: Option<&dyn KeyProvider>) -> Report {
    verify(&[dir.to_path_buf()], key).unwrap()
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn intact_log_verifies_across_rotated_files() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    assert!(
        files.len() >= 3,
        "expected rotation, got {} files",
        files.len()
    );
    let k = key();
    let r = check(d.path(), Some(k.as_ref()));
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.entries, N);
    assert_eq!(r.head.seq, N);
    assert!(r.macs_checked);
    // Each new file starts from the last hash of the one before.
    for w in files.windows(2) {
        let last: Value = serde_json::from_str(lines(&w[0]).last().unwrap()).unwrap();
        let first: Value = serde_json::from_str(&lines(&w[1])[0]).unwrap();
        assert_eq!(first["prev"], last["hash"]);
    }
    // Entry shape: canonical, hash over the entry without hash/mac, no arguments.
    let first = &lines(&files[0])[0];
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(first).unwrap();
    for k in [
        "time",
        "seq",
        "tenant",
        "principal",
        "session",
        "kind",
        "tool",
        "args_hash",
        "decision",
        "rule",
        "findings",
        "policy",
        "latency_us",
        "prev",
        "hash",
        "mac",
    ] {
        assert!(v.contains_key(k), "missing {k}");
    }
    assert_eq!(v["prev"], GENESIS_HASH);
    assert_eq!(v["time"], "2026-11-24T06:29:12.001Z");
    let hash = v.remove("hash").unwrap();
    assert_eq!(
        hash.as_str().unwrap(),
        sha256_prefixed(&canonicalize(&Value::Object(v)).unwrap())
    );
}

#[test]
fn every_flipped_byte_of_a_line_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let target = &files[1];
    let original = std::fs::read(target).unwrap();
    let first_line_len = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    let broken_seq = seq_of(&lines(target)[0]);
    for i in 0..first_line_len {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut bytes = original.clone();
            bytes[i] ^= bit;
            std::fs::write(target, &bytes).unwrap();
            let r = check(d.path(), None);
            assert_eq!(
                r.first_broken_seq,
                Some(broken_seq),
                "flip {bit:#x} at byte {i} not detected: {r:?}"
            );
        }
    }
}

#[test]
fn deleted_line_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    for (fi, li) in [(0usize, 0usize), (1, 3), (2, 0)] {
        let mut l = lines(&files[fi]);
        let seq = seq_of(&l[li]);
        let saved = l.clone();
        l.remove(li);
        write_lines(&files[fi], &l);
        let r = check(d.path(), None);
        assert_eq!(r.first_broken_seq, Some(seq), "file {fi} line {li}: {r:?}");
        assert_eq!(r.entries, seq - 1);
        write_lines(&files[fi], &saved);
    }
    assert!(check(d.path(), None).is_intact());
}

#[test]
fn swapped_lines_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let mut l = lines(&files[1]);
    let seq = seq_of(&l[2]);
    l.swap(2, 3);
    write_lines(&files[1], &l);
    assert_eq!(check(d.path(), None).first_broken_seq, Some(seq));
}

#[test]
fn lines_swapped_across_files_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let mut a = lines(&files[0]);
    let mut b = lines(&files[1]);
    let seq = seq_of(a.last().unwrap());
    let last_a = a.pop().unwrap();
    let first_b = b.remove(0);
    a.push(first_b);
    b.insert(0, last_a);
    write_lines(&files[0], &a);
    write_lines(&files[1], &b);
    assert_eq!(check(d.path(), None).first_broken_seq, Some(seq));
}

#[test]
fn truncated_last_line_is_detected_and_recovered() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let last = files.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let last_seq = seq_of(lines(last).last().unwrap());
    // Cut the last line in half.
    let cut = bytes.len() - 40;
    std::fs::write(last, &bytes[..cut]).unwrap();
    let r = check(d.path(), None);
    assert_eq!(r.first_broken_seq, Some(last_seq), "{r:?}");
    // Documented recovery: trim the incomplete line, then the log verifies.
    let removed = recover_truncated_tail(last).unwrap().removed_bytes;
    assert_eq!(
        removed as usize,
        cut - (bytes[..cut].iter().rposition(|&b| b == b'\n').unwrap() + 1)
    );
    let r = check(d.path(), None);
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.entries, N - 1);
    // Recovery is idempotent and never touches complete lines.
    assert!(!recover_truncated_tail(last).unwrap().changed());
}

#[test]
fn truncated_line_in_the_middle_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let mut l = lines(&files[1]);
    let seq = seq_of(&l[2]);
    let half = l[2].len() / 2;
    l[2].truncate(half);
    write_lines(&files[1], &l);
    assert_eq!(check(d.path(), None).first_broken_seq, Some(seq));
}

/// An attacker without the key rewrites entry `seq` and recomputes every later hash: the chain
/// is consistent again, so only the MAC can tell.
fn forge(dir: &Path, files: &[PathBuf], forged_seq: u64, forger_key: Option<&MacKey>) {
    let mut prev: Option<String> = None;
    for f in files {
        let mut out = Vec::new();
        for line in lines(f) {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(&line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            if seq == forged_seq {
                v.insert("decision".into(), Value::from("allow"));
                v.insert("rule".into(), Value::Null);
            }
            if seq >= forged_seq {
                v.insert("prev".into(), Value::from(prev.clone().unwrap()));
                v.remove("hash");
                let old_mac = v.remove("mac");
                let body = canonicalize(&Value::Object(v.clone())).unwrap();
                match forger_key {
                    Some(k) => {
                        v.insert(
                            "mac".into(),
                            Value::from(hex::encode(k.tag(&body).unwrap())),
                        );
                    }
                    None => {
                        if let Some(m) = old_mac {
                            v.insert("mac".into(), m);
                        }
                    }
                }
                let hashed = canonicalize(&Value::Object(v.clone())).unwrap();
                v.insert("hash".into(), Value::from(sha256_prefixed(&hashed)));
            }
            let line = String::from_utf8(canonicalize(&Value::Object(v.clone())).unwrap()).unwrap();
            prev = Some(v["hash"].as_str().unwrap().to_owned());
            out.push(line);
        }
        write_lines(f, &out);
    }
    let _ = dir;
}

#[test]
fn forged_line_without_the_key_is_detected_by_the_mac() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    forge(d.path(), &files, 20, None);
    let k = key();
    // The hash chain alone is consistent again (that is what the MAC is for)...
    assert!(check(d.path(), None).is_intact());
    // ...but the MAC is not.
    let r = check(d.path(), Some(k.as_ref()));
    assert_eq!(r.first_broken_seq, Some(20), "{r:?}");
    assert_eq!(r.entries, 19);
}

#[test]
fn forged_line_with_another_key_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    forge(
        d.path(),
        &files,
        33,
        Some(&MacKey::from_bytes(vec![1; 32]).unwrap()),
    );
    let k = key();
    assert_eq!(check(d.path(), Some(k.as_ref())).first_broken_seq, Some(33));
}

#[test]
fn stripped_macs_are_detected_when_a_key_is_given() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let l: Vec<String> = lines(&files[0])
        .into_iter()
        .map(|line| {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(&line).unwrap();
            v.remove("mac");
            v.remove("hash");
            let hashed = canonicalize(&Value::Object(v.clone())).unwrap();
            v.insert("hash".into(), Value::from(sha256_prefixed(&hashed)));
            String::from_utf8(canonicalize(&Value::Object(v)).unwrap()).unwrap()
        })
        .collect();
    write_lines(&files[0], &l);
    let k = key();
    assert_eq!(check(d.path(), Some(k.as_ref())).first_broken_seq, Some(1));
}

#[test]
fn deleted_middle_file_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let first_missing = seq_of(&lines(&files[1])[0]);
    std::fs::remove_file(&files[1]).unwrap();
    let r = check(d.path(), None);
    assert_eq!(r.first_broken_seq, Some(first_missing), "{r:?}");
    assert_eq!(r.entries, first_missing - 1);
}

#[test]
fn files_out_of_order_or_first_file_missing_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    assert_eq!(verify(&swapped, None).unwrap().first_broken_seq, Some(1));
    assert_eq!(verify(&files[1..], None).unwrap().first_broken_seq, Some(1));
    // With an anchor (retention deleted the first file), the rest verifies.
    let last_of_first = lines(&files[0]).last().unwrap().clone();
    let v: Value = serde_json::from_str(&last_of_first).unwrap();
    let anchor = Anchor {
        seq: v["seq"].as_u64().unwrap(),
        hash: v["hash"].as_str().unwrap().to_owned(),
    };
    let r = verify_from(&files[1..], None, anchor).unwrap();
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.head.seq, N);
}

#[test]
fn dropped_tail_is_visible_against_the_published_head() {
    // Deleting whole lines at the very end leaves a valid shorter chain; the writer's head
    // (`AuditLog::flush`) is the external anchor that exposes it.
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let last = files.last().unwrap();
    let mut l = lines(last);
    l.pop();
    write_lines(last, &l);
    let r = check(d.path(), None);
    assert!(r.is_intact());
    assert_eq!(r.head.seq, N - 1, "head shows the missing tail");
}

#[test]
fn unreadable_input_is_an_error_not_a_break() {
    let d = tempfile::tempdir().unwrap();
    assert!(verify(&[d.path().join("nope.jsonl")], None).is_err());
}

#[test]
fn semantically_equal_rewrites_and_extra_members_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let files = make_log(d.path());
    let original = lines(&files[0]);
    let seq = seq_of(&original[1]);
    let rewrites = [
        original[1].replace(r#""tool":"send_email""#, r#""tool":"send\u005femail""#),
        original[1].replace(r#""kind":"tool_call""#, r#""kind": "tool_call""#),
        original[1].replace(r#""latency_us":7"#, r#""latency_us":7.0"#),
        original[1].replacen('{', r#"{"args":{"to":"x"},"#, 1),
        original[1].replacen('{', r#"{"seq":1,"#, 1),
        original[1].replace(r#""findings":[]"#, r#""findings":[{"hash":"x"}]"#),
    ];
    for rewritten in rewrites {
        assert_ne!(rewritten, original[1]);
        let mut l = original.clone();
        l[1] = rewritten.clone();
        write_lines(&files[0], &l);
        let r = check(d.path(), None);
        assert_eq!(r.first_broken_seq, Some(seq), "{rewritten}: {r:?}");
    }
}

#[test]
fn answers_carry_model_audit_rules_tokens_and_cost_and_each_is_sealed() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig::new(d.path()), Some(key())).unwrap();
    for i in 1..=4 {
        log.append(if i % 2 == 0 { answer(i) } else { record(i) })
            .unwrap();
    }
    log.flush().unwrap();
    log.close().unwrap();
    let files = files(d.path());
    let original = lines(&files[0]);
    let k = key();
    assert!(check(d.path(), Some(k.as_ref())).is_intact());
    let second: Value = serde_json::from_str(&original[1]).unwrap();
    assert_eq!(
        second["audited"],
        serde_json::json!(["watch-llm", "watch-costs"])
    );
    assert_eq!(second["input_tokens"], 1202);
    assert_eq!(second["output_tokens"], 300);
    assert_eq!(second["cost_micro_usd"], 362);
    assert_eq!(second["model"], "gpt-4o-mini");
    // A record without them writes none of the members (older logs verify unchanged).
    let first: Value = serde_json::from_str(&original[0]).unwrap();
    for absent in [
        "audited",
        "input_tokens",
        "output_tokens",
        "cost_micro_usd",
        "model",
    ] {
        assert!(first.get(absent).is_none(), "{absent} in {first}");
    }
    let rewrites = [
        (
            1,
            original[1].replace(r#""cost_micro_usd":362"#, r#""cost_micro_usd":1"#),
        ),
        (
            1,
            original[1].replace(r#""output_tokens":300"#, r#""output_tokens":3"#),
        ),
        (
            1,
            original[1].replace(r#""watch-llm","watch-costs""#, r#""watch-costs""#),
        ),
        // An empty list is never written: a line holding one is not the writer's.
        (0, original[0].replacen('{', r#"{"audited":[],"#, 1)),
    ];
    for (at, rewritten) in rewrites {
        assert_ne!(rewritten, original[at]);
        let mut l = original.clone();
        l[at] = rewritten.clone();
        write_lines(&files[0], &l);
        let r = check(d.path(), None);
        assert_eq!(
            r.first_broken_seq,
            Some(at as u64 + 1),
            "{rewritten}: {r:?}"
        );
    }
}
