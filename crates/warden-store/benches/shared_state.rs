//! What shared state costs a decision: the pipeline's decision latency with sessions in Redis
//! against the embedded store, next to the round trip to the same Redis (a PING on the same
//! connection pool) as the baseline. Each call is timed alone, so p50 and p99 are per decision.
//!
//! `cargo bench -p warden-store --bench shared_state` (Redis at `WARDEN_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; keys under a prefix of their own, expiring within the hour).
//! Scenario 02's support agent: `deny` is a send in a tainted session (the decision reads the
//! session and changes nothing: one round trip); `allow` is a read in a fresh session (it taints
//! the session and appends to its history). With Redis, a decision on a session this instance
//! saw last (or a new one) is one round trip (the versioned commit, or only its check); one on
//! a session another instance changed meanwhile is two (the commit answers the current state,
//! the decision runs again and commits): `allow, changed elsewhere` measures that.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_core::pipeline::{Caller, NoEffects};
use warden_core::{CompileOptions, CompiledPolicy, Pipeline, PolicySet, Request, SessionStore};
use warden_store::{EmbeddedSessionStore, RedisOptions, RedisState};

const POLICY: &str = r#"
warden: 1
name: support-agent
tools: { "crm.read_*": [sensitive_read], send_email: [external_write], human_approve: [review] }
rules:
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: writes, effect: allow, classes: [external_write] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii" }
  - { id: review, effect: allow, tools: [human_approve], remove_taints: [pii] }
"#;

const CALLS: usize = 20_000;
const ROUNDS: usize = 5;

fn request(session: &str, tool: &str) -> Request {
    Request::from_json(format!(r#"{{"session":"{session}","tool":"{tool}"}}"#).as_bytes()).unwrap()
}

/// p50 and p99 of `samples`, in microseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn report(label: &str, samples: &mut [Duration]) -> f64 {
    let (p50, p99) = percentiles(samples);
    println!("{label:<34} p50 {p50:>8.2} µs   p99 {p99:>8.2} µs");
    p50
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("WARDEN_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let redis = Arc::new(
        runtime
            .block_on(RedisState::connect(
                &url,
                RedisOptions {
                    prefix: format!("warden-bench:{nanos}"),
                    session_ttl: Some(Duration::from_secs(3600)),
                    ..RedisOptions::default()
                },
            ))
            .expect("Redis"),
    );
    // A second instance on the same keys, changing a session between this one's decisions.
    let other = Arc::new(
        runtime
            .block_on(RedisState::connect(
                &url,
                RedisOptions {
                    prefix: format!("warden-bench:{nanos}"),
                    session_ttl: Some(Duration::from_secs(3600)),
                    ..RedisOptions::default()
                },
            ))
            .expect("Redis"),
    );
    let policy =
        Arc::new(CompiledPolicy::compile("p.yaml", POLICY, CompileOptions::default()).unwrap());
    let elsewhere = Pipeline::new(
        PolicySet::single(Arc::clone(&policy)),
        Arc::clone(&other) as Arc<dyn SessionStore>,
        NoEffects,
    );
    let stores: [(&str, Arc<dyn SessionStore>); 2] = [
        ("embedded", Arc::new(EmbeddedSessionStore::memory(None))),
        ("redis", Arc::clone(&redis) as Arc<dyn SessionStore>),
    ];
    let caller = Caller::default();
    let mut medians: Vec<(String, Vec<f64>)> = Vec::new();
    let mut record = |label: String, p50: f64| match medians.iter_mut().find(|(l, _)| *l == label) {
        Some((_, v)) => v.push(p50),
        None => medians.push((label, vec![p50])),
    };
    for round in 0..ROUNDS {
        println!("-- round {}", round + 1);
        let mut samples = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            runtime.block_on(redis.ping()).unwrap();
            samples.push(started.elapsed());
        }
        record(
            "redis PING".to_owned(),
            report("redis PING (round trip)", &mut samples),
        );
        for (name, store) in &stores {
            let pipeline = Pipeline::new(
                PolicySet::single(Arc::clone(&policy)),
                Arc::clone(store),
                NoEffects,
            );
            let tainted = format!("tainted-{round}");
            runtime
                .block_on(pipeline.decide_now(&caller, &request(&tainted, "crm.read_customer")))
                .unwrap();
            let deny = request(&tainted, "send_email");
            let mut samples = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let started = Instant::now();
                let (decision, _) = runtime
                    .block_on(pipeline.decide_now(&caller, &deny))
                    .unwrap();
                samples.push(started.elapsed());
                assert_eq!(decision.verdict, warden_core::Verdict::Deny);
            }
            let label = format!("{name}: deny after taint");
            record(label.clone(), report(&label, &mut samples));
            let fresh: Vec<Request> = (0..CALLS)
                .map(|i| request(&format!("fresh-{round}-{i}"), "crm.read_customer"))
                .collect();
            let mut samples = Vec::with_capacity(CALLS);
            for allow in &fresh {
                let started = Instant::now();
                runtime
                    .block_on(pipeline.decide_now(&caller, allow))
                    .unwrap();
                samples.push(started.elapsed());
            }
            let label = format!("{name}: allow, fresh session");
            record(label.clone(), report(&label, &mut samples));
            if *name == "redis" {
                // Each decision follows a change made through the other instance: the version
                // this one saw is stale, so the commit answers the current state and it decides
                // again (two round trips).
                let shared = request(&format!("shared-{round}"), "crm.read_customer");
                let mut samples = Vec::with_capacity(CALLS / 4);
                for _ in 0..CALLS / 4 {
                    runtime
                        .block_on(elsewhere.decide_now(&caller, &shared))
                        .unwrap();
                    let started = Instant::now();
                    runtime
                        .block_on(pipeline.decide_now(&caller, &shared))
                        .unwrap();
                    samples.push(started.elapsed());
                }
                let label = "redis: allow, changed elsewhere".to_owned();
                record(label.clone(), report(&label, &mut samples));
            }
        }
    }
    println!("-- median of the rounds' p50");
    for (label, mut values) in medians {
        values.sort_by(f64::total_cmp);
        println!("{label:<34} {:>8.2} µs", values[values.len() / 2]);
    }
}
