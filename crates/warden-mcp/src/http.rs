//! The Streamable HTTP transport: a reverse proxy in front of one upstream MCP endpoint.
//!
//! POST bodies are read whole (bounded) and decided; `application/json` responses are read whole
//! (one message) and `text/event-stream` responses are forwarded event by event as they arrive.
//! GET (the server's stream) and DELETE (end of session) are forwarded. Mount [`router`] (or
//! [`handle`] on a route of your own) in any axum application.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
pub use axum::http::Uri;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode};
use axum::routing::any;
use dashmap::DashMap;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::enforce::{Caller, Enforcer, Exchange, Outcome, routing_header_mismatch};
use crate::message;
use crate::sse::{SseSplitter, event_data, replace_data};

/// Largest POST body or JSON response accepted, in bytes (default).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most MCP sessions tracked at once; beyond it the oldest are not tracked any more.
pub const MAX_SESSIONS: usize = 100_000;

const SESSION_HEADER: &str = "mcp-session-id";

/// Who the caller of one HTTP request is, as the embedding application authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The principal (an API key's or a token's subject).
    pub principal: Option<String>,
    /// A client identity to use as the Warden session instead of `Mcp-Session-Id`.
    pub session: Option<String>,
}

/// One HTTP upstream as a daemon configuration lists it: clients reach it at `/mcp/{name}`,
/// Warden forwards to `url` and decides with the policy named `policy`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream's name: its route and the key its tool pins are kept under.
    pub name: String,
    /// The upstream MCP endpoint (`http://host:port/mcp`).
    pub url: String,
    /// The name of the policy (in the daemon's policy set) that decides its calls.
    pub policy: String,
    /// A client identity used as the Warden session instead of `Mcp-Session-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Derives the caller's identity from the request headers (authentication is the embedding
/// application's: the standalone proxy uses a fixed identity).
pub type Identify = Arc<dyn Fn(&HeaderMap) -> Identity + Send + Sync>;

/// Proxy configuration.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The upstream MCP endpoint (`http://host:port/mcp`).
    pub upstream: Uri,
    /// Largest POST body or JSON response accepted, in bytes.
    pub max_body_bytes: usize,
    /// Who is calling.
    pub identify: Identify,
    /// Request headers not forwarded upstream (e.g. the daemon's own `authorization` or API key
    /// header, which authenticates the client to Warden, not to the server).
    pub strip_headers: Vec<HeaderName>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("upstream", &self.upstream)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("strip_headers", &self.strip_headers)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// A configuration for `upstream` with a fixed identity.
    pub fn new(upstream: Uri, identity: Identity) -> Self {
        Self {
            upstream,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            identify: Arc::new(move |_| identity.clone()),
            strip_headers: Vec::new(),
        }
    }
}

/// The proxy's shared state; cheap to clone.
#[derive(Clone)]
pub struct ProxyState {
    inner: Arc<Inner>,
}

struct Inner {
    enforcer: Arc<Enforcer>,
    config: ProxyConfig,
    client: Client<HttpConnector, Body>,
    exchanges: DashMap<String, Arc<Exchange>>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("config", &self.inner.config)
            .field("sessions", &self.inner.exchanges.len())
            .finish_non_exhaustive()
    }
}

impl ProxyState {
    /// A proxy enforcing with `enforcer` in front of `config.upstream`.
    pub fn new(enforcer: Arc<Enforcer>, config: ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            inner: Arc::new(Inner {
                enforcer,
                config,
                client,
                exchanges: DashMap::new(),
            }),
        }
    }

    /// The enforcer.
    pub fn enforcer(&self) -> &Arc<Enforcer> {
        &self.inner.enforcer
    }

    /// MCP sessions currently tracked.
    pub fn sessions(&self) -> usize {
        self.inner.exchanges.len()
    }
}

/// A router serving the proxy at `path` (e.g. `/mcp`) for every method.
pub fn router(state: ProxyState, path: &str) -> Router {
    Router::new().route(path, any(handle)).with_state(state)
}

