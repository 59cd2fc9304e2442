#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]
//! `tools/call` through `warden mcp proxy` versus straight to the same server, in one run:
//! latency (p50, p99) of sequential calls and throughput of concurrent ones, against the real
//! `@modelcontextprotocol/server-everything` over Streamable HTTP (installed by `.ci/run`).
//!
//! With `stub` as the first argument, the upstream is instead a minimal in-process Rust responder
//! (one SSE event per call, like server-everything's framing) so the proxy hop's own cost is not
//! hidden under the Node server's ~1.8 ms.
//!
//! `cargo bench -p warden-mcp --features http --bench proxy [-- [stub] ROUNDS CALLS SECONDS CONCURRENCY]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warden_core::{CompileOptions, CompiledPolicy, Engine};
use warden_mcp::Enforcer;
use warden_mcp::http::{Identity, ProxyConfig, ProxyState, Uri};

const POLICY: &str = r#"
warden: 1
name: mcp-bench
default: deny
tools:
  echo: [internal]
  get-sum: [web]
  "crm.*": [sensitive_read]
  send_email: [external_write]
rules:
  - { id: internal, effect: allow, classes: [internal] }
  - { id: web, effect: allow, classes: [web], add_taints: [untrusted] }
  - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
  - { id: results, effect: allow, kinds: [tool_result] }
  - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii", reason: "external write after PII access" }
  - { id: no-echo-after-untrusted, effect: deny, tools: [echo], if: "taint:untrusted", reason: "echo after untrusted content" }
"#;

type HttpClient = Client<HttpConnector, Body>;

struct Endpoint {
    client: HttpClient,
    url: Uri,
    session: String,
}

fn post(url: &Uri, session: Option<&str>, body: String) -> axum::http::Request<Body> {
    let mut request = axum::http::Request::post(url.clone())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request.body(Body::from(body)).unwrap()
}

impl Endpoint {
    async fn open(client: HttpClient, url: Uri) -> Self {
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
        let response = client
            .request(post(&url, None, init.to_owned()))
            .await
            .unwrap();
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        response.into_body().collect().await.unwrap();
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let response = client
            .request(post(&url, Some(&session), initialized.to_owned()))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        Self {
            client,
            url,
            session,
        }
    }

