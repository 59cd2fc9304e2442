//! In-process cost of a request through the daemon's service ([`App`]: the `/v1/decide` fast path
//! in front of the router, every layer), without a socket: builds it on a one-thread runtime and sends requests with `tower::ServiceExt::oneshot`.
//! Figures are in BENCHMARKS.md ("serve" section). Run from the repository root:
//! `cargo run --release -p warden-server --example inproc [REQUESTS [ROUTE]]` (ROUTE: e.g. `decide`)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use warden_server::{App, AppState, RateLimit, ServeConfig, StateMode};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("REQUESTS must be a number"));
    // An optional second argument keeps the routes whose label contains it (`decide`).
    let only = std::env::args().nth(2);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        "examples/support-agent.yaml",
        policies.join("support-agent.yaml"),
    )
    .expect("run from the repository root");
    let keys = dir.path().join("keys.json");
    let (key, _) = warden_store::keys::create_key(
        &warden_store::FileKeyStore::new(&keys),
        "acme",
        Some("support-agent"),
    )
    .unwrap();
    let config = ServeConfig {
        policies,
        keys_file: keys,
        state: StateMode::Memory,
        decision_log: false,
        rate_limit: RateLimit {
            per_second: 100_000_000,
            burst: 100_000_000,
        },
        ..ServeConfig::default()
    };
    let app = App::new(AppState::new(config, None).unwrap());
    let body = r#"{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}"#;
    let routes = [
        ("GET /health/live", "GET", "/health/live"),
        ("GET /v1/policies", "GET", "/v1/policies"),
        ("POST /v1/decide", "POST", "/v1/decide"),
    ];
    for round in 1..=2 {
        for (label, method, uri) in routes {
            if only.as_deref().is_some_and(|only| !label.contains(only)) {
                continue;
            }
            let started = Instant::now();
            for _ in 0..n {
                let builder = Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("x-api-key", &key);
                let request = if method == "POST" {
                    builder
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                } else {
                    builder.body(Body::empty())
                }
                .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{label}: {}",
                    response.status()
                );
                response.into_body().collect().await.unwrap();
            }
            let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            println!("round {round}  {label:<18} {per:.2} µs per request");
        }
    }
}
