//! The MCP Streamable HTTP proxy mounted in the daemon: one route `/mcp/{name}` per configured
//! upstream (`mcp_upstreams` in the configuration), behind the same authentication, rate and
//! concurrency layers as `/v1/*`.
//!
//! Each upstream gets one [`Enforcer`] whose decisions go through the daemon's decision pipeline,
//! as `/v1/decide`'s do ([`MountDecider`]): the upstream's policy by name from the current policy
//! set (a reload applies at once), sessions namespaced by tenant (`tenant U+001F session`), and
//! every effect: the decision is logged and counted, a decision that failed closed is counted,
//! and with an audit log each `tool_call` and `tool_result` decision is appended to it before
//! the message goes on (an append that fails, or a full queue with `on_full: deny`, fails
//! closed). Sessions and tool pins are untouched by a reload.
//!
//! The principal is the authenticated API key's tenant (none for anonymous callers); Warden's
//! own credentials (`Authorization`, `X-Api-Key`) are removed before forwarding.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode};
use axum::routing::any;
use warden::CompiledPolicy;
use warden_mcp::http::{Identity, ProxyConfig, ProxyState, Uri};
use warden_mcp::{Enforcer, MemoryPinStore, PinStore};
use warden_store::RedbPinStore;

pub use warden_mcp::http::UpstreamConfig;

use crate::auth::Caller;
use crate::snapshot::{PolicyKind, Snapshot};
use crate::{AppState, StateMode};

/// Set by the daemon after authentication (any value sent by the client is replaced) and
/// removed before forwarding: the authenticated tenant.
const TENANT_HEADER: &str = "x-warden-internal-tenant";
/// The principal a verified client certificate makes (`tls.identity: principal`), passed the
/// same way; removed from what clients send and from what the upstream receives.
const PRINCIPAL_HEADER: &str = "x-warden-internal-principal";
/// The session a verified JWT names (`session_jwt`), passed the same way.
const SESSION_HEADER: &str = "x-warden-internal-session";
/// The Warden session of an upstream without a configured `session`: one per tenant (the key's
/// identity), shared by every MCP session and upstream of that tenant, so a taint follows the
/// agent from one upstream to another.
const DEFAULT_SESSION: &str = "mcp";
/// The tenant of requests without a key (as the auth layer names it).
const ANONYMOUS: &str = "anonymous";
/// The pin database's name, next to `state_file` (with `state: file`): a redb file of its own,
/// which `warden mcp approve` opens while the daemon runs (the session database is the
/// daemon's alone).
pub const PINS_FILE: &str = "mcp-pins.redb";
/// The JSON pin file of earlier versions, next to `state_file`: imported once.
pub const LEGACY_PINS_FILE: &str = "mcp-pins.json";

/// One mounted upstream.
struct Upstream {
    config: UpstreamConfig,
    state: AppState,
    proxy: ProxyState,
    /// With `session_jwt`: the token's header and the claim naming the session, and its
    /// verifier (with the key set cache).
    session_jwt: Option<JwtSession>,
}

/// The Warden session from a claim of a verified JWT (`session_jwt`).
struct JwtSession {
    header: HeaderName,
    claim: String,
    verifier: warden_envoy::jwt::JwtValidation,
    max_bytes: usize,
}

impl JwtSession {
    fn compile(config: &warden_mcp::http::SessionJwt, max_bytes: usize) -> Result<Self, String> {
        let header = HeaderName::try_from(config.header.as_str()).map_err(|_| {
            format!(
                "session_jwt.header `{}` is not a header name",
                config.header
            )
        })?;
        if config.claim.is_empty() {
            return Err("session_jwt.claim may not be empty".to_owned());
        }
        let verifier = warden_envoy::jwt::JwtValidation::compile(
            warden_envoy::jwt::JwtConfig {
                jwks_url: config.jwks_url.clone(),
                issuer: config.issuer.clone(),
                audiences: config.audiences.clone(),
                algorithms: config.algorithms.clone(),
                leeway_secs: config.leeway_secs,
                ca_file: config.ca_file.clone(),
                ..warden_envoy::jwt::JwtConfig::default()
            },
            "session_jwt",
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            header,
            claim: config.claim.clone(),
            verifier,
            max_bytes,
        })
    }

    /// The session the request's token names, or the answer refusing the request: 401 for a
    /// missing or bad token, 503 when the key set cannot be had (never a pass).
    async fn session(&self, headers: &HeaderMap) -> Result<HeaderValue, Response<Body>> {
        let refused = |why: &str| {
            let mut answer = json_rpc_error(
                StatusCode::UNAUTHORIZED,
                -32001,
                &format!(
                    "the `{}` header must hold a valid token naming the Warden session: {why}",
                    self.header
                ),
            );
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\", error=\"invalid_token\""),
            );
            answer
        };
        let token = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("no token"))?;
        let claims = match self.verifier.verify(token).await {
            Ok(claims) => claims,
            Err(warden_envoy::jwt::Refusal::Token(why)) => return Err(refused(why)),
            Err(warden_envoy::jwt::Refusal::Keys) => {
                return Err(json_rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -32603,
                    "the session token's keys cannot be fetched now",
                ));
            }
        };
        claims
            .get(&self.claim)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= self.max_bytes)
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| {
                refused(&format!(
                    "its `{}` claim must be 1 to {} visible ASCII bytes",
                    self.claim, self.max_bytes
                ))
            })
    }
}

