//! A closed-loop load generator for the four ways to ask `warden serve` for a decision, so they
//! are measured by one client in one run (BENCHMARKS.md, "Decision protocols"): HTTP/1.1
//! (`POST /v1/decide`, one request at a time per connection), HTTP/2 (h2c, the same requests
//! multiplexed), gRPC unary (`Decide`) and gRPC streaming (`DecideStream`, each stream keeping
//! `window` requests in flight). It reports decisions per second, latency percentiles and, given
//! the server's pid, the server's CPU time per decision (utime + stime from `/proc`).
//!
//! ```console
//! $ cargo run --release -p warden-server --example decide_load -- \
//!     MODE ADDR KEY SECONDS CONNECTIONS IN_FLIGHT [SERVER_PID]
//! ```
//! MODE: `h1`, `h1-tls` (HTTP/1.1 over TLS, trusting the CA in `DECIDE_LOAD_CA`), `h2`,
//! `grpc` or `grpc-stream`. IN_FLIGHT is the total number of requests in
//! flight (h1: one per connection, so CONNECTIONS is IN_FLIGHT).
//! Not a test: run by `crates/warden-server/bench/protocols.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Channel;
use warden_server::grpc_proto::decision_service_client::DecisionServiceClient;
use warden_server::grpc_proto::{DecideStreamRequest, DecisionRequest};

const BODY: &str = r#"{"session":"bench-1","tool":"crm.read_customer","args":{"id":7}}"#;

fn grpc_request() -> DecisionRequest {
    let mut args = prost_types::Struct::default();
    args.fields.insert(
        "id".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(7.0)),
        },
    );
    DecisionRequest {
        session: Some("bench-1".to_owned()),
        tool: Some("crm.read_customer".to_owned()),
        args: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(args)),
        }),
        ..Default::default()
    }
}

/// Latencies in microseconds, collected by every worker.
type Samples = Vec<u32>;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn h1(addr: String, key: Arc<str>, until: Instant, tls: Option<TlsConnector>) -> Samples {
    let stream = TcpStream::connect(&addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match tls {
        None => h1_on(TokioIo::new(stream), addr, key, until).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = connector.connect(name, stream).await.unwrap();
            h1_on(TokioIo::new(stream), addr, key, until).await
        }
    }
}

/// A TLS client trusting the CA in `path` (the server's name: `localhost`).
fn tls_connector(path: &str) -> TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn h1_on<I>(io: TokioIo<I>, addr: String, key: Arc<str>, until: Instant) -> Samples
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut samples = Vec::new();
    while Instant::now() < until {
        let request = hyper::Request::post(format!("http://{addr}/v1/decide"))
            .header("content-type", "application/json")
            .header("x-api-key", &*key)
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let start = Instant::now();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        samples.push(micros(start.elapsed()));
    }
    samples
}

async fn h2(
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: String,
    key: Arc<str>,
    until: Instant,
) -> Samples {
    let mut send = send;
    let mut samples = Vec::new();
    while Instant::now() < until {
        let request = hyper::Request::post(format!("http://{addr}/v1/decide"))
            .header("content-type", "application/json")
            .header("x-api-key", &*key)
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let start = Instant::now();
        let response = send.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        samples.push(micros(start.elapsed()));
    }
    samples
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

async fn unary(
    mut client: DecisionServiceClient<Channel>,
    key: Arc<str>,
    until: Instant,
) -> Samples {
    let mut samples = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        let decision = client
            .decide(authorized(grpc_request(), &key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decision.decision, 1);
        samples.push(micros(start.elapsed()));
    }
    samples
}

/// One stream keeping `window` requests in flight: a sender task, and the answers read here.
async fn streaming(
    mut client: DecisionServiceClient<Channel>,
    key: Arc<str>,
    window: usize,
    until: Instant,
) -> Samples {
    let (tx, rx) = tokio::sync::mpsc::channel::<DecideStreamRequest>(window);
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let sender = {
        let permits = Arc::clone(&permits);
        tokio::spawn(async move {
            while Instant::now() < until {
                let permit = permits.acquire().await.unwrap();
                permit.forget();
                sent_tx.send(Instant::now()).unwrap();
                let message = DecideStreamRequest {
                    id: String::new(),
                    request: Some(grpc_request()),
                };
                if tx.send(message).await.is_err() {
                    break;
                }
            }
        })
    };
    let outbound = tokio_stream(rx);
    let mut answers = client
        .decide_stream(authorized(outbound, &key))
        .await
        .unwrap()
        .into_inner();
    let mut samples = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        let start = sent_rx.recv().await.unwrap();
        samples.push(micros(start.elapsed()));
        assert!(matches!(
            answer.outcome,
            Some(warden_server::grpc_proto::decide_stream_response::Outcome::Decision(_))
        ));
        permits.add_permits(1);
        if Instant::now() >= until && sent_rx.is_empty() {
            break;
        }
    }
    sender.abort();
    samples
}

