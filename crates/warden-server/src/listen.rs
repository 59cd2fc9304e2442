//! The accept loop: HTTP/1.1 and HTTP/2 (h2c, prior knowledge) connections (hyper) with a
//! connection cap, a header read timeout and an idle keep-alive timeout, and a graceful stop.
//!
//! `axum::serve` has none of the three: 20,000 idle or half-sent connections used up the file
//! descriptors and the daemon stopped answering, even `/health/live`, with nothing logged.
//!
//! - **Connection cap** (`max_connections`): a connection accepted beyond it is closed at once
//!   (the client sees a reset), counted in `warden_connections_rejected_total` and logged (at most
//!   once per [`LOG_EVERY`], with the count since). Keep it below the process's file descriptor
//!   limit (`ulimit -n`).
//! - **Header read timeout** (`header_read_timeout_ms`): a connection that has not delivered a
//!   whole request head this long after it opened, or after the first byte of a later request,
//!   is closed (slowloris).
//! - **Idle timeout** (`idle_timeout_ms`): a keep-alive connection with no request under way and
//!   no byte of a new one is closed after this long.
//!
//! Both timeouts are counted in `warden_connection_timeouts_total{kind}` and logged like the cap.
//! Reading the body and producing the answer are bounded by `request_timeout_ms` (middleware);
//! a streamed answer (MCP SSE) keeps its connection busy, never idle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::TimeoutLabels;

