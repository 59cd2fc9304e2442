//! The Streamable HTTP transport: a reverse proxy in front of one upstream MCP endpoint.
//!
//! POST bodies are read whole (bounded) and decided; `application/json` responses are read whole
//! (one message) and `text/event-stream` responses are forwarded event by event as they arrive,
//! each written again by Warden from what it read. GET (the server's stream) and DELETE (end of
//! session) are forwarded without a body; other methods are refused (405). Mount [`router`] (or
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
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::enforce::{Caller, Enforcer, Exchange, Outcome, routing_header_mismatch};
use crate::message::{self, Message};
use crate::sse::{Event, SseSplitter};

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
    /// The Warden session whose taints and history apply to the calls: an identity the
    /// embedding application trusts (the key's, a configured one), never the client's
    /// `Mcp-Session-Id` (a client picks that one, and a new one clears its taints). None: no
    /// session state is read or written.
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
    /// The Warden session of this upstream's calls (default: the caller's key identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Take the Warden session from this request header instead (e.g. `x-agent-session`), for
    /// clients without an MCP session (the stateless 2026-07-28 protocol) that run many agent
    /// sessions under one key: required on every request, namespaced by the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,
    /// Or take it from this key of the message's `params._meta` (e.g. `io.warden/session`),
    /// for clients that put their agent session into each request: required on `tools/call`,
    /// used when present on other messages, namespaced by the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_meta: Option<String>,
    /// Or take it from a claim of a JWT the client sends in a header, verified against a
    /// JWKS: for stateless clients whose identity provider names the agent session in the
    /// token, namespaced by the key's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_jwt: Option<SessionJwt>,
    /// For an `https://` url: the PEM bundle the upstream's certificate must chain to (a
    /// private CA); none: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The Warden session from a claim of a verified JWT ([`UpstreamConfig::session_jwt`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionJwt {
    /// The request header holding the token (a `Bearer ` prefix is optional), e.g.
    /// `x-agent-token`; removed before the request goes upstream.
    pub header: String,
    /// The claim naming the session (a string), e.g. `sid`.
    #[serde(default = "SessionJwt::default_claim")]
    pub claim: String,
    /// Where the key set is (`https://`, or `http://` for a local one).
    pub jwks_url: String,
    /// The `iss` required; none: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// One of these must be in `aud`; empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The algorithms accepted (default `RS256`, `ES256`; HMAC and `none` are refused).
    #[serde(default = "SessionJwt::default_algorithms")]
    pub algorithms: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default = "SessionJwt::default_leeway_secs")]
    pub leeway_secs: u64,
    /// PEM bundle the JWKS endpoint's certificate must chain to; none: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl SessionJwt {
    fn default_claim() -> String {
        "sid".to_owned()
    }

    fn default_algorithms() -> Vec<String> {
        vec!["RS256".to_owned(), "ES256".to_owned()]
    }

    fn default_leeway_secs() -> u64 {
        30
    }
}

/// Where in a message the Warden session is read ([`ProxyConfig::session_meta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaSession {
    /// The key in `params._meta`.
    pub key: String,
    /// The longest session accepted, in bytes.
    pub max_bytes: usize,
}

impl MetaSession {
    /// The session `message` names: `Ok(None)` when it names none and need not, an error (the
    /// JSON-RPC error message) when it must and does not, or names one that is not a string of
    /// 1 to `max_bytes` visible ASCII bytes.
    fn of(&self, message: &Message) -> Result<Option<String>, String> {
        let key = &self.key;
        let value = message
            .params_object()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.as_object())
            .and_then(|m| m.get(key.as_str()));
        match value {
            None if message.method() == Some("tools/call") => Err(format!(
                "`params._meta` must name the Warden session under `{key}` on tools/call"
            )),
            None => Ok(None),
            Some(serde_json::Value::String(s))
                if !s.is_empty()
                    && s.len() <= self.max_bytes
                    && s.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!(
                "`params._meta` `{key}` must be a string of 1 to {} visible ASCII bytes",
                self.max_bytes
            )),
        }
    }
}

/// Derives the caller's identity from the request headers (authentication is the embedding
/// application's: the standalone proxy uses a fixed identity); an error refuses the request
/// (400, the message naming what is missing).
pub type Identify = Arc<dyn Fn(&HeaderMap) -> Result<Identity, String> + Send + Sync>;

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
    /// Take the Warden session of each message from its `params._meta` (over the identity's).
    pub session_meta: Option<MetaSession>,
    /// How an `https://` upstream's certificate is verified
    /// ([`crate::upstream_tls::client_config`]); none: against the system's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
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
            identify: Arc::new(move |_| Ok(identity.clone())),
            strip_headers: Vec::new(),
            session_meta: None,
            tls: None,
        }
    }
}