/// An mpsc receiver as a stream (tokio-stream's wrapper, without the dependency).
fn tokio_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the 14th, stime 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, addr, key, seconds, connections, in_flight, ..] = &args[..] else {
        panic!("usage: decide_load MODE ADDR KEY SECONDS CONNECTIONS IN_FLIGHT [SERVER_PID]");
    };
    let pid: Option<u32> = args.get(6).map(|p| p.parse().unwrap());
    let seconds: f64 = seconds.parse().unwrap();
    let connections: usize = connections.parse().unwrap();
    let in_flight: usize = in_flight.parse().unwrap();
    let key: Arc<str> = Arc::from(key.as_str());
    let url = format!("http://{addr}");
    let before = pid.map(cpu_ticks);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    match mode.as_str() {
        "h1" | "h1-tls" => {
            // h1-tls: the CA to trust in DECIDE_LOAD_CA.
            let tls = (mode == "h1-tls")
                .then(|| tls_connector(&std::env::var("DECIDE_LOAD_CA").expect("DECIDE_LOAD_CA")));
            for _ in 0..in_flight {
                tasks.push(tokio::spawn(h1(
                    addr.clone(),
                    Arc::clone(&key),
                    until,
                    tls.clone(),
                )));
            }
        }
        "h2" => {
            for c in 0..connections {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (send, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                for _ in (c..in_flight).step_by(connections) {
                    tasks.push(tokio::spawn(h2(
                        send.clone(),
                        addr.clone(),
                        Arc::clone(&key),
                        until,
                    )));
                }
            }
        }
        "grpc" | "grpc-stream" => {
            for c in 0..connections {
                let channel = Channel::from_shared(url.clone())
                    .unwrap()
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .unwrap();
                let client = DecisionServiceClient::new(channel);
                if mode == "grpc" {
                    for _ in (c..in_flight).step_by(connections) {
                        tasks.push(tokio::spawn(unary(client.clone(), Arc::clone(&key), until)));
                    }
                } else {
                    // One stream per connection, its share of the requests in flight.
                    let window = in_flight / connections;
                    tasks.push(tokio::spawn(streaming(
                        client,
                        Arc::clone(&key),
                        window.max(1),
                        until,
                    )));
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
    let mut samples: Samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = pid.map(cpu_ticks);
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).saturating_sub(1);
        samples.get(i).copied().unwrap_or(0)
    };
    let n = samples.len();
    let cpu_us = match (before, after) {
        (Some(b), Some(a)) => {
            let tick = 1e6 / 100.0; // CLK_TCK is 100 on Linux
            Some((a - b) as f64 * tick / n as f64)
        }
        _ => None,
    };
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "decisions": n,
            "per_second": (n as f64 / elapsed).round(),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "p999_us": pct(0.999),
            "server_cpu_us_per_decision": cpu_us.map(|c| (c * 100.0).round() / 100.0),
        })
    );
}
