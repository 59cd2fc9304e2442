//! `eval_truthy` on scenario 09's `too_large` rule against raw regorus doing the same work.
//!
//! Run: `CARGO_TARGET_DIR=target-rego cargo bench -p warden-rego --bench rego`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize as _;
use serde_json::json;
use warden_rego::{RegoLimits, RegoModule, RegoPolicy};

const PAYMENTS: &str = r#"package payments
import rego.v1
too_large if {
  "payment" in input.classes
  input.args.amount > input.context.limit
}
after_fetch if {
  "payment" in input.classes
  "web_fetch" in input.state.history
}
"#;

fn request() -> serde_json::Value {
    json!({
        "session": "s", "kind": "tool_call", "tool": "transfer_funds",
        "args": {"amount": 500, "currency": "EUR", "to": "DE89370400440532013000"},
        "context": {"limit": 100, "tenant": "acme"},
        "classes": ["payment"],
        "state": {"taints": ["pii"], "history": ["db.read_customer", "transfer_funds"]}
    })
}

fn bench(c: &mut Criterion) {
    let input = request();
    let mut group = c.benchmark_group("rego_too_large");

    // Raw regorus, prepared engine, input already a regorus Value (clone is a refcount bump).
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("payments.rego".into(), PAYMENTS.into())
        .unwrap();
    let prebuilt = regorus::Value::deserialize(&input).unwrap();
    engine.set_input(prebuilt.clone());
    assert_eq!(
        engine.eval_rule("data.payments.too_large".into()).unwrap(),
        regorus::Value::from(true)
    );
    group.bench_function("raw_regorus_prebuilt_value", |b| {
        b.iter(|| {
            engine.set_input(black_box(prebuilt.clone()));
            black_box(engine.eval_rule("data.payments.too_large".into()).unwrap())
        })
    });

    // Raw regorus from the same serde_json input (what any caller holding JSON must do).
    group.bench_function("raw_regorus_from_json", |b| {
        b.iter(|| {
            let v = regorus::Value::deserialize(black_box(&input)).unwrap();
            engine.set_input(v);
            black_box(engine.eval_rule("data.payments.too_large".into()).unwrap())
        })
    });

    // Raw regorus with the same time limit configured as warden-rego's default.
    let limits = RegoLimits::default();
    let mut timed = engine.clone();
    timed.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: limits.max_eval_time,
        check_interval: limits.time_check_interval,
    });
    group.bench_function("raw_regorus_from_json_timed", |b| {
        b.iter(|| {
            let v = regorus::Value::deserialize(black_box(&input)).unwrap();
            timed.set_input(v);
            black_box(timed.eval_rule("data.payments.too_large".into()).unwrap())
        })
    });

    let (policy, ids) = RegoPolicy::compile(
        vec![RegoModule::new("payments.rego", PAYMENTS)],
        None,
        &["data.payments.too_large"],
        limits,
    )
    .unwrap();
    let id = ids[0];
    assert!(policy.eval_truthy(id, &input).unwrap());
    group.bench_function("warden_eval_truthy", |b| {
        b.iter(|| black_box(policy.eval_truthy(id, black_box(&input)).unwrap()))
    });
    let prepared = policy.prepare_input(&input).unwrap();
    group.bench_function("warden_eval_truthy_prepared", |b| {
        b.iter(|| {
            black_box(
                policy
                    .eval_truthy_prepared(id, black_box(&prepared))
                    .unwrap(),
            )
        })
    });
    group.finish();

    // Throughput on all cores: one shared policy, every thread on its own cached engine.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut group = c.benchmark_group("rego_too_large_all_cores");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function(format!("warden_eval_truthy_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(threads as u64);
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            black_box(policy.eval_truthy(id, black_box(&input)).unwrap());
                        }
                    });
                }
            });
            // `threads * per_thread` (about `iters`) decisions in this wall time.
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