/// The HTTP client of one upstream: plain for `http://`, rustls for `https://`.
enum UpstreamClient {
    Plain(Client<HttpConnector, Body>),
    Tls(Client<HttpsConnector<HttpConnector>, Body>),
}

impl UpstreamClient {
    fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let builder = Client::builder(TokioExecutor::new());
        if config.upstream.scheme_str() != Some("https") {
            return Self::Plain(builder.build(connector));
        }
        let tls = match &config.tls {
            Some(tls) => Arc::clone(tls),
            None => match crate::upstream_tls::client_config(None) {
                Ok(tls) => tls,
                Err(e) => {
                    // The plain connector refuses an https URL: every call answers 502, closed.
                    tracing::error!(error = %e, "MCP upstream TLS has no roots");
                    return Self::Plain(builder.build(connector));
                }
            },
        };
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        Self::Tls(builder.build(connector))
    }

    fn request(&self, request: Request<Body>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Self::Plain(client) => client.request(request),
            Self::Tls(client) => client.request(request),
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
    client: UpstreamClient,
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
        let client = UpstreamClient::new(&config);
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

/// The `charset` parameter of a media type, lower-cased, when there is one.
fn charset(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

/// Whether a `Content-Type` declares a charset other than UTF-8 (a peer would decode the body
/// differently from Warden: UTF-7 hides a second `method` from a UTF-8 reader).
fn foreign_charset(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_TYPE).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            charset(v).is_some_and(|c| c != "utf-8" && c != "utf8")
        })
    })
}

