//! Scan throughput and latency (criterion).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use warden_content::{
    Action, ContentPolicy, ContentSpec, InjectionAction, KNOWN_DETECTORS, Part, ScanRequest,
};

fn policy(detectors: &[&str], injection: Option<InjectionAction>) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
        input: Some(Action::Redact),
        injection,
        ..ContentSpec::default()
    })
    .unwrap()
}

fn text_req(t: &str, injection: bool) -> ScanRequest<'_> {
    ScanRequest {
        input: vec![("/text", Part::Text(t))],
        injection: if injection {
            vec![("/text", Part::Text(t))]
        } else {
            vec![]
        },
        redact_target: Some("/text"),
        ..ScanRequest::default()
    }
}

/// Deterministic mixed text: prose with numbers, dates, times, versions, URLs, ids, and about one
/// detector hit per 1.5 KB.
fn mixed(len: usize) -> String {
    let prose = [
        "The quarterly review on 2024-03-15 at 10:30 covered 42 open tickets and 7 incidents. ",
        "Version 3.2.1 of the client fixed the retry bug (see issue #8812) for 1,250 users. ",
        "Please check https://docs.example.com/guide/setup?step=4 before the next deploy. ",
        "Order ORD-2024-55123 shipped on Friday; the invoice total was $1,299.00 incl. VAT. ",
        "Der Bericht für München enthält Zahlen zu Umsatz und Kosten für das Jahr 2023. ",
        "Meeting notes: Alice will follow up with the vendor; Bob owns the migration plan. ",
        "Build 20240315.7 passed 1532 tests in 4m12s on runner linux-x64-02 and arm64-01. ",
        "UUID 123e4567-e89b-12d3-a456-426614174000 maps to tenant acme in region eu-west-1. ",
        "The ratio was 3:1 and latency p99 dropped from 120 ms to 85 ms after the change. ",
        "Note: the config key retry_backoff_ms defaults to 250 and max_retries to 5 here. ",
    ];
    let hits = [
        "Contact jane.doe@example.com for access. ",
        "Call +1 415 555 2671 after 5 pm. ",
        "Card 4111 1111 1111 1111 was declined. ",
        "SSN 123-45-6789 on file. ",
        "IBAN GB82 WEST 1234 5698 7654 32 for the refund. ",
        "Server 10.20.30.40 and fe80::1ff:fe23:4567:890a answered. ",
        "Key AKIAIOSFODNN7EXAMPLE leaked. ",
        "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 rotated. ",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl seen. ",
    ];
    let mut s = String::with_capacity(len + 200);
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(prose[i % prose.len()]);
        if i % 17 == 16 {
            s.push_str(hits[(i / 17) % hits.len()]);
        }
        i += 1;
    }
    let mut cut = len.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn benches(c: &mut Criterion) {
    let all: Vec<&str> = KNOWN_DETECTORS.to_vec();
    let email_phone = policy(&["email", "phone"], None);
    let all_det = policy(&all, None);
    let all_inj = policy(&all, Some(InjectionAction::Deny));

    let short = "Hi team, please reach Maria at maria.garcia@example.com or on +1 415 555 2671 about the Q3 budget review before Friday noon.";
    assert!((120..=140).contains(&short.len()), "{}", short.len());
    let mut g = c.benchmark_group("short_130");
    g.bench_function("email+phone", |b| {
        b.iter(|| email_phone.scan(black_box(&text_req(short, false))))
    });
    g.bench_function("all_detectors", |b| {
        b.iter(|| all_det.scan(black_box(&text_req(short, false))))
    });
    g.bench_function("all_detectors+injection", |b| {
        b.iter(|| all_inj.scan(black_box(&text_req(short, true))))
    });
    g.finish();

    let two_kb = mixed(2048);
    let mut g = c.benchmark_group("text_2kb");
    g.throughput(Throughput::Bytes(two_kb.len() as u64));
    g.bench_function("all_detectors", |b| {
        b.iter(|| all_det.scan(black_box(&text_req(&two_kb, false))))
    });
    g.bench_function("all_detectors+injection", |b| {
        b.iter(|| all_inj.scan(black_box(&text_req(&two_kb, true))))
    });
    g.finish();

    let mib = mixed(1 << 20);
    let mut g = c.benchmark_group("mixed_1mib");
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.sample_size(20);
    g.bench_function("all_detectors", |b| {
        b.iter(|| all_det.scan(black_box(&text_req(&mib, false))))
    });
    g.bench_function("all_detectors+injection", |b| {
        b.iter(|| all_inj.scan(black_box(&text_req(&mib, true))))
    });
    g.finish();

    // Cost content inspection adds to a decision whose arguments hold no finding.
    let args = json!({"to": "team-updates", "subject": "Weekly sync", "body": "Agenda: roadmap, hiring, Q3 budget. Notes in the usual doc.", "priority": 2, "tags": ["internal", "weekly"]});
    let req = ScanRequest {
        input: vec![("/args", Part::Value(&args))],
        redact_target: Some("/args"),
        ..ScanRequest::default()
    };
    let mut g = c.benchmark_group("clean_args");
    g.bench_function("all_detectors", |b| {
        b.iter(|| all_det.scan(black_box(&req)))
    });
    g.finish();

    let spec = ContentSpec {
        detectors: all.iter().map(|s| (*s).to_owned()).collect(),
        injection: Some(InjectionAction::Deny),
        ..ContentSpec::default()
    };
    c.bench_function("compile_all_detectors", |b| {
        b.iter(|| ContentPolicy::compile(black_box(&spec)).unwrap())
    });
}

criterion_group!(scan, benches);
criterion_main!(scan);
