//! Logs whose fields hold adversarial text (quotes, escapes, control characters, JSON that looks
//! like `hash`/`mac` members, non-ASCII) verify when intact and break when altered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use warden_audit::*;
use warden_proof::{KeyProvider, MacKey, SoftwareKeyProvider, canonicalize, sha256_prefixed};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"x","hash":"sha256:00"#.to_owned()),
        Just(r#","mac":"00","#.to_owned()),
        Just("\u{0}\u{1f}\u{7f}\u{80}\u{2028}😂\\\"/".to_owned()),
        any::<String>(),
        "[a-z\",:{}\\\\]{0,24}",
    ]
}

fn record() -> impl Strategy<Value = AuditRecord> {
    (
        any::<u64>().prop_map(|t| t % 4_102_444_800_000),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        text(),
        proptest::option::of(text()),
        proptest::collection::vec(text(), 0..3),
        0u64..(1 << 53),
    )
        .prop_map(
            |(time_ms, tenant, principal, session, tool, rule, findings, latency_us)| AuditRecord {
                time_ms,
                tenant,
                principal,
                session,
                kind: "tool_call".into(),
                tool: Some(tool),
                args_hash: None,
                decision: "deny".into(),
                rule,
                findings,
                policy: "sha256:00".into(),
                latency_us,
                model: None,
                audited: Vec::new(),
                input_tokens: None,
                output_tokens: None,
                cost_micro_usd: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn adversarial_fields_verify_and_hash_the_canonical_form(
        records in proptest::collection::vec(record(), 1..6),
        with_mac in any::<bool>(),
    ) {
        let d = tempfile::tempdir().unwrap();
        let key: Arc<dyn KeyProvider> =
            Arc::new(SoftwareKeyProvider::mac_only(MacKey::from_bytes(vec![5; 32]).unwrap()));
        let log = AuditLog::open(AuditConfig::new(d.path()), with_mac.then(|| key.clone())).unwrap();
        for r in &records {
            log.append(r.clone()).unwrap();
        }
        log.close().unwrap();
        let r = verify(&[d.path().to_path_buf()], with_mac.then_some(key.as_ref())).unwrap();
        prop_assert!(r.is_intact(), "{:?}", r);
        prop_assert_eq!(r.entries, records.len() as u64);

        let path = d.path().join("audit-000001.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            // Each line is canonical, and `hash` is over the canonical form without `hash`.
            let v: Value = serde_json::from_str(line).unwrap();
            prop_assert_eq!(String::from_utf8(canonicalize(&v).unwrap()).unwrap(), line);
            let mut m = v.as_object().unwrap().clone();
            let hash = m.remove("hash").unwrap();
            prop_assert_eq!(hash.as_str().unwrap(), sha256_prefixed(&canonicalize(&Value::Object(m)).unwrap()));
        }
        // Altering the tool of the last entry breaks it.
        let last = text.lines().last().unwrap();
        let mut v: serde_json::Map<String, Value> = serde_json::from_str(last).unwrap();
        v.insert("tool".into(), Value::from("altered"));
        let altered = String::from_utf8(canonicalize(&Value::Object(v)).unwrap()).unwrap();
        let new_text = text.replace(last, &altered);
        std::fs::write(&path, new_text).unwrap();
        let r = verify(&[d.path().to_path_buf()], None).unwrap();
        prop_assert_eq!(r.first_broken_seq, Some(records.len() as u64));
    }
}
