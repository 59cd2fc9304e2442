//! Differential check of the injection fast path: [`Injection::scan`] (set pass, bound, only the
//! signals that occur) must report exactly what [`Injection::scan_reference`] (every signal over
//! the whole text) reports, on every development text and on generated and perturbed text, so an
//! optimisation cannot silently change findings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::{Injection, Normalized, Scored};

const ATTACKS: &str = include_str!("../tests/data/injection/attacks.txt");
const BENIGN: &str = include_str!("../tests/data/injection/benign.txt");

/// Ordinary prose with the support words (send ... to an address, "you must", "assistant").
const FILLER: [&str; 6] = [
    "The quarterly review covered 42 open tickets and 7 incidents. ",
    "Please check https://docs.example.com/guide/setup?step=4 before the next deploy. ",
    "Send the signed contract to legal@example.com and run the test suite again. ",
    "You must update the README before the release; the assistant manager will review it. ",
    "Ignore the previous value if the cache was reset, then recompute the checksum. ",
    "Der Bericht für München enthält Zahlen zu Umsatz und Kosten. ",
];

/// Decode the data files' `\n`, `\t`, `\\` and `\u{XXXX}` escapes.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
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
                let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
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

fn texts() -> Vec<String> {
    ATTACKS
        .lines()
        .chain(BENIGN.lines())
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(unescape)
        .collect()
}

/// What a caller can observe: the hits, and the score when there are hits.
fn observable(s: Scored) -> (Vec<(usize, usize, usize)>, Option<u64>) {
    let score = (!s.hits.is_empty()).then(|| (s.score * 1000.0).round() as u64);
    (s.hits, score)
}

fn check(inj: &Injection, buf: &mut Normalized, t: &str) {
    for threshold in [0.2, 0.5, 0.65, 0.9] {
        let fast = observable(inj.scan(t, buf, threshold));
        let reference = observable(inj.scan_reference(t, buf, threshold));
        assert_eq!(fast, reference, "threshold {threshold}: {t:?}");
    }
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: case, spacing, zero-width or leet characters, truncation.
fn perturb(rng: &mut Rng, t: &str) -> String {
    let chars: Vec<char> = t.chars().collect();
    let at = rng.below(chars.len() + 1);
    let (a, b) = chars.split_at(at);
    let (a, b): (String, String) = (a.iter().collect(), b.iter().collect());
    match rng.below(7) {
        0 => t.to_uppercase(),
        1 => format!("{a}\u{200B}\u{200C}{b}"),
        2 => t.replace(' ', "  \n "),
        3 => t.replace('e', "3").replace('o', "0"),
        4 => a,
        5 => format!("{a} i g n o r e {b}"),
        _ => t.replace(' ', "\u{200B} "),
    }
}

#[test]
fn fast_path_matches_the_reference_on_the_development_texts() {
    let inj = Injection::new().unwrap();
    let mut buf = Normalized::default();
    let all = texts();
    assert!(all.len() > 500);
    for t in &all {
        check(&inj, &mut buf, t);
    }
}

#[test]
fn fast_path_matches_the_reference_on_generated_text() {
    let inj = Injection::new().unwrap();
    let mut buf = Normalized::default();
    let all = texts();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..800 {
        // Two to four texts, filler between them, sometimes perturbed: windows that hold more
        // than one text and texts far apart (beyond the window).
        let mut t = String::new();
        for _ in 0..2 + rng.below(3) {
            let piece = &all[rng.below(all.len())];
            let piece = if rng.below(2) == 0 {
                perturb(&mut rng, piece)
            } else {
                piece.clone()
            };
            t.push_str(&piece);
            t.push(' ');
            for _ in 0..rng.below(6) {
                t.push_str(FILLER[rng.below(FILLER.len())]);
            }
        }
        check(&inj, &mut buf, &t);
    }
}

/// Where the time of a scan goes (release only, on demand): `cargo test --release -p
/// warden-content --lib -- --ignored --nocapture time_split`. Prints the best of several runs
/// per component, which is robust to other load on the machine.
#[test]
#[ignore = "timing, run on demand in release"]
fn time_split() {
    use std::time::Instant;
    let inj = Injection::new().unwrap();
    let mut buf = Normalized::default();
    let mut t = String::new();
    let mut i = 0;
    while t.len() < 1 << 20 {
        t.push_str(FILLER[i % FILLER.len()]);
        i += 1;
    }
    let best = |f: &mut dyn FnMut()| {
        (0..15)
            .map(|_| {
                let a = Instant::now();
                f();
                a.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let scan = best(&mut || {
        let _ = inj.scan(&t, &mut buf, 0.5);
    });
    let fill = best(&mut || buf.fill(&t, false));
    let fill_map = best(&mut || buf.fill(&t, true));
    buf.fill(&t, false);
    let any = best(&mut || {
        let _ = inj.any.is_match(&buf.text);
    });
    let set = best(&mut || {
        let _ = inj.set.matches(&buf.text);
    });
    let mut raw = Vec::new();
    let mut b2 = Normalized::default();
    let extra = best(&mut || inj.extra_hits(&t, &mut b2, &mut raw));
    let b64 = best(&mut || {
        let _ = super::b64_runs(t.as_bytes());
    });
    // 2 KB, as in the bench: best batch of 200 scans.
    let small: String = t.chars().take(2048).collect();
    let mut b3 = Normalized::default();
    let two_kb = best(&mut || {
        for _ in 0..200 {
            let _ = inj.scan(&small, &mut b3, 0.5);
        }
    }) * 1e3
        / 200.0;
    println!("2 KB: scan {two_kb:.2} us");
    println!(
        "1 MiB, ms: scan {scan:.2}, fill {fill:.2}, fill+map {fill_map:.2}, any {any:.2}, set {set:.2}, extra {extra:.2} (base64 runs {b64:.2})"
    );
}

/// The sampled run finder against the obvious split, on runs of every length around the
/// minimum, at every alignment.
#[test]
fn base64_runs_match_a_plain_split() {
    let mut rng = Rng(7);
    for _ in 0..3000 {
        let mut b = Vec::new();
        for _ in 0..rng.below(8) {
            for _ in 0..rng.below(3) {
                b.push(b" .-=\n"[rng.below(5)]);
            }
            for _ in 0..rng.below(60) {
                b.push(b"aZ09+/"[rng.below(6)]);
            }
        }
        let mut want = Vec::new();
        let mut start = 0usize;
        for run in b.split(|&c| !super::is_b64(c)) {
            if run.len() >= super::B64_MIN {
                want.push((start, start + run.len()));
            }
            start += run.len() + 1;
        }
        assert_eq!(
            super::b64_runs(&b),
            want,
            "{:?}",
            String::from_utf8_lossy(&b)
        );
    }
}
