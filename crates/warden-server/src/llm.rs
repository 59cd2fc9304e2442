//! The LLM proxy mounted in the daemon: one route per `llm_upstreams` entry,
//! `/llm/{name}/v1/chat/completions` (OpenAI-compatible) or `/llm/{name}/v1/messages`
//! (Anthropic-compatible), in front of the configured upstream.
//!
//! An exchange: the caller is admitted as on `/v1/*` (API key, lockout, rate limit; the
//! provider SDK's `api_key` is the Warden key), the request is read strictly and decided as one
//! `prompt` request ([`warden_llm::chat`]), its texts redacted as the policy says, and the body
//! Warden decided is what the upstream receives, with the upstream's own key (from the
//! environment) in place of Warden's. The answer is decided and rewritten whole
//! ([`warden_llm::reply`]) or event by event as it streams ([`warden_llm::stream`]). Every
//! decision goes through the daemon's pipeline with the mount's policy (or the key's), in the
//! caller's tenant and session, with every effect (audit, log, metrics, history).
//!
//! An exchange's own limit is `timeout_ms` (to the answer's headers, and between two chunks of
//! a stream), not `request_timeout_ms`: models take seconds to minutes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warden_llm::stream::StreamRewriter;
use warden_llm::{Api, Asker, ChatRequest, Judge, Refusal, RefusalKind};

use crate::AppState;
use crate::audit::StreamEnd;
use crate::auth::Caller;
use crate::config::LlmUpstreamConfig;
use crate::snapshot::PolicyKind;

/// The tenant of requests without a key (as the auth layer names it).
const ANONYMOUS: &str = "anonymous";
/// The largest whole answer read from an upstream.
const MAX_ANSWER_BYTES: usize = warden_llm::stream::MAX_ANSWER_BYTES;
/// Request headers passed to the upstream as the client sent them (the API version and beta
/// flags the client's SDK asks for); every other header is Warden's to set.
const PASSED_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "openai-beta",
];
/// Answer headers passed back from the upstream.
const RETURNED_HEADERS: &[&str] = &["retry-after", "request-id", "x-request-id"];

/// The HTTP client of one upstream: plain for `http://`, rustls for `https://`.
#[derive(Clone)]
enum UpstreamClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl UpstreamClient {
    fn new(uri: &Uri, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let builder = Client::builder(TokioExecutor::new());
        if uri.scheme_str() != Some("https") {
            return Ok(Self::Plain(builder.build(connector)));
        }
        let tls =
            warden_mcp::upstream_tls::client_config(ca_file).map_err(|e| format!("TLS: {e}"))?;
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self::Tls(builder.build(connector)))
    }

    fn request(&self, request: Request<Full<Bytes>>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Self::Plain(client) => client.request(request),
            Self::Tls(client) => client.request(request),
        }
    }
}

/// One mounted upstream.
struct Mount {
    config: LlmUpstreamConfig,
    state: AppState,
    target: Uri,
    client: UpstreamClient,
    /// The upstream's key, as its auth header wants it.
    upstream_key: Option<(HeaderName, HeaderValue)>,
    session_header: Option<HeaderName>,
}

/// Decides one exchange's requests through the daemon's pipeline.
struct MountJudge {
    state: AppState,
    tenant: Arc<str>,
    policy: Arc<str>,
}

impl Judge for MountJudge {
    fn decide(&self, request: &warden::Request) -> Result<warden::Decision, String> {
        let caller = warden_core::pipeline::Caller {
            tenant: Some(&self.tenant),
            policy: Some(&self.policy),
            request_id: None,
            tokens: false,
        };
        let result = crate::inline::run_here(self.state.pipeline().decide(&caller, request))?;
        result.map_err(|e| e.to_string())
    }