    /// One `tools/call` of `echo`; returns the body so the caller can check it.
    async fn call(&self, id: u64) -> bytes::Bytes {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hello {id}"}}}}}}"#
        );
        let response = self
            .client
            .request(post(&self.url, Some(&self.session), body))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn latency(endpoint: &Endpoint, calls: u64, ids: &AtomicU64) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let body = endpoint.call(id).await;
        samples.push(start.elapsed());
        assert!(
            body.windows(10).any(|w| w == b"Echo: hell"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    samples
}

async fn throughput(
    url: &Uri,
    client: &HttpClient,
    seconds: f64,
    concurrency: usize,
    ids: Arc<AtomicU64>,
) -> f64 {
    let mut endpoints = Vec::new();
    for _ in 0..concurrency {
        endpoints.push(Arc::new(Endpoint::open(client.clone(), url.clone()).await));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for endpoint in endpoints {
        let (stop, done, ids) = (stop.clone(), done.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                endpoint.call(ids.fetch_add(1, Ordering::Relaxed)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The stub upstream: answers `initialize` with a session id and every request with one SSE event.
async fn stub(request: axum::http::Request<Body>) -> axum::http::Response<Body> {
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let Some(id) = message.get("id") else {
        return axum::http::Response::builder()
            .status(202)
            .body(Body::empty())
            .unwrap();
    };
    let text = message["params"]["arguments"]["message"]
        .as_str()
        .unwrap_or("");
    let reply = serde_json::json!({"result": {"content": [{"type": "text", "text": format!("Echo: {text}")}]}, "jsonrpc": "2.0", "id": id});
    axum::http::Response::builder()
        .header("content-type", "text/event-stream")
        .header("mcp-session-id", "stub-session")
        .body(Body::from(format!("event: message\ndata: {reply}\n\n")))
        .unwrap()
}

fn main() {
    let use_stub = std::env::args().nth(1).as_deref() == Some("stub");
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(3.0) as usize;
    let calls = args.get(1).copied().unwrap_or(2000.0) as u64;
    let seconds = args.get(2).copied().unwrap_or(4.0);
    let concurrency = args.get(3).copied().unwrap_or(8.0) as usize;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let server =
        root.join(".ci/.npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        server.exists(),
        "{} is missing: run .ci/run's npm install step",
        server.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = (!use_stub).then(|| {
        Command::new("node")
            .arg(&server)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if use_stub {
            use axum::serve::ListenerExt;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap()
                .tap_io(|tcp| tcp.set_nodelay(true).unwrap());
            let app = axum::Router::new().route("/mcp", axum::routing::post(stub));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "server-everything did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let direct_url: Uri = format!("http://127.0.0.1:{port}/mcp").parse().unwrap();
        let policy = CompiledPolicy::compile("bench", POLICY, CompileOptions::default()).unwrap();
        // The daemon's pin store (redb file, multi-writer), as `warden serve` uses it.
        let pin_dir = tempfile::tempdir().unwrap();
        let pins = warden_store::RedbPinStore::open(pin_dir.path().join("mcp-pins.redb")).unwrap();
        let enforcer = Arc::new(Enforcer::new(Arc::new(Engine::new(policy)), Arc::new(pins), "everything"));
        let identity = Identity { principal: Some("agent:bench".to_owned()), session: None };
        let state = ProxyState::new(enforcer.clone(), ProxyConfig::new(direct_url.clone(), identity));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url: Uri = format!("http://{}/mcp", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(warden_mcp::http::serve(listener, state, std::future::pending()));

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        let ids = Arc::new(AtomicU64::new(1));
        let direct = Endpoint::open(client.clone(), direct_url.clone()).await;
        let proxied = Endpoint::open(client.clone(), proxy_url.clone()).await;
        // Warm up both paths.
        latency(&direct, 300, &ids).await;
        latency(&proxied, 300, &ids).await;

        let (mut lat_direct, mut lat_proxy, mut tp_direct, mut tp_proxy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which path goes first so drift on the shared machine hits both.
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for through_proxy in order {
                if through_proxy {
                    lat_proxy.extend(latency(&proxied, calls, &ids).await);
                    tp_proxy.push(throughput(&proxy_url, &client, seconds, concurrency, ids.clone()).await);
                } else {
                    lat_direct.extend(latency(&direct, calls, &ids).await);
                    tp_direct.push(throughput(&direct_url, &client, seconds, concurrency, ids.clone()).await);
                }
            }
        }
        lat_direct.sort();
        lat_proxy.sort();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (d50, d99) = (percentile(&lat_direct, 0.5), percentile(&lat_direct, 0.99));
        let (p50, p99) = (percentile(&lat_proxy, 0.5), percentile(&lat_proxy, 0.99));
        let (td, tp) = (mean(&tp_direct), mean(&tp_proxy));
        let upstream = if use_stub { "in-process Rust stub" } else { "server-everything (Node)" };
        println!("upstream: {upstream}");
        println!("tools/call echo, {rounds} rounds x {calls} sequential calls; throughput {concurrency} sessions x {seconds} s per round");
        println!("direct : p50 {:>8.1} us  p99 {:>8.1} us  throughput {td:>8.0} calls/s", d50.as_secs_f64() * 1e6, d99.as_secs_f64() * 1e6);
        println!("warden : p50 {:>8.1} us  p99 {:>8.1} us  throughput {tp:>8.0} calls/s", p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
        println!(
            "added  : p50 {:>8.1} us  p99 {:>8.1} us  throughput ratio {:.2}",
            (p50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
            (p99.as_secs_f64() - d99.as_secs_f64()) * 1e6,
            tp / td
        );
        let c = enforcer.counters();
        println!("enforcer: {} calls allowed, {} denied", c.calls_allowed.load(Ordering::Relaxed), c.calls_denied.load(Ordering::Relaxed));
    });
    if let Some(node) = &mut node {
        let _ = node.kill();
        let _ = node.wait();
    }
}
