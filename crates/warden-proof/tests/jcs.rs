//! Every RFC 8785 reference vector and all 30,000 ECMAScript number serialisations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use warden_proof::{args_hash, canonicalize};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jcs-rfc8785")
}

#[test]
fn reference_vectors_match_output_and_outhex() {
    let mut names: Vec<_> = std::fs::read_dir(data().join("input"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "expected the six reference inputs");
    for input in names {
        let name = input.file_stem().unwrap().to_str().unwrap().to_owned();
        let value: Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
        let got = canonicalize(&value).unwrap();
        let want = std::fs::read(data().join("output").join(format!("{name}.json"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{name}"
        );
        assert_eq!(got, want, "{name} (bytes)");
        let hex_text =
            std::fs::read_to_string(data().join("outhex").join(format!("{name}.txt"))).unwrap();
        let want_hex: String = hex_text
            .split_whitespace()
            .collect::<String>()
            .to_lowercase();
        assert_eq!(hex::encode(&got), want_hex, "{name} (outhex)");
    }
}

#[test]
fn all_es6_number_serialisations() {
    let text = std::fs::read_to_string(data().join("es6-numbers.txt")).unwrap();
    let mut count = 0;
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let (bits, want) = line.split_once(',').unwrap();
        let f = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        assert!(f.is_finite(), "line {}: non-finite input", i + 1);
        // The double itself...
        let got = String::from_utf8(canonicalize(&json!(f)).unwrap()).unwrap();
        if got != want {
            failures.push(format!("line {}: {bits}: got {got}, want {want}", i + 1));
        }
        // ...and the expected text parsed back as JSON must round-trip to itself.
        let parsed: Value = serde_json::from_str(want).unwrap();
        let again = String::from_utf8(canonicalize(&parsed).unwrap()).unwrap();
        if again != want {
            failures.push(format!("line {}: reparse of {want} gave {again}", i + 1));
        }
        count += 1;
    }
    // 22 hand-picked edge cases, then 30,000 pseudo-random doubles.
    assert_eq!(count, 30_022);
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn large_integers_serialise_as_doubles() {
    let v: Value =
        serde_json::from_str("[9007199254740993, 18446744073709551615, -0, 1.0, 1e21]").unwrap();
    assert_eq!(
        String::from_utf8(canonicalize(&v).unwrap()).unwrap(),
        "[9007199254740992,18446744073709552000,0,1,1e+21]"
    );
}

#[test]
fn args_hash_ignores_key_order_whitespace_and_number_spelling() {
    let a: Value =
        serde_json::from_str(r#"{"to": "a@b.test", "n": 1.0, "x": {"b": 2, "a": 1}}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"x":{"a":1,"b":2},"n":1,"to":"a@b.test"}"#).unwrap();
    assert_eq!(args_hash(&a).unwrap(), args_hash(&b).unwrap());
    let h = args_hash(&a).unwrap();
    assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
    let c: Value = serde_json::from_str(r#"{"x":{"a":1,"b":2},"n":1,"to":"a@b.tesT"}"#).unwrap();
    assert_ne!(args_hash(&a).unwrap(), args_hash(&c).unwrap());
    // Known answer: sha256 of `{}`.
    assert_eq!(
        args_hash(&json!({})).unwrap(),
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}