    fn content(&self) -> Option<Arc<warden::content::ContentPolicy>> {
        self.state
            .pipeline()
            .policies()
            .get(Some(&self.policy))
            .and_then(|policy| policy.content.clone())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn mount(state: &AppState, config: &LlmUpstreamConfig) -> Result<Mount, String> {
    let name = &config.name;
    let what = format!("llm_upstreams `{name}`");
    if !valid_name(name) {
        return Err(format!(
            "llm_upstreams: invalid name `{name}` (letters, digits, `-`, `_`, `.`)"
        ));
    }
    let base = config.url.trim_end_matches('/');
    let target: Uri = format!("{base}{}", config.api.path())
        .parse()
        .map_err(|e| format!("{what}: invalid url: {e}"))?;
    let https = target.scheme_str() == Some("https");
    if !(https || target.scheme_str() == Some("http")) || target.authority().is_none() {
        return Err(format!(
            "{what}: the url must be http://host:port or https://host:port"
        ));
    }
    if config.ca_file.is_some() && !https {
        return Err(format!("{what}: `ca_file` applies to an https:// url only"));
    }
    if config.hold_chars == 0 || config.hold_chars > 65_536 {
        return Err(format!("{what}: `hold_chars` must be 1 to 65536"));
    }
    if config.timeout_ms == 0 {
        return Err(format!("{what}: `timeout_ms` must be at least 1"));
    }
    if let Some(policy) = &config.policy {
        match state
            .snapshot()
            .policies
            .get(policy.as_str())
            .map(|p| &p.kind)
        {
            Some(PolicyKind::Warden(_)) => {}
            Some(PolicyKind::Rego(..)) => {
                return Err(format!(
                    "{what}: policy `{policy}` is a Rego policy; LLM upstreams need a Warden policy"
                ));
            }
            None => return Err(format!("{what}: policy `{policy}` is not loaded")),
        }
    }
    let upstream_key = match &config.api_key_env {
        None => None,
        Some(var) => {
            let key = std::env::var(var).map_err(|_| {
                format!("{what}: the environment variable `{var}` (`api_key_env`) is not set")
            })?;
            let (name, value) = match config.api {
                Api::Openai => (header::AUTHORIZATION, format!("Bearer {key}")),
                Api::Anthropic => (HeaderName::from_static("x-api-key"), key),
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("{what}: `{var}` holds a value no header can carry"))?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let session_header = match &config.session_header {
        None => None,
        Some(h) => Some(
            HeaderName::try_from(h.as_str())
                .map_err(|_| format!("{what}: `session_header` `{h}` is not a header name"))?,
        ),
    };
    let client = UpstreamClient::new(&target, config.ca_file.as_deref())
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(Mount {
        config: config.clone(),
        state: state.clone(),
        target,
        client,
        upstream_key,
        session_header,
    })
}

fn build(state: &AppState) -> Result<Vec<Arc<Mount>>, String> {
    let mut built: Vec<Arc<Mount>> = Vec::new();
    for config in &state.config().llm_upstreams {
        if built.iter().any(|m| m.config.name == config.name) {
            return Err(format!(
                "llm_upstreams: the name `{}` is used twice",
                config.name
            ));
        }
        built.push(Arc::new(mount(state, config)?));
    }
    Ok(built)
}

/// Checks the `llm_upstreams` configuration (names, URLs, policies, keys in the environment):
/// the daemon refuses to start otherwise.
pub fn check(state: &AppState) -> Result<(), String> {
    build(state).map(|_| ())
}

/// The routes of every configured upstream (none when the configuration is invalid: [`check`]
/// reports why at start).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let mounts = build(state).unwrap_or_else(|e| {
        tracing::error!(error = %e, "LLM upstreams not mounted");
        Vec::new()
    });
    let mut router = Router::new();
    for mount in mounts {
        tracing::info!(
            name = %mount.config.name,
            api = mount.config.api.as_str(),
            url = %mount.config.url,
            "LLM upstream mounted"
        );
        let path = format!("/llm/{}{}", mount.config.name, mount.config.api.path());
        router = router.route(
            &path,
            post(move |request: Request<Body>| {
                let mount = Arc::clone(&mount);
                async move { mount.handle(request).await }
            }),
        );
    }
    router
}

impl Mount {
    fn refuse(&self, refusal: &Refusal) -> Response<Body> {
        json_response(
            StatusCode::from_u16(refusal.kind.status()).unwrap_or(StatusCode::BAD_GATEWAY),
            &self.config.api.error_body(refusal),
        )
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let request_id = request
            .extensions()
            .get::<crate::middleware::RequestId>()
            .map(|r| Arc::clone(&r.0))
            .unwrap_or_else(|| Arc::from(""));
        let peer = request
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let certificate = request.extensions().get::<crate::tls::ClientIdentity>();
        let caller = match crate::middleware::admit(
            &self.state,
            request.headers(),
            peer,
            certificate,
            &request_id,
        )
        .await
        {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        };
        let Ok(_permit) = self.state.0.concurrency.try_acquire() else {
            return self.refuse(&Refusal::new(
                RefusalKind::Unavailable,
                "too many requests in progress",
            ));
        };
        let limit = Duration::from_millis(self.config.timeout_ms);
        let tenant = Arc::clone(&caller.tenant);
        let mut model = None;
        let outcome = tokio::time::timeout(limit, self.exchange(caller, request, &mut model))
            .await
            .unwrap_or_else(|_| {
                Err(Refusal::new(
                    RefusalKind::Upstream,
                    "the upstream did not answer in time",
                ))
            });
        let labels = crate::metrics::LlmRequestLabels {
            mount: Arc::from(self.config.name.as_str()),
            tenant,
            model: model_label(&self.state, model.as_deref()),
            outcome: match &outcome {
                Ok(_) => "forwarded",
                Err(refusal) => refusal.kind.code(),
            },
        };
        self.state
            .metrics()
            .llm_requests
            .get_or_create(&labels)
            .inc();
        match outcome {
            Ok(response) => response,
            Err(refusal) => self.refuse(&refusal),
        }
    }

