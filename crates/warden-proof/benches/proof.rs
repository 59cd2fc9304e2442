//! Token mint / verify and canonicalise + hash of a 1 KB argument object (criterion).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use warden_proof::{
    Ed25519Key, Grant, KeyProvider, SoftwareKeyProvider, TokenIssuer, TokenVerifier, args_hash,
    canonicalize,
};

const NOW: u64 = 1_800_000_000;

/// About 1 KB of arguments: nested objects, strings, numbers (including non-integers), arrays.
fn args_1k() -> Value {
    let v = json!({
        "to": ["alice@corp.test", "bob@corp.test", "carol@corp.test"],
        "cc": [], "subject": "Quarterly numbers — draft for review",
        "body": "Hello team,\n\nplease find the figures below. Revenue grew 12.5% quarter over quarter; \
                 churn fell to 1.9%. Details in the attached sheet.\n\nRegards,\nThe agent",
        "attachments": [
            {"name": "q3.xlsx", "size": 48213, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
            {"name": "notes.md", "size": 1204, "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}
        ],
        "options": {"priority": 3, "track": true, "ratio": 0.30000000000000004, "tags": ["finance", "q3", "internal"],
                    "schedule": {"at": "2026-11-24T09:00:00Z", "tz": "Europe/Berlin", "retry": {"max": 5, "backoff_ms": 250}}},
        "metadata": {"request_id": "c0a8012e-7f3b-4d6e-9a51-3f2b1c9d8e7a", "client": "support-agent/1.4.2", "locale": "de-DE",
                     "footer": "This message and any attachments are confidential and intended solely for the addressee. \
                                If you received it in error, please notify the sender and delete it."}
    });
    let len = serde_json::to_vec(&v).unwrap().len();
    assert!((980..1100).contains(&len), "args are {len} bytes");
    v
}

fn bench(c: &mut Criterion) {
    let args = args_1k();
    let provider = Arc::new(SoftwareKeyProvider::new(Ed25519Key::generate().unwrap()));
    let issuer = TokenIssuer::new(provider.clone(), "warden-bench");
    let grant = Grant {
        principal: Some("agent-7"),
        session: Some("s-1"),
        tool: "send_email",
        args: &args,
        policy_digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    };
    let token = issuer.mint(&grant, NOW).unwrap();
    let verifier = TokenVerifier::new(provider.jwks(NOW));

    let mut g = c.benchmark_group("proof");
    g.throughput(Throughput::Elements(1));
    g.bench_function("canonicalize_1k", |b| {
        b.iter(|| canonicalize(black_box(&args)).unwrap())
    });
    g.bench_function("args_hash_1k", |b| {
        b.iter(|| args_hash(black_box(&args)).unwrap())
    });
    g.bench_function("token_mint_1k_args", |b| {
        b.iter(|| issuer.mint(black_box(&grant), NOW).unwrap())
    });
    g.bench_function("token_verify_1k_args", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token), "send_email", black_box(&args), NOW)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