/// Decides an upstream's MCP requests through the daemon's pipeline with the upstream's policy.
/// The tenant is the request's principal (set from the API key by [`identify`]); the enforcer is
/// synchronous, so the worker thread waits for the decision's effects (the audit append) in
/// place, as it would for a slow upstream.
struct MountDecider {
    state: AppState,
    policy: String,
}

impl warden_mcp::Decider for MountDecider {
    fn decide(&self, request: &warden::Request) -> Result<warden::Decision, String> {
        let tenant = request.principal.as_deref().unwrap_or(ANONYMOUS);
        let caller = warden_core::pipeline::Caller {
            tenant: Some(tenant),
            policy: Some(&self.policy),
            request_id: None,
            tokens: false,
        };
        let result = crate::inline::run_here(self.state.pipeline().decide(&caller, request))?;
        result.map_err(|e| match e {
            warden::PipelineError::Effect(e) => format!("{}: {}", e.code, e.message),
            other => other.to_string(),
        })
    }

    fn approval_status(&self, id: &str) -> Result<Option<warden::state::ApprovalStatus>, String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let found = crate::inline::run_here(self.state.pipeline().approvals().get(id, now_ms))?;
        found
            .map(|approval| approval.map(|a| a.status))
            .map_err(|e| e.to_string())
    }

    fn pause(&self, pause: std::time::Duration) {
        // A held call waiting for its approval must not stall the runtime's other requests
        // (the approval itself among them): the worker's other tasks move to another thread.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| std::thread::sleep(pause));
        } else {
            std::thread::sleep(pause);
        }
    }

    fn policy(&self) -> Option<Arc<CompiledPolicy>> {
        self.state
            .pipeline()
            .policies()
            .get(Some(&self.policy))
            .cloned()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn warden_policy(snapshot: &Snapshot, name: &str) -> Result<Arc<CompiledPolicy>, String> {
    match snapshot.policies.get(name).map(|p| &p.kind) {
        Some(PolicyKind::Warden(policy)) => Ok(Arc::clone(policy)),
        Some(PolicyKind::Rego(..)) => Err(format!(
            "policy `{name}` is a Rego policy; MCP upstreams need a Warden policy"
        )),
        None => Err(format!("policy `{name}` is not loaded")),
    }
}

fn pin_store(state: &AppState) -> Result<Arc<dyn PinStore>, String> {
    let config = state.config();
    match config.state {
        StateMode::Memory => Ok(Arc::new(MemoryPinStore::new())),
        StateMode::File => {
            let dir = config
                .state_file
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."));
            let store = RedbPinStore::open(dir.join(PINS_FILE)).map_err(|e| e.to_string())?;
            store
                .import_json(dir.join(LEGACY_PINS_FILE))
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
    }
}

/// Where an upstream's Warden session comes from.
#[derive(Clone)]
enum SessionSource {
    /// One fixed session (`session`), or the key's identity ([`DEFAULT_SESSION`]).
    Fixed(String),
    /// The value of a request header (`session_header`), required; at most `max_bytes`.
    Header { name: HeaderName, max_bytes: usize },
    /// The claim of the verified JWT (`session_jwt`), which the mount checked and passed in
    /// [`SESSION_HEADER`].
    Jwt,
}

impl SessionSource {
    fn of(config: &UpstreamConfig, max_bytes: usize) -> Result<Self, String> {
        let sources = [
            config.session.is_some(),
            config.session_header.is_some(),
            config.session_meta.is_some(),
            config.session_jwt.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(format!(
                "mcp_upstreams `{}`: `session`, `session_header`, `session_meta` and `session_jwt` exclude each other",
                config.name
            ));
        }
        if config.session_jwt.is_some() {
            return Ok(Self::Jwt);
        }
        match (&config.session_header, &config.session) {
            (Some(_), Some(_)) => Err(format!(
                "mcp_upstreams `{}`: `session` and `session_header` exclude each other",
                config.name
            )),
            (Some(name), None) => {
                let name = HeaderName::try_from(name.as_str()).map_err(|_| {
                    format!(
                        "mcp_upstreams `{}`: `session_header` `{name}` is not a header name",
                        config.name
                    )
                })?;
                Ok(Self::Header { name, max_bytes })
            }
            (None, session) => Ok(Self::Fixed(
                session.as_deref().unwrap_or(DEFAULT_SESSION).to_owned(),
            )),
        }
    }

    fn session(&self, headers: &HeaderMap) -> Result<String, String> {
        match self {
            Self::Fixed(session) => Ok(session.clone()),
            // Set only by the mount, after the token verified (a client's is removed).
            Self::Jwt => headers
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| "no verified session token".to_owned()),
            Self::Header { name, max_bytes } => {
                let value = headers.get(name).ok_or_else(|| {
                    format!("the `{name}` header (the Warden session) is required")
                })?;
                let value = value
                    .to_str()
                    .ok()
                    .filter(|v| !v.is_empty() && v.len() <= *max_bytes)
                    .ok_or_else(|| {
                        format!("the `{name}` header must be 1 to {max_bytes} visible ASCII bytes")
                    })?;
                Ok(value.to_owned())
            }
        }
    }
}

fn identify(source: SessionSource) -> warden_mcp::http::Identify {
    Arc::new(move |headers: &HeaderMap| {
        let tenant = headers
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(ANONYMOUS);
        // The client certificate's identity when it makes the principal, else the key's
        // tenant.
        let principal = headers
            .get(PRINCIPAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| (tenant != ANONYMOUS).then(|| tenant.to_owned()));
        // The key's identity, a configured session or the configured header, never the
        // client's `Mcp-Session-Id`: a client picks that one, and a new one would clear its
        // taints. The pipeline namespaces it by tenant, so a header cannot reach another
        // tenant's session.
        Ok(Identity {
            principal,
            session: Some(source.session(headers)?),
        })
    })
}

fn build(state: &AppState, pins: &Arc<dyn PinStore>) -> Result<Vec<Arc<Upstream>>, String> {
    let mut built: Vec<Arc<Upstream>> = Vec::new();
    for config in &state.config().mcp_upstreams {
        let name = &config.name;
        if !valid_name(name) {
            return Err(format!(
                "mcp_upstreams: invalid name `{name}` (letters, digits, `-`, `_`, `.`)"
            ));
        }
        if built.iter().any(|u| &u.config.name == name) {
            return Err(format!("mcp_upstreams: the name `{name}` is used twice"));
        }
        let what = format!("mcp_upstreams `{name}`");
        built.push(Arc::new(mount(state, pins, config.clone(), &what)?));
    }
    Ok(built)
}

/// One upstream behind an enforcer deciding with `config.policy`; `what` names it in errors.
fn mount(
    state: &AppState,
    pins: &Arc<dyn PinStore>,
    config: UpstreamConfig,
    what: &str,
) -> Result<Upstream, String> {
    let uri: Uri = config
        .url
        .parse()
        .map_err(|e| format!("{what}: invalid url: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    if !(https || uri.scheme_str() == Some("http")) || uri.authority().is_none() {
        return Err(format!(
            "{what}: the url must be http://host:port/path or https://host:port/path"
        ));
    }
    if config.ca_file.is_some() && !https {
        return Err(format!("{what}: `ca_file` applies to an https:// url only"));
    }
    warden_policy(&state.snapshot(), &config.policy).map_err(|e| format!("{what}: {e}"))?;
    let decider = MountDecider {
        state: state.clone(),
        policy: config.policy.clone(),
    };
    let enforcer = Arc::new(
        Enforcer::new(Arc::new(decider), Arc::clone(pins), config.name.clone()).with_approval_wait(
            std::time::Duration::from_millis(state.config().approvals.wait_ms),
        ),
    );
    let mut proxy = ProxyConfig::new(uri, Identity::default());
    let max_bytes = state.config().max_identifier_bytes;
    proxy.identify = identify(SessionSource::of(&config, max_bytes)?);
    if let Some(key) = &config.session_meta {
        if key.is_empty() || key.len() > max_bytes {
            return Err(format!(
                "{what}: `session_meta` must be 1 to {max_bytes} bytes"
            ));
        }
        proxy.session_meta = Some(warden_mcp::http::MetaSession {
            key: key.clone(),
            max_bytes,
        });
    }
    if https {
        proxy.tls = Some(
            warden_mcp::upstream_tls::client_config(config.ca_file.as_deref())
                .map_err(|e| format!("{what}: TLS: {e}"))?,
        );
    }
    let session_jwt = match &config.session_jwt {
        Some(jwt) => Some(JwtSession::compile(jwt, max_bytes).map_err(|e| format!("{what}: {e}"))?),
        None => None,
    };
    proxy.strip_headers = vec![
        header::AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static(TENANT_HEADER),
        HeaderName::from_static(PRINCIPAL_HEADER),
        HeaderName::from_static(SESSION_HEADER),
    ];
    // The session token is Warden's credential, like the API key.
    if let Some(jwt) = &session_jwt {
        proxy.strip_headers.push(jwt.header.clone());
    }
    Ok(Upstream {
        config,
        state: state.clone(),
        proxy: ProxyState::new(enforcer, proxy),
        session_jwt,
    })
}

/// Whether anything is mounted: configured upstreams, or tenants' own (with a database).
fn mounts_anything(state: &AppState) -> bool {
    !state.config().mcp_upstreams.is_empty() || state.database().is_some()
}

/// Tenants' own upstreams, served at `/mcp`: each tenant's `mcp_upstream` from the database,
/// decided by the caller's key's policy. Mounted on first use and kept per tenant, policy and
/// URL, so a changed upstream (any instance's `warden tenants set`, announced to all) is used
/// from the next request on.
struct TenantMounts {
    state: AppState,
    pins: Arc<dyn PinStore>,
    mounted: moka::sync::Cache<MountKey, Arc<Upstream>>,
}

/// A tenant mount's tenant, policy and upstream URL.
type MountKey = (Arc<str>, Arc<str>, Arc<str>);

/// Tenant mounts kept at once, at most.
const MAX_TENANT_MOUNTS: u64 = 10_000;

impl TenantMounts {
    async fn handle(&self, caller: Caller, request: Request<Body>) -> Response<Body> {
        let Some(url) = caller
            .snapshot
            .tenant_upstreams
            .get(&caller.tenant)
            .cloned()
        else {
            return json_rpc_error(
                StatusCode::NOT_FOUND,
                warden_mcp::message::INVALID_REQUEST,
                "no MCP upstream is set for this tenant (warden tenants set --mcp-upstream)",
            );
        };
        let key = (
            Arc::clone(&caller.tenant),
            Arc::clone(&caller.policy),
            Arc::clone(&url),
        );
        let upstream = match self.mounted.get(&key) {
            Some(upstream) => upstream,
            None => {
                let config = UpstreamConfig {
                    name: format!("tenant/{}", caller.tenant),
                    url: url.to_string(),
                    policy: caller.policy.to_string(),
                    session: None,
                    session_header: None,
                    session_meta: None,
                    session_jwt: None,
                    ca_file: None,
                };
                let what = format!("tenant `{}`'s MCP upstream", caller.tenant);
                match mount(&self.state, &self.pins, config, &what) {
                    Ok(upstream) => {
                        let upstream = Arc::new(upstream);
                        self.mounted.insert(key, Arc::clone(&upstream));
                        upstream
                    }
                    Err(e) => {
                        tracing::error!(tenant = %caller.tenant, error = %e, "tenant MCP upstream not mounted");
                        return unavailable("this tenant's MCP upstream cannot be mounted");
                    }
                }
            }
        };
        upstream.handle(caller, request).await
    }
}

/// Checks the `mcp_upstreams` configuration against the loaded policies (names, URLs,
/// policies that exist and are Warden policies, the pin file): the daemon refuses to start
/// otherwise.
pub fn check(state: &AppState) -> Result<(), String> {
    if state.config().mcp_upstreams.is_empty() {
        return Ok(());
    }
    build(state, &pin_store(state)?).map(|_| ())
}

/// The `/mcp/{name}` routes of every configured upstream (none when the configuration is
/// invalid: [`check`] reports why at start).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if !mounts_anything(state) {
        return Router::new();
    }
    let pins = match state.mcp_pins_or_init(|| pin_store(state)) {
        Ok(pins) => pins,
        Err(e) => {
            tracing::error!(error = %e, "MCP upstreams not mounted");
            return Router::new();
        }
    };
    let upstreams = build(state, &pins).unwrap_or_else(|e| {
        tracing::error!(error = %e, "MCP upstreams not mounted");
        Vec::new()
    });
    state.metrics().mcp.set(
        upstreams
            .iter()
            .map(|u| (u.config.name.clone(), Arc::clone(u.proxy.enforcer())))
            .collect(),
    );
    let mut router = Router::new();
    if state.database().is_some() {
        let tenants = Arc::new(TenantMounts {
            state: state.clone(),
            pins: Arc::clone(&pins),
            mounted: moka::sync::Cache::new(MAX_TENANT_MOUNTS),
        });
        router = router.route(
            "/mcp",
            any(
                move |Extension(caller): Extension<Caller>, request: Request<Body>| {
                    let tenants = Arc::clone(&tenants);
                    async move { tenants.handle(caller, request).await }
                },
            ),
        );
    }
    for upstream in upstreams {
        tracing::info!(
            name = %upstream.config.name,
            url = %upstream.config.url,
            policy = %upstream.config.policy,
            "MCP upstream mounted"
        );
        let path = format!("/mcp/{}", upstream.config.name);
        router = router.route(
            &path,
            any(
                move |Extension(caller): Extension<Caller>, request: Request<Body>| {
                    let upstream = Arc::clone(&upstream);
                    async move { upstream.handle(caller, request).await }
                },
            ),
        );
    }
    router
}

