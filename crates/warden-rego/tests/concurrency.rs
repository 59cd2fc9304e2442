//! 8 threads evaluate while the policy is replaced 100 times: every answer comes from the
//! snapshot the thread loaded (never a mix, never an older engine), and never an error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::json;
use warden_rego::{QueryId, RegoLimits, RegoModule, RegoPolicy};

struct Snapshot {
    generation: u64,
    policy: RegoPolicy,
    answer: QueryId,
    deny: QueryId,
}

fn snapshot(generation: u64) -> Snapshot {
    // Both rules change with the generation, so an answer from an old engine is detectable.
    let source = format!(
        "package v\nimport rego.v1\nanswer := {generation}\ndeny if {{\n  input.n % 2 == {}\n}}\n",
        generation % 2
    );
    let (policy, ids) = RegoPolicy::compile(
        vec![RegoModule::new("v.rego", source)],
        None,
        &["data.v.answer", "data.v.deny"],
        RegoLimits::default(),
    )
    .unwrap();
    Snapshot {
        generation,
        policy,
        answer: ids[0],
        deny: ids[1],
    }
}

#[test]
fn eight_threads_and_a_hundred_reloads() {
    const THREADS: usize = 8;
    const RELOADS: u64 = 100;
    let current = Arc::new(ArcSwap::from_pointee(snapshot(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let evaluations = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (current, stop, evaluations) = (current.clone(), stop.clone(), evaluations.clone());
            std::thread::spawn(move || {
                let mut last_generation = 0;
                let mut seen = std::collections::BTreeSet::new();
                let mut n = t as u64;
                while !stop.load(Ordering::Acquire) {
                    let snap = current.load_full();
                    assert!(snap.generation >= last_generation, "went back in time");
                    last_generation = snap.generation;
                    seen.insert(snap.generation);
                    n += 1;
                    let input = json!({"n": n, "tool": "x", "classes": [], "state": {"taints": [], "history": []}});
                    let answer = snap.policy.eval_value("data.v.answer", &input).expect("no error");
                    assert_eq!(answer, Some(json!(snap.generation)), "answer from another snapshot");
                    let by_id = snap.policy.eval_truthy(snap.answer, &input).expect("no error");
                    assert!(by_id || snap.generation == 0);
                    let deny = snap.policy.eval_truthy(snap.deny, &input).expect("no error");
                    assert_eq!(deny, n % 2 == snap.generation % 2, "deny from another snapshot");
                    evaluations.fetch_add(3, Ordering::Relaxed);
                }
                // After the last reload, this thread's next evaluation uses the last policy.
                let snap = current.load_full();
                assert_eq!(snap.generation, RELOADS);
                let answer = snap.policy.eval_value("data.v.answer", &json!({})).unwrap();
                assert_eq!(answer, Some(json!(RELOADS)));
                seen.len()
            })
        })
        .collect();

    for generation in 1..=RELOADS {
        let next = snapshot(generation);
        std::thread::sleep(Duration::from_millis(2));
        current.store(Arc::new(next));
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let seen: Vec<usize> = workers
        .into_iter()
        .map(|w| w.join().expect("worker ok"))
        .collect();
    let total = evaluations.load(Ordering::Relaxed);
    assert!(total > 1_000, "too few evaluations: {total}");
    // Every thread lived through many reloads.
    assert!(
        seen.iter().all(|&s| s > 10),
        "generations seen per thread: {seen:?}"
    );
}