    fn session(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let Some(name) = &self.session_header else {
            return Ok(format!("llm:{}", self.config.name));
        };
        let max = self.state.config().max_identifier_bytes;
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= max)
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::BadRequest,
                    format!("the `{name}` header (the Warden session) is required: 1 to {max} visible ASCII bytes"),
                )
            })
    }

    async fn exchange(
        &self,
        caller: Caller,
        request: Request<Body>,
        model: &mut Option<String>,
    ) -> Result<Response<Body>, Refusal> {
        let api = self.config.api;
        let session = self.session(request.headers())?;
        let (parts, body) = request.into_parts();
        let limit = self.state.config().body_limit_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            Refusal::new(
                RefusalKind::BadRequest,
                format!("the request body is larger than {limit} bytes"),
            )
        })?;
        let mut chat = ChatRequest::parse(api, &bytes)?;
        *model = Some(chat.model.clone());
        let policy: Arc<str> = match &self.config.policy {
            Some(policy) => Arc::from(policy.as_str()),
            None => Arc::clone(&caller.policy),
        };
        if !matches!(
            caller.snapshot.policies.get(&*policy).map(|p| &p.kind),
            Some(PolicyKind::Warden(_))
        ) {
            tracing::error!(mount = %self.config.name, policy = %policy, "LLM upstream without a Warden policy; refusing");
            return Err(Refusal::unavailable());
        }
        let judge = MountJudge {
            state: self.state.clone(),
            tenant: Arc::clone(&caller.tenant),
            policy,
        };
        let mut context = chat.context();
        context.insert(
            "mount".to_owned(),
            serde_json::Value::String(self.config.name.clone()),
        );
        let prices = &self.state.config().llm_prices;
        let mut asker = Asker {
            principal: (&*caller.tenant != ANONYMOUS).then(|| caller.tenant.to_string()),
            session: Some(session),
            context,
            price: None,
        };
        let content = judge.content();
        let mut prompt = chat.prompt(&asker);
        let prompt_chars = prompt.text.as_deref().map_or(0, |t| t.chars().count());
        if let Some(context) = prompt.context.as_mut() {
            let estimate = estimate(&chat, prompt_chars);
            context.insert(
                "estimated_tokens".to_owned(),
                (estimate.input.saturating_add(estimate.output)).into(),
            );
            if let Some(price) = prices.get(&chat.model) {
                context.insert("estimated_cost_usd".to_owned(), price.usd(estimate).into());
            }
        }
        let decision = judge.decide(&prompt).map_err(|_| Refusal::unavailable())?;
        if !decision.verdict.is_allow() {
            return Err(Refusal::denied("the prompt", &decision));
        }
        chat.apply(&decision, content.as_deref())?;
        if let Some(rewrite) = &decision.rewrite {
            let asked = chat.model.clone();
            chat.rewrite(rewrite);
            *model = Some(chat.model.clone());
            // The answer's decisions judge the exchange as forwarded.
            asker
                .context
                .insert("model".to_owned(), chat.model.clone().into());
            if let Some(max) = chat.max_tokens {
                asker.context.insert("max_tokens".to_owned(), max.into());
            }
            if asked != chat.model {
                asker
                    .context
                    .insert("requested_model".to_owned(), asked.into());
            }
        }
        asker.price = prices.get(&chat.model).copied();
        chat.ask_stream_usage();
        let reservation = self
            .reserve(&judge, &caller, &asker, &chat, prompt_chars)
            .await?;
        let ledger = &self.state.0.budgets;

        let mut forward = Request::post(self.target.clone())
            .body(Full::new(Bytes::from(chat.to_bytes())))
            .map_err(|_| Refusal::unavailable())?;
        let headers = forward.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(if chat.stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        for name in PASSED_HEADERS {
            if let Some(value) = parts.headers.get(*name) {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
        if let Some((name, value)) = &self.upstream_key {
            headers.insert(name.clone(), value.clone());
        }
        let answer = match self.client.request(forward).await {
            Ok(answer) => answer,
            Err(e) => {
                ledger.release(reservation).await;
                tracing::warn!(mount = %self.config.name, error = %e, "LLM upstream unreachable");
                return Err(Refusal::new(
                    RefusalKind::Upstream,
                    "the upstream could not be reached",
                ));
            }
        };
        let status = answer.status();
        let mut returned = HeaderMap::new();
        for name in RETURNED_HEADERS {
            if let Some(value) = answer.headers().get(*name) {
                returned.insert(HeaderName::from_static(name), value.clone());
            }
        }
        if !status.is_success() {
            ledger.release(reservation).await;
            return self
                .upstream_error(status, answer.into_body(), returned, content.as_deref())
                .await;
        }
        if chat.stream {
            let tally = (Arc::clone(&caller.tenant), chat.model.clone());
            return Ok(self.stream(
                answer.into_body(),
                judge,
                asker,
                returned,
                reservation,
                tally,
            ));
        }
        let body = match read_limited(answer.into_body(), MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(refusal) => {
                ledger.settle(reservation, None).await;
                return Err(refusal);
            }
        };
        let reviewed = warden_llm::reply::review(api, &body, &asker, &judge, content.as_deref());
        let rewritten = match reviewed {
            Ok((rewritten, usage)) => {
                count_usage(
                    &self.state,
                    &self.config.name,
                    &caller.tenant,
                    &chat.model,
                    usage,
                );
                ledger.settle(reservation, usage).await;
                rewritten
            }
            Err(refusal) => {
                // The answer was made (and paid for) even though the client does not get it.
                ledger.settle(reservation, None).await;
                return Err(refusal);
            }
        };
        let mut response = Response::new(Body::from(rewritten));
        response.headers_mut().extend(returned);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    /// Reserves the exchange's estimate against the deciding policy's budgets: the prompt at
    /// four characters a token, the answer at its `max_tokens`.
    async fn reserve(
        &self,
        judge: &MountJudge,
        caller: &Caller,
        asker: &Asker,
        chat: &ChatRequest,
        prompt_chars: usize,
    ) -> Result<crate::budget::Reservation, Refusal> {
        let policies = self.state.pipeline().policies();
        let Some(policy) = policies.get(Some(&judge.policy)) else {
            return Err(Refusal::unavailable());
        };
        let estimate = estimate(chat, prompt_chars);
        let subject = crate::budget::Subject {
            policy: &judge.policy,
            tenant: &caller.tenant,
            principal: asker.principal.as_deref(),
            model: &chat.model,
            price: self.state.config().llm_prices.get(&chat.model).copied(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.state
            .0
            .budgets
            .reserve(&policy.budgets, &subject, estimate, now)
            .await
            .map_err(|e| match e {
                crate::budget::Refused::Store => Refusal::unavailable(),
                refused => Refusal::new(RefusalKind::Budget, refused.to_string()),
            })
    }

    /// An upstream's error, passed on with its status: its JSON written again (its message is
    /// the provider's, about the request Warden forwarded).
    async fn upstream_error(
        &self,
        status: StatusCode,
        body: hyper::body::Incoming,
        returned: HeaderMap,
        content: Option<&warden::content::ContentPolicy>,
    ) -> Result<Response<Body>, Refusal> {
        let bytes = read_limited(body, 64 * 1024).await?;
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Err(Refusal::new(
                RefusalKind::Upstream,
                format!(
                    "the upstream answered {} without a JSON error",
                    status.as_u16()
                ),
            ));
        };
        warden_llm::redact_error(&mut value, content);
        let mut response = json_response(status, &value);
        response.headers_mut().extend(returned);
        Ok(response)
    }

    /// A streamed answer: rewritten chunk by chunk on a task of its own, sent on as it goes.
    fn stream(
        &self,
        mut body: hyper::body::Incoming,
        judge: MountJudge,
        asker: Asker,
        returned: HeaderMap,
        reservation: crate::budget::Reservation,
        (tenant, model): (Arc<str>, String),
    ) -> Response<Body> {
        let api = self.config.api;
        let state = self.state.clone();
        let idle = Duration::from_millis(self.config.timeout_ms);
        let mut rewriter = StreamRewriter::new(api, asker, self.config.hold_chars);
        let mount = self.config.name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        tokio::spawn(async move {
            let content = judge.content();
            let end = loop {
                let frame = match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        break Err(Refusal::new(
                            RefusalKind::Upstream,
                            "the upstream's stream stalled",
                        ));
                    }
                    Ok(None) => break rewriter.finish(),
                    Ok(Some(Err(_))) => {
                        break Err(Refusal::new(
                            RefusalKind::Upstream,
                            "the upstream's stream failed",
                        ));
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                match rewriter.push(&data, &judge, content.as_deref()) {
                    Ok(out) => {
                        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                            // The client left: nothing more to send; what was reported is
                            // what was spent, else the estimate stands.
                            count_usage(&state, &mount, &tenant, &model, rewriter.usage());
                            state.0.budgets.settle(reservation, rewriter.usage()).await;
                            audit_usage(
                                &state,
                                &mount,
                                &tenant,
                                &model,
                                rewriter.usage(),
                                StreamEnd::Left,
                            )
                            .await;
                            return;
                        }
                    }
                    Err(refusal) => break Err(refusal),
                }
                if rewriter.ended() {
                    break Ok(());
                }
            };
            count_usage(&state, &mount, &tenant, &model, rewriter.usage());
            state.0.budgets.settle(reservation, rewriter.usage()).await;
            let how = if end.is_ok() {
                StreamEnd::Ended
            } else {
                StreamEnd::Cut
            };
            audit_usage(&state, &mount, &tenant, &model, rewriter.usage(), how).await;
            if let Err(refusal) = end {
                tracing::info!(mount = %mount, code = refusal.kind.code(), "LLM stream cut");
                // Counted again, under its cause: the exchange was counted `forwarded`.
                let labels = crate::metrics::LlmRequestLabels {
                    mount: Arc::from(mount.as_str()),
                    tenant: Arc::clone(&tenant),
                    model: model_label(&state, Some(&model)),
                    outcome: refusal.kind.code(),
                };
                state.metrics().llm_requests.get_or_create(&labels).inc();
                if tx
                    .send(Bytes::from(api.error_event(&refusal)))
                    .await
                    .is_err()
                {
                    tracing::debug!(mount = %mount, "the client left before the stream's end");
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
        });
        let mut response = Response::new(Body::from_stream(stream));
        let headers = response.headers_mut();
        headers.extend(returned);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// An exchange's tokens estimated before it is forwarded: the prompt at four characters a
/// token, the answer at its `max_tokens` (or [`crate::budget::DEFAULT_ANSWER_TOKENS`]).
fn estimate(chat: &ChatRequest, prompt_chars: usize) -> warden_llm::Usage {
    warden_llm::Usage {
        input: u64::try_from(prompt_chars.div_ceil(4)).unwrap_or(u64::MAX),
        output: chat
            .max_tokens
            .unwrap_or(crate::budget::DEFAULT_ANSWER_TOKENS),
    }
}

/// The `model` label: a model of the price table by name; any other `unpriced` (`unread` when
/// the request could not be read), so clients cannot mint series.
fn model_label(state: &AppState, model: Option<&str>) -> Arc<str> {
    match model {
        Some(model) if state.config().llm_prices.contains_key(model) => Arc::from(model),
        Some(_) => Arc::from("unpriced"),
        None => Arc::from("unread"),
    }
}

/// Counts the tokens an upstream reported, and their cost when the model has a price.
fn count_usage(
    state: &AppState,
    mount: &str,
    tenant: &Arc<str>,
    model: &str,
    usage: Option<warden_llm::Usage>,
) {
    let Some(usage) = usage else { return };
    let metrics = state.metrics();
    let label = |direction| crate::metrics::LlmUsageLabels {
        mount: Arc::from(mount),
        tenant: Arc::clone(tenant),
        model: model_label(state, Some(model)),
        direction,
    };
    metrics
        .llm_tokens
        .get_or_create(&label("input"))
        .inc_by(usage.input);
    metrics
        .llm_tokens
        .get_or_create(&label("output"))
        .inc_by(usage.output);
    if let Some(price) = state.config().llm_prices.get(model) {
        metrics
            .llm_cost
            .get_or_create(&label("total"))
            .inc_by(price.micro_usd(usage.input, usage.output));
    }
}

/// Records a streamed answer's usage in the audit log ([`crate::audit::audit_stream_usage`]).
/// The answer has been sent by then, so a log that cannot take the entry can only be reported:
/// logged as an error and counted in `warden_audit_failures_total`.
async fn audit_usage(
    state: &AppState,
    mount: &str,
    tenant: &str,
    model: &str,
    usage: Option<warden_llm::Usage>,
    end: StreamEnd,
) {
    let usage = usage.map(|u| {
        let cost = state
            .config()
            .llm_prices
            .get(model)
            .map(|price| price.micro_usd(u.input, u.output));
        (u.input, u.output, cost)
    });
    let audit = state.effects().audit.as_ref();
    if crate::audit::audit_stream_usage(audit, mount, tenant, model, usage, end)
        .await
        .is_err()
    {
        state.metrics().audit_failures.inc();
        tracing::error!(mount = %mount, "a streamed answer's usage could not be audited");
    }
}

async fn read_limited(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, Refusal> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|_| {
            Refusal::new(
                RefusalKind::Upstream,
                format!("the upstream's answer failed or is larger than {limit} bytes"),
            )
        })
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("openai"));
        assert!(super::valid_name("a.b-c_1"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a/b"));
    }
}
