//! Property tests: redaction removes embedded secrets and is idempotent; no input panics; a 1 MiB
//! adversarial string scans correctly (timing is measured only in the benches).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use warden_content::{
    Action, ContentPolicy, ContentSpec, InjectionAction, KNOWN_DETECTORS, Part, ScanRequest,
};

fn all_policy(action: Action) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        detectors: KNOWN_DETECTORS.iter().map(|s| (*s).to_owned()).collect(),
        input: Some(action),
        injection: Some(InjectionAction::Warn),
        ..ContentSpec::default()
    })
    .unwrap()
}

/// Secrets with one random part each; every one is detected by some built-in.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}@[a-z]{2,8}\\.(com|org|io)",
        "AKIA[A-Z0-9]{16}",
        "ghp_[A-Za-z0-9]{36}",
        "sk-[A-Za-z0-9]{24,40}",
        "AIza[A-Za-z0-9_]{35}",
        "eyJ[A-Za-z0-9]{10}\\.eyJ[A-Za-z0-9]{10}\\.[A-Za-z0-9]{10}",
        Just("4111 1111 1111 1111".to_owned()),
        Just("GB82 WEST 1234 5698 7654 32".to_owned()),
        Just("123-45-6789".to_owned()),
        Just("-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----".to_owned()),
    ]
}

/// Filler that cannot glue onto a secret (it starts and ends with a space or punctuation).
fn filler() -> impl Strategy<Value = String> {
    "[ a-zé😀.,;!?]{0,20}".prop_map(|s| format!(" {s} "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn redaction_removes_secrets_and_is_idempotent(parts in prop::collection::vec((filler(), secret()), 1..5), tail in filler()) {
        let p = all_policy(Action::Redact);
        let mut text = String::new();
        for (f, s) in &parts {
            text.push_str(f);
            text.push_str(s);
        }
        text.push_str(&tail);
        let args = json!({"t": text, "n": [1, {"s": text}]});
        let out = scan_args(&p, &args);
        let red = out.redacted.clone().expect("secrets were embedded");
        let dump = serde_json::to_string(&red).unwrap();
        for (_, s) in &parts {
            prop_assert!(!dump.contains(s.as_str()), "{s:?} left in {dump}");
        }
        prop_assert_eq!(&red["n"][0], &json!(1));
        // Idempotent: redacting the redacted value changes nothing further.
        let again = scan_args(&p, &red);
        prop_assert!(again.redacted.is_none() || again.redacted.as_ref() == Some(&red), "{:?}", again.redacted);
    }

    #[test]
    fn scanning_never_panics(s in "\\PC{0,300}", bytes in prop::collection::vec(any::<char>(), 0..200)) {
        let p = all_policy(Action::Redact);
        let t: String = bytes.into_iter().collect();
        for text in [s.as_str(), t.as_str()] {
            let out = scan_prompt(&p, text);
            for f in &out.findings {
                prop_assert!(f.start <= f.end && f.end <= text.chars().count());
            }
            if let Some(Value::String(r)) = &out.redacted {
                prop_assert!(r.contains("[REDACTED:"));
            }
        }
    }

    #[test]
    fn offsets_point_at_the_secret(pre in "[ a-zäö😀]{0,10}", user in "[a-z]{1,8}") {
        let p = policy(&["email"], None);
        let email = format!("{user}@example.com");
        let text = format!("{pre} {email} ö");
        let out = scan_prompt(&p, &text);
        prop_assert_eq!(out.findings.len(), 1);
        let f = &out.findings[0];
        let got: String = text.chars().skip(f.start).take(f.end - f.start).collect();
        prop_assert_eq!(got, email);
    }
}

/// Adversarial inputs of 1 MiB: long digit runs, separators, near-miss anchors, nested brackets.
#[test]
fn one_mib_adversarial_inputs_scan() {
    let p = all_policy(Action::Redact);
    let mib = 1 << 20;
    let cases: Vec<String> = vec![
        "1".repeat(mib),
        "1 ".repeat(mib / 2),
        "1-2.3(4)5/".repeat(mib / 10),
        "@".repeat(mib),
        "a@".repeat(mib / 2),
        "a.".repeat(mib / 2) + "@",
        ":".repeat(mib),
        "1:".repeat(mib / 2),
        "AKIA".repeat(mib / 4),
        "sk-".repeat(mib / 3),
        "eyJ.".repeat(mib / 4),
        "-----BEGIN PRIVATE KEY-----".repeat(mib / 27),
        "-----BEGIN PRIVATE KEY-----\n".to_owned() + &"A".repeat(mib),
        "ignore ".repeat(mib / 7),
        "\u{200B}a".repeat(mib / 4),
        "\u{202E}".repeat(mib / 3),
        "GB82 ".repeat(mib / 5),
        "aws_secret_access_key=".repeat(mib / 22),
        // Views, greedy token runs and digit groups.
        "\u{200B}1".repeat(mib / 4),
        "１ ".repeat(mib / 4),
        "e\u{301}".repeat(mib / 3),
        "%41".repeat(mib / 3),
        "%C3%A9 ".repeat(mib / 7),
        "&#52;".repeat(mib / 5),
        "&amp".repeat(mib / 4),
        "_sk-".repeat(mib / 4),
        "xoxb-111111-".repeat(mib / 12),
        "eyJaa.eyJaa.".to_owned() + &"eyJ".repeat(mib / 3),
        "akia".repeat(mib / 4),
        "4111 ".repeat(mib / 5),
        "1234-5 ".repeat(mib / 7),
        "-----BEGIN PRIVATE KEY-----\n-----END CERTIFICATE-----".repeat(mib / 53),
        // Anchors of the context-read secrets: runs of name characters and values.
        "token".repeat(mib / 5),
        "password=".repeat(mib / 9),
        "api_key=a1".to_owned() + &"b".repeat(mib),
        "glpat-".repeat(mib / 6),
        "pypi-AgE".repeat(mib / 8),
        "postgres://a:".repeat(mib / 13),
        "mysql://".to_owned() + &"a:".repeat(mib / 2),
        "{\"type\": \"service_account\", ".to_owned()
            + &"\"private_key\": \"-----BEGIN ".repeat(mib / 28),
        "AccountKey=".repeat(mib / 11),
        "SharedAccessSignature=".repeat(mib / 22),
        "hooks.slack.com/".repeat(mib / 16),
        "npm_".repeat(mib / 4),
    ];
    for c in &cases {
        let out = scan_prompt(&p, c);
        for f in out.findings.iter().take(1000) {
            assert!(f.start <= f.end);
        }
    }
    // Correctness on a large valid input: one secret at the end of 1 MiB of noise.
    let mut big = "lorem 12 ipsum: 3.4 dolor@ sit-amet ".repeat(mib / 36);
    big.push_str("AKIAIOSFODNN7EXAMPLE");
    let out = p.scan(&ScanRequest {
        input: vec![("/text", Part::Text(&big))],
        ..ScanRequest::default()
    });
    assert_eq!(out.findings.len(), 1);
    assert_eq!(out.findings[0].detector, "aws_access_key");
}
