//! Audit append throughput (fsync batch / always / never) and verification throughput.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use warden_audit::{AuditConfig, AuditLog, AuditRecord, FsyncPolicy, verify};
use warden_proof::{KeyProvider, MacKey, SoftwareKeyProvider};

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        time_ms: 1_795_501_752_000 + i,
        tenant: Some("acme".into()),
        principal: Some("agent-7".into()),
        session: Some(format!("s-{}", i % 64)),
        kind: "tool_call".into(),
        tool: Some("send_email".into()),
        args_hash: Some(
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        decision: "allow".into(),
        rule: None,
        findings: vec!["email".into()],
        policy: "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752".into(),
        latency_us: 12,
        model: None,
        audited: Vec::new(),
        input_tokens: None,
        output_tokens: None,
        cost_micro_usd: None,
    }
}

fn mac() -> Arc<dyn KeyProvider> {
    Arc::new(SoftwareKeyProvider::mac_only(
        MacKey::from_bytes(vec![9; 32]).unwrap(),
    ))
}

/// Appends `n` entries and waits until all are durable per the policy; returns the elapsed time.
fn append_n(mode: FsyncPolicy, n: u64, with_mac: bool) -> Duration {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(d.path());
    cfg.fsync = mode;
    let log = AuditLog::open(cfg, with_mac.then(mac)).unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        log.append(record(i)).unwrap();
    }
    log.flush().unwrap();
    let e = t0.elapsed();
    log.close().unwrap();
    e
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_append");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let n = 10_000u64;
    g.throughput(Throughput::Elements(n));
    for (name, mode, with_mac) in [
        ("batch", FsyncPolicy::Batch, false),
        ("batch_mac", FsyncPolicy::Batch, true),
        ("never", FsyncPolicy::Never, false),
    ] {
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| append_n(mode, n, with_mac)).sum())
        });
    }
    // `always` with one writer waiting for each ack: the fsync latency per entry.
    g.throughput(Throughput::Elements(100));
    g.bench_function("always_sequential_acked/100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = tempfile::tempdir().unwrap();
                let mut cfg = AuditConfig::new(d.path());
                cfg.fsync = FsyncPolicy::Always;
                let log = AuditLog::open(cfg, None).unwrap();
                let t0 = Instant::now();
                for i in 0..100 {
                    log.append_wait(record(i)).unwrap();
                }
                total += t0.elapsed();
                log.close().unwrap();
            }
            total
        })
    });
    g.finish();
}

fn bench_verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for (n, with_mac) in [
        (100u64, false),
        (100, true),
        (10_000, false),
        (10_000, true),
    ] {
        let d = tempfile::tempdir().unwrap();
        let key = mac();
        let mut cfg = AuditConfig::new(d.path());
        cfg.fsync = FsyncPolicy::Never;
        let log = AuditLog::open(cfg, with_mac.then(|| key.clone())).unwrap();
        for i in 0..n {
            log.append(record(i)).unwrap();
        }
        log.close().unwrap();
        let paths = vec![d.path().to_path_buf()];
        g.throughput(Throughput::Elements(n));
        let name = if with_mac { "hash_and_mac" } else { "hash" };
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                let r = verify(&paths, with_mac.then_some(key.as_ref())).unwrap();
                assert_eq!(r.entries, n);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_append, bench_verify);
criterion_main!(benches);