fn unavailable(message: &str) -> Response<Body> {
    json_rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        warden_mcp::message::DECISION_FAILED,
        message,
    )
}

fn json_rpc_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message},
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl Upstream {
    async fn handle(&self, caller: Caller, mut request: Request<Body>) -> Response<Body> {
        if let Err(e) = warden_policy(&self.state.snapshot(), &self.config.policy) {
            tracing::error!(name = %self.config.name, error = %e, "MCP upstream has no policy; refusing");
            return unavailable("the policy for this MCP upstream is not loaded");
        }
        let headers = request.headers_mut();
        headers.remove(TENANT_HEADER);
        headers.remove(PRINCIPAL_HEADER);
        headers.remove(SESSION_HEADER);
        if let Some(jwt) = &self.session_jwt {
            match jwt.session(headers).await {
                Ok(session) => {
                    headers.insert(SESSION_HEADER, session);
                }
                Err(refused) => return refused,
            }
        }
        if let Ok(tenant) = HeaderValue::from_str(&caller.tenant) {
            headers.insert(TENANT_HEADER, tenant);
        }
        if let Some(principal) = &caller.certified_principal {
            // An identity that is not a header value decides nothing: fail closed.
            match HeaderValue::from_str(principal) {
                Ok(value) => {
                    headers.insert(PRINCIPAL_HEADER, value);
                }
                Err(_) => {
                    return json_rpc_error(
                        StatusCode::FORBIDDEN,
                        -32001,
                        "the client certificate's identity cannot be used as a principal",
                    );
                }
            }
        }
        let Some(telemetry) = self.state.telemetry() else {
            return warden_mcp::http::handle(State(self.proxy.clone()), request).await;
        };
        // The upstream sees Warden's span as its parent, and the decisions taken on the way
        // are its children.
        let cx = telemetry.start_proxy(
            &opentelemetry::Context::current(),
            &self.config.name,
            request.headers_mut(),
        );
        let response = opentelemetry::context::FutureExt::with_context(
            warden_mcp::http::handle(State(self.proxy.clone()), request),
            cx.clone(),
        )
        .await;
        crate::telemetry::Telemetry::end_proxy(&cx, response.status().as_u16());
        response
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("everything"));
        assert!(super::valid_name("a.b-c_1"));
        assert!(!super::valid_name(""));
        assert!(!super::valid_name("a/b"));
        assert!(!super::valid_name("{x}"));
    }
}