/// Proxies one request. Denied calls are answered with a JSON-RPC error on HTTP 200.
pub async fn handle(State(state): State<ProxyState>, request: Request<Body>) -> Response<Body> {
    let inner = &state.inner;
    let (parts, body) = request.into_parts();
    // Streamable HTTP uses POST, GET and DELETE only: a body sent any other way would reach the
    // server uninspected.
    if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
        let mut response = rpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            message::INVALID_REQUEST,
            "MCP over HTTP uses POST, GET and DELETE only",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        return response;
    }
    let identity = match (inner.config.identify)(&parts.headers) {
        Ok(identity) => identity,
        Err(message) => {
            return rpc_error(StatusCode::BAD_REQUEST, message::INVALID_REQUEST, &message);
        }
    };
    let mcp_session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Requests are matched to answers per MCP session and principal: another principal naming
    // the same `Mcp-Session-Id` gets an exchange of its own.
    let exchange_key = mcp_session.as_ref().map(|id| {
        format!(
            "{}\u{1f}{id}",
            identity.principal.as_deref().unwrap_or_default()
        )
    });
    let mut caller = Caller {
        session: identity.session,
        principal: identity.principal,
    };
    let exchange = match &exchange_key {
        Some(key) if inner.exchanges.len() < MAX_SESSIONS || inner.exchanges.contains_key(key) => {
            inner
                .exchanges
                .entry(key.clone())
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
        if foreign_charset(&parts.headers) {
            return rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message::INVALID_REQUEST,
                "the request body must be UTF-8 JSON (a `charset` other than utf-8 is refused)",
            );
        }
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
        let parsed = Message::parse(&bytes);
        if let (Some(meta), Ok(message)) = (&inner.config.session_meta, &parsed) {
            match meta.of(message) {
                Ok(Some(session)) => caller.session = Some(session),
                Ok(None) => {}
                Err(text) => {
                    return rpc_error(StatusCode::BAD_REQUEST, message::INVALID_REQUEST, &text);
                }
            }
        }
        if let Ok(message) = &parsed {
            let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
            if let Some(mismatch) =
                routing_header_mismatch(message, header("mcp-method"), header("mcp-name"))
            {
                return rpc_error(StatusCode::BAD_REQUEST, message::INVALID_REQUEST, &mismatch);
            }
        }
        match inner.enforcer.client(&caller, &exchange, parsed) {
            Outcome::Forward(bytes) => Body::from(bytes),
            Outcome::Reply(reply) => return json_response(StatusCode::OK, reply),
            Outcome::Drop => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::ACCEPTED;
                return response;
            }
        }
    } else {
        // GET and DELETE carry no message: whatever body came is not forwarded.
        drop(body);
        Body::empty()
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
    if parts.method == Method::POST {
        // The body is the JSON Warden wrote: say so, whatever the client declared.
        upstream.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let forwarded_headers = upstream.headers().clone();
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
    if let Some(key) = &exchange_key
        && (parts.method == Method::DELETE || response.status() == StatusCode::NOT_FOUND)
    {
        inner.exchanges.remove(key);
    }

    let (mut head, body) = response.into_parts();
    let content_type = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let is_sse = content_type.starts_with("text/event-stream");
    let is_json = content_type.starts_with("application/json");
    if (is_sse || is_json) && (is_encoded(&head.headers) || foreign_charset(&head.headers)) {
        tracing::warn!(upstream = %inner.config.upstream, "upstream sent a compressed or non-UTF-8 MCP response; withheld");
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            message::INVALID_REQUEST,
            "the upstream response is compressed or not UTF-8 and cannot be inspected",
        );
    }
    let mut headers = HeaderMap::new();
    copy_headers(&head.headers, &mut headers);
    head.headers = headers;

    if parts.method == Method::POST && head.status == StatusCode::ACCEPTED {
        // Accepted (a notification or a response the client sent): the answer has no body (the
        // Python SDK still sends `Content-Type: application/json` with none). Whatever body came
        // is not forwarded: nothing reaches the client uninspected.
        drop(body);
        head.headers.remove(header::CONTENT_TYPE);
        head.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(head, Body::empty());
    }

    let body = if is_sse {
        let answers = ServerAnswers {
            state: state.clone(),
            headers: forwarded_headers,
        };
        Body::from_stream(sse_stream(answers, caller, exchange, body))
    } else if is_json {
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
            Outcome::Forward(bytes) => Body::from(bytes),
            Outcome::Reply(_) | Outcome::Drop => {
                return rpc_error(
                    StatusCode::BAD_GATEWAY,
                    message::INVALID_REQUEST,
                    "the upstream response is not an answer warden can inspect",
                );
            }
        }
    } else if head.status.is_success() && parts.method == Method::POST {
        // A success answer to a message that is neither JSON nor an event stream could be read
        // as a result by the client: withheld.
        tracing::warn!(upstream = %inner.config.upstream, content_type = %content_type, "upstream answered a POST with a body warden cannot inspect; withheld");
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            message::INVALID_REQUEST,
            "the upstream answered with a body warden cannot inspect",
        );
    } else {
        Body::new(body)
    };
    Response::from_parts(head, body)
}

/// Sends Warden's answers to the server's requests (a refused `sampling/createMessage`, say)
/// back to the server, as a client POST on the same session.
#[derive(Clone)]
struct ServerAnswers {
    state: ProxyState,
    headers: HeaderMap,
}

impl ServerAnswers {
    fn send(&self, bytes: Vec<u8>) {
        let inner = Arc::clone(&self.state.inner);
        let mut request = Request::new(Body::from(bytes));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = inner.config.upstream.clone();
        *request.headers_mut() = self.headers.clone();
        tokio::spawn(async move {
            match inner.client.request(request).await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "the server refused warden's answer to its request")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send warden's answer to the server's request")
                }
            }
        });
    }
}

struct SseState<B> {
    answers: ServerAnswers,
    caller: Caller,
    exchange: Arc<Exchange>,
    body: B,
    splitter: SseSplitter,
}

/// The upstream's event stream, each event inspected as it completes and written again.
fn sse_stream<B>(
    answers: ServerAnswers,
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
        answers,
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
            let mut out = Vec::new();
            for raw in events {
                let event = match Event::parse(&raw) {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropped an unreadable event from the server");
                        continue;
                    }
                };
                let content = event
                    .data
                    .as_deref()
                    .filter(|d| !d.iter().all(u8::is_ascii_whitespace));
                let Some(content) = content else {
                    // A priming event (an id to resume from, no message).
                    out.extend_from_slice(&event.write(None));
                    continue;
                };
                let enforcer = &s.answers.state.inner.enforcer;
                match enforcer.server_message(&s.caller, &s.exchange, content) {
                    Outcome::Forward(bytes) => out.extend_from_slice(&event.write(Some(&bytes))),
                    Outcome::Reply(bytes) => s.answers.send(bytes),
                    Outcome::Drop => {}
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