/// A limit hit is logged at most this often (with the number of hits since the last line).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection limits (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Longest wait for a whole request head.
    pub header_read_timeout: Duration,
    /// Longest keep-alive wait for the next request.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    /// The daemon's defaults: 1,000 connections, 10 s to send a request head, 60 s idle.
    fn default() -> Self {
        Self {
            max_connections: 1000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the accept loop counts connections (the daemon's `/metrics` series; a listener without
/// a metrics endpoint passes [`ConnMetrics::default`], and the limits are still logged).
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    /// Open client connections.
    pub connections: Gauge,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: Counter,
    /// Connections closed by a timeout, by kind.
    pub timeouts: Family<TimeoutLabels, Counter>,
}

/// Logs a recurring event at most once per [`LOG_EVERY`].
struct Throttled {
    /// Milliseconds since `epoch` of the last line (0: none yet).
    last: AtomicU64,
    /// Events not yet reported.
    pending: AtomicU64,
}

impl Throttled {
    const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event; returns how many to report when a line is due now.
    fn hit(&self, epoch: Instant) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = millis(epoch).max(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.pending.swap(0, Ordering::Relaxed));
        }
        None
    }
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One connection's activity, shared by its stream, its service and its watchdog.
struct Activity {
    epoch: Instant,
    /// Requests under way (until their response body is dropped).
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last had nothing under way.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` when a request head began to arrive (or the connection
    /// opened); `u64::MAX`: none is arriving.
    head_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first request head within the header read timeout.
            head_since: AtomicU64::new(0),
        }
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == u64::MAX
        {
            self.head_since.store(millis(self.epoch), Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(u64::MAX, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// A request under way; dropped with its response body (or its handler, if cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(millis(activity.epoch), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy)]
enum Timeout {
    HeaderRead,
    Idle,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Timeout::HeaderRead => "header_read",
            Timeout::Idle => "idle",
        }
    }
}

/// Requests under way at once on one HTTP/2 connection, at most (the concurrency limit and the
/// rate limit still apply to each).
const H2_MAX_STREAMS: u32 = 100;
/// The largest header list an HTTP/2 request may send, in bytes (HTTP/1.1's head is bounded by
/// hyper's buffer the same way).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Resolves when the connection has waited too long for a request head or idled too long.
async fn watchdog(activity: Arc<Activity>, limits: ConnLimits) -> Timeout {
    let shortest = limits.header_read_timeout.min(limits.idle_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let header_ms = limits.header_read_timeout.as_millis() as u64;
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    loop {
        tokio::time::sleep(tick).await;
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            continue;
        }
        let now = millis(activity.epoch);
        let head_since = activity.head_since.load(Ordering::Relaxed);
        if head_since != u64::MAX {
            if now.saturating_sub(head_since) >= header_ms {
                return Timeout::HeaderRead;
            }
        } else if now.saturating_sub(activity.idle_since.load(Ordering::Relaxed)) >= idle_ms {
            return Timeout::Idle;
        }
    }
}

/// The TCP stream, noting when bytes arrive.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and serves `app` on each until `shutdown` resolves; then
/// stops accepting, lets open connections finish their requests (idle ones close at once) and
/// returns once all are closed.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ConnLimits,
    metrics: ConnMetrics,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<
            axum::http::Request<Body>,
            Response = axum::http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let epoch = Instant::now();
    let rejected_log = Arc::new(Throttled::new());
    let accept_error_log = Throttled::new();
    let timeout_log = Arc::new(Throttled::new());
    // HTTP/1.1, and HTTP/2 with prior knowledge (h2c: a client that opens with the HTTP/2
    // preface), told apart by the connection's first bytes.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // The watchdog enforces the header read timeout (hyper's would also cut idle keep-alive
    // connections at the same limit); hyper still needs a timer for its own.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or memory: wait rather than spin.
                if let Some(n) = accept_error_log.hit(epoch) {
                    tracing::error!(error = %e, errors = n, "cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (stream, peer) = stream;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.rejected.inc();
            if let Some(n) = rejected_log.hit(epoch) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    rejected = n,
                    "connection limit reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        // Small SSE writes (MCP) would otherwise meet delayed ACKs: about 40 ms per response.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        let tracked = Tracked {
            stream,
            activity: Arc::clone(&activity),
        };
        // Set once the TLS handshake verified a client certificate, before any request is read.
        let identity: Arc<std::sync::OnceLock<crate::tls::ClientIdentity>> = Arc::default();
        let service = {
            let (app, activity) = (app.clone(), Arc::clone(&activity));
            let identity = Arc::clone(&identity);
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut app = app.clone();
                let in_flight = activity.request_started();
                let mut req = req.map(Body::new);
                // The peer's address, for brute-force protection (axum's own extractor type).
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                if let Some(identity) = identity.get() {
                    req.extensions_mut().insert(identity.clone());
                }
                async move {
                    let response = tower::Service::call(&mut app, req).await?;
                    // The request stays under way until its body is sent (or dropped).
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &in_flight;
                            frame
                        }))
                    }))
                }
            })
        };
        let watcher = graceful.watcher();
        let (builder, tls) = (builder.clone(), tls.clone());
        let served = async move {
            match tls {
                None => watcher
                    .watch(
                        builder
                            .serve_connection(TokioIo::new(tracked), service)
                            .into_owned(),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                // The handshake is bounded like a request head: the watchdog's header read
                // timeout runs from the connection's first byte.
                Some(acceptor) => {
                    let stream = acceptor
                        .accept(tracked)
                        .await
                        .map_err(|e| format!("TLS handshake: {e}"))?;
                    if let Some(client) = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(crate::tls::client_identity)
                    {
                        identity.get_or_init(|| client);
                    }
                    watcher
                        .watch(
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned(),
                        )
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        };
        let metrics = metrics.clone();
        let timeout_log = Arc::clone(&timeout_log);
        metrics.connections.inc();
        tokio::spawn(async move {
            tokio::select! {
                result = served => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                timeout = watchdog(activity, limits) => {
                    metrics
                        .timeouts
                        .get_or_create(&TimeoutLabels { kind: timeout.label() })
                        .inc();
                    if let Some(n) = timeout_log.hit(epoch) {
                        tracing::info!(
                            kind = timeout.label(),
                            closed = n,
                            "closed connections that waited too long for a request"
                        );
                    }
                }
            }
            metrics.connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