fn json_response(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn rpc_error(status: StatusCode, code: i64, text: &str) -> Response<Body> {
    json_response(status, message::error_response(None, code, text, None))
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus those
/// recomputed when forwarding.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Whether a `Content-Encoding` other than `identity` is declared.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    })
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Proxies one request. Denied calls are answered with a JSON-RPC error on HTTP 200.
pub async fn handle(State(state): State<ProxyState>, request: Request<Body>) -> Response<Body> {
    let inner = &state.inner;
    let (parts, body) = request.into_parts();
    let identity = (inner.config.identify)(&parts.headers);
    let mcp_session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = Caller {
        session: identity.session.or_else(|| mcp_session.clone()),
        principal: identity.principal,
    };
    let exchange = match &mcp_session {
        Some(id) if inner.exchanges.len() < MAX_SESSIONS || inner.exchanges.contains_key(id) => {
            inner
                .exchanges
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Exchange::for_session()))
                .clone()
        }
        _ => Arc::new(Exchange::new()),
    };

    if is_encoded(&parts.headers) {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message::INVALID_REQUEST,
            "compressed request bodies are not accepted: warden must read every message",
        );
    }
    let upstream_body = if parts.method == Method::POST {
        let bytes = match http_body_util::Limited::new(body, inner.config.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    message::INVALID_REQUEST,
                    "request body too large or unreadable",
                );
            }
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(mismatch) =
            routing_header_mismatch(&bytes, header("mcp-method"), header("mcp-name"))
        {
            return rpc_error(StatusCode::BAD_REQUEST, message::INVALID_REQUEST, &mismatch);
        }
        match inner.enforcer.client_message(&caller, &exchange, &bytes) {
            Outcome::Forward => Body::from(bytes),
            Outcome::Rewrite(rewritten) => Body::from(rewritten),
            Outcome::Reply(reply) => return json_response(StatusCode::OK, reply),
            Outcome::Drop => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::ACCEPTED;
                return response;
            }
        }
    } else {
        body
    };

    let mut upstream = Request::new(upstream_body);
    *upstream.method_mut() = parts.method.clone();
    *upstream.uri_mut() = inner.config.upstream.clone();
    copy_headers(&parts.headers, upstream.headers_mut());
    // Responses must come back readable: Warden inspects them.
    upstream.headers_mut().remove(header::ACCEPT_ENCODING);
    for name in &inner.config.strip_headers {
        upstream.headers_mut().remove(name);
    }
    let response = match inner.client.request(upstream).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, upstream = %inner.config.upstream, "upstream MCP server unreachable");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                message::INVALID_REQUEST,
                "the upstream MCP server is unreachable",
            );
        }
    };
    if let Some(id) = &mcp_session
        && (parts.method == Method::DELETE || response.status() == StatusCode::NOT_FOUND)
    {
        inner.exchanges.remove(id);
    }

    let (mut head, body) = response.into_parts();
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let inspected = content_type.starts_with("text/event-stream")
        || content_type.starts_with("application/json");
    if inspected && is_encoded(&head.headers) {
        tracing::warn!(upstream = %inner.config.upstream, "upstream sent a compressed MCP response; withheld");
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            message::INVALID_REQUEST,
            "the upstream response is compressed and cannot be inspected",
        );
    }
    let mut headers = HeaderMap::new();
    copy_headers(&head.headers, &mut headers);
    head.headers = headers;

    let body = if content_type.starts_with("text/event-stream") {
        Body::from_stream(sse_stream(state.clone(), caller, exchange, body))
    } else if content_type.starts_with("application/json") {
        let bytes = match http_body_util::Limited::new(body, inner.config.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    message::INVALID_REQUEST,
                    "the upstream response is too large or unreadable",
                );
            }
        };
        match inner.enforcer.server_message(&caller, &exchange, &bytes) {
            Outcome::Forward => Body::from(bytes),
            Outcome::Rewrite(rewritten) => Body::from(rewritten),
            Outcome::Reply(_) | Outcome::Drop => {
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    message::INVALID_REQUEST,
                    "the upstream response could not be read as JSON-RPC",
                );
            }
        }
    } else {
        Body::new(body)
    };
    Response::from_parts(head, body)
}

struct SseState<B> {
    state: ProxyState,
    caller: Caller,
    exchange: Arc<Exchange>,
    body: B,
    splitter: SseSplitter,
}

/// The upstream's event stream, each event inspected as it completes.
fn sse_stream<B>(
    state: ProxyState,
    caller: Caller,
    exchange: Arc<Exchange>,
    body: B,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    B: http_body_util::BodyExt + Unpin + Send + 'static,
    B::Data: AsRef<[u8]> + Send,
    B::Error: std::fmt::Display,
{
    let start = Some(SseState {
        state,
        caller,
        exchange,
        body,
        splitter: SseSplitter::new(),
    });
    futures_util::stream::unfold(start, |current| async move {
        let mut s = current?;
        loop {
            let frame = match s.body.frame().await {
                // An incomplete event at the end is discarded (as SSE clients do), never
                // forwarded uninspected.
                None => return None,
                Some(Err(e)) => {
                    return Some((
                        Err(std::io::Error::other(format!(
                            "upstream stream failed: {e}"
                        ))),
                        None,
                    ));
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = match s.splitter.push(data.as_ref()) {
                Ok(events) => events,
                Err(e) => return Some((Err(std::io::Error::other(e)), None)),
            };
            if events.is_empty() {
                continue;
            }
            let mut out = Vec::new();
            for event in events {
                let outcome = match event_data(&event) {
                    Some(data) => {
                        s.state
                            .inner
                            .enforcer
                            .server_message(&s.caller, &s.exchange, &data)
                    }
                    None => Outcome::Forward,
                };
                match outcome {
                    Outcome::Forward => out.extend_from_slice(&event),
                    Outcome::Rewrite(bytes) => out.extend_from_slice(&replace_data(&event, &bytes)),
                    // Never forwarded: an unreadable message while a result is awaited.
                    Outcome::Reply(_) | Outcome::Drop => {}
                }
            }
            if out.is_empty() {
                continue;
            }
            return Some((Ok(Bytes::from(out)), Some(s)));
        }
    })
}

/// Serves the proxy at `/mcp` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ProxyState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY, small SSE writes meet delayed ACKs: about 40 ms per call.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(state, "/mcp"))
        .with_graceful_shutdown(shutdown)
        .await
}
