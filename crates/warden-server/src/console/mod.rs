//! The console at `/ui` (docs/serve.md, "Console"): a page built into the binary (HTML, JS and
//! CSS, no CDN) showing live decisions, pending approvals (approve, deny), sessions, MCP tool
//! definitions held for pin approval ([`pins`]) and the loaded policies, for
//! admin keys only.
//!
//! Access: `POST /ui/login` exchanges an admin API key (checked in constant time by the key
//! index, counted towards the address's lockout when wrong) for a random session token in an
//! `HttpOnly`, `SameSite=Strict` cookie. Logins are kept in memory by the SHA-256 of their token,
//! so looking one up leaks nothing about the token through timing, and end when the key is
//! revoked or loses its role. Each login has its own CSRF token, which every state-changing
//! request must carry in `X-CSRF-Token` (compared in constant time; missing or wrong: 403).
//!
//! The live stream is a bounded broadcast channel of batches: decisions are numbered and
//! collected, and every [`BATCH_WINDOW`] one batch (at most a quarter of
//! `console.events_buffer` decisions) goes to the viewers, which hold four. A viewer further
//! behind loses the oldest batches, sees the gap in the numbers, is told how many (a `dropped`
//! event), and they are counted in `warden_console_events_dropped`; nothing grows with a slow
//! viewer. Within a window a viewer writes at most its share of `console.live_events_per_sec`
//! decisions whole and counts the rest per verdict (`skipped`). With no viewer, publishing is
//! one atomic load. Events carry names and outcomes
//! only (tool, verdict, rule, tenant, principal, session id, latency): never arguments,
//! results, text or keys.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;
use warden::state::KeyRole;
use warden::{Decision, Request as Decided};
use warden_core::pipeline::Caller;

mod pins;

use crate::AppState;
use crate::auth::{Admin, Client};
use crate::config::ConsoleConfig;
use crate::error::{ApiError, ErrorCode};
use crate::snapshot::Displays;

/// The login cookie's name.
const COOKIE: &str = "warden_console";
/// The header carrying the CSRF token on state-changing requests.
const CSRF_HEADER: &str = "x-csrf-token";
/// Logins kept at once, at most: one more (after the expired are purged) is refused.
const MAX_LOGINS: usize = 1024;
/// Longest API key accepted at login, in bytes (keys are far shorter).
const MAX_KEY_BYTES: usize = 256;
/// Approvals the console lists, at most.
const MAX_APPROVALS: usize = 200;
/// How often a viewer takes the decisions published meanwhile and writes them: a live view
/// needs no finer grain, and one batch per window instead of one message per decision keeps
/// ten viewers from costing the deciding threads ten receives and writes per decision.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// A comment is written after this long without an event, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest filter value accepted, in bytes.
const MAX_FILTER_BYTES: usize = 256;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// Only the page's own scripts, styles and connections: no inline script, no other origin, no
/// framing (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// One delivered decision as the console shows it: names and outcomes, never values.
#[derive(Debug, Serialize)]
pub(crate) struct LiveEvent {
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
    tenant: Option<String>,
    principal: Option<String>,
    session: Option<String>,
    tool: Option<String>,
    kind: &'static str,
    verdict: &'static str,
    rule: Option<Arc<str>>,
    policy: Arc<str>,
    latency_us: u64,
    /// The request fields the policy marks as displayable (`display:`), by pointer: absent
    /// without one. A field a content detector found something in is withheld.
    #[serde(skip_serializing_if = "Option::is_none")]
    shown: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a displayable field shows instead of a value a content detector found something in.
const WITHHELD: &str = "[withheld: content finding]";

/// The longest string a displayable field shows, in chars (longer ones are cut and marked).
const MAX_SHOWN_CHARS: usize = 200;

/// What `pointer` (`/name/...`) resolves to in the object `map`.
fn member_pointer<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    pointer: &str,
) -> Option<&'a serde_json::Value> {
    let rest = pointer.strip_prefix('/')?;
    let (first, tail) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    let key = first.replace("~1", "/").replace("~0", "~");
    let value = map.get(&key)?;
    if tail.is_empty() {
        Some(value)
    } else {
        value.pointer(&format!("/{tail}"))
    }
}

/// `request`'s fields at `pointers`, each as the console may show it: a scalar as it is (a
/// string cut at [`MAX_SHOWN_CHARS`]), an object or array by its size only, and anything a
/// content finding points into withheld.
fn shown_fields(
    pointers: &[Box<str>],
    request: &Decided,
    decision: &Decision,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for pointer in pointers {
        let value = if let Some(rest) = pointer.strip_prefix("/args") {
            request.args.as_ref().and_then(|args| args.pointer(rest))
        } else if let Some(rest) = pointer.strip_prefix("/context") {
            request
                .context
                .as_ref()
                .and_then(|context| member_pointer(context, rest))
        } else {
            None
        };
        let Some(value) = value else {
            continue;
        };
        let flagged = decision.findings.iter().any(|f| {
            f.path == **pointer
                || f.path
                    .strip_prefix(&**pointer)
                    .is_some_and(|tail| tail.starts_with('/'))
        });
        let shown = if flagged {
            Value::String(WITHHELD.to_owned())
        } else {
            match value {
                Value::String(s) if s.chars().count() > MAX_SHOWN_CHARS => {
                    let cut: String = s.chars().take(MAX_SHOWN_CHARS).collect();
                    Value::String(format!("{cut}…"))
                }
                Value::Array(items) => Value::String(format!("[{} items]", items.len())),
                Value::Object(members) => Value::String(format!("{{{} members}}", members.len())),
                scalar => scalar.clone(),
            }
        };
        out.insert(pointer.to_string(), shown);
    }
    out
}

/// Decisions published together: the viewers take them in one receive rather than one per
/// decision (ten viewers would otherwise touch every decision's slot ten times).
#[derive(Debug)]
struct Batch {
    /// The sequence number of the first decision published into it: a viewer that finds a
    /// gap before it missed that many (lost to a full batch, or to falling behind).
    first: u64,
    events: Vec<LiveEvent>,
}

/// Batches a slow viewer can fall behind by before it loses the oldest.
const BATCHES_HELD: usize = 4;

/// Decisions waiting for the next batch, and the sequence number of the next one published.
#[derive(Debug, Default)]
struct Pending {
    next: u64,
    /// The sequence number of `events[0]`.
    first: u64,
    events: Vec<LiveEvent>,
}

/// The live stream's sending side, held by the pipeline's effects; cheap to clone.
#[derive(Clone)]
pub(crate) struct Live {
    sender: broadcast::Sender<Arc<Batch>>,
    pending: Arc<parking_lot::Mutex<Pending>>,
    /// Decisions one batch holds, at most; more in one window are counted, not kept.
    per_batch: usize,
    /// The displayable fields of the policies in force (swapped at every reload).
    displays: Arc<arc_swap::ArcSwap<Displays>>,
}

impl Live {
    /// A stream holding about `buffer` decisions for its viewers ([`BATCHES_HELD`] batches of a
    /// share each).
    fn new(buffer: usize) -> Self {
        let (sender, _) = broadcast::channel(BATCHES_HELD);
        Self {
            sender,
            pending: Arc::default(),
            per_batch: (buffer / BATCHES_HELD).max(1),
            displays: Arc::default(),
        }
    }

    /// Takes the displayable fields of the policies now in force.
    pub(crate) fn set_displays(&self, displays: Displays) {
        self.displays.store(Arc::new(displays));
    }

    /// Sends the decisions published since the last batch to the viewers (called by every
    /// viewer once per window: whichever comes first sends them).
    fn flush(&self) {
        let batch = {
            let mut pending = self.pending.lock();
            if pending.events.is_empty() {
                return;
            }
            Batch {
                first: pending.first,
                events: std::mem::take(&mut pending.events),
            }
        };
        // No receiver left meanwhile: nobody to tell.
        let _ = self.sender.send(Arc::new(batch));
    }

    /// Sends a delivered decision to the viewers; nothing is built without one.
    pub(crate) fn publish(
        &self,
        caller: &Caller<'_>,
        request: &Decided,
        decision: &Decision,
        latency: Duration,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let event = LiveEvent {
            at_ms: now_ms(),
            tenant: caller.tenant.map(str::to_owned),
            principal: request.principal.clone(),
            session: request.session.clone(),
            tool: request.tool.clone(),
            kind: request.kind.as_str(),
            verdict: decision.verdict.as_str(),
            rule: decision.rule.clone(),
            policy: Arc::clone(&decision.policy.name),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            shown: self
                .displays
                .load()
                .get(&decision.policy.digest)
                .filter(|pointers| !pointers.is_empty())
                .map(|pointers| shown_fields(pointers, request, decision)),
        };
        self.push(event);
    }

    /// Numbers `event` and keeps it for the next batch if the batch has room.
    fn push(&self, event: LiveEvent) {
        let mut pending = self.pending.lock();
        if pending.events.is_empty() {
            pending.first = pending.next;
        }
        // Numbered even when the batch is full: the viewers see the gap after it and count
        // those missed.
        if pending.events.len() < self.per_batch {
            pending.events.push(event);
        }
        pending.next += 1;
    }
}

/// One console login.
pub(crate) struct Login {
    /// The admin key it was made with (the approver's identity).
    pub(crate) key_id: Arc<str>,
    /// Its CSRF token (hex).
    csrf: String,
    expires: Instant,
    /// Set at logout: open live streams end at their next event.
    ended: AtomicBool,
}

/// The console's state: the live stream and the logins.
pub(crate) struct Console {
    live: Live,
    logins: parking_lot::Mutex<HashMap<[u8; 32], Arc<Login>>>,
    viewers: Arc<AtomicUsize>,
    config: ConsoleConfig,
}

impl Console {
    /// The console `config` asks for (`None`: disabled).
    pub(crate) fn new(config: ConsoleConfig) -> Option<Self> {
        config.enabled.then(|| Self {
            live: Live::new(config.events_buffer),
            logins: parking_lot::Mutex::new(HashMap::new()),
            viewers: Arc::new(AtomicUsize::new(0)),
            config,
        })
    }

    /// The live stream's sending side, for the effects.
    pub(crate) fn live(&self) -> Live {
        self.live.clone()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a console token");
        ApiError::internal()
    })?;
    Ok(hex::encode(bytes))
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn console_of(state: &AppState) -> Result<&Console, ApiError> {
    // Routes are only mounted when the console is on; this is a wiring mistake otherwise.
    state.console().ok_or_else(ApiError::not_found)
}

/// The token in the request's login cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The login a request carries, still valid: unexpired, not ended, its key still an admin key
/// in the policy set in force (a revoked key ends its logins).
pub(crate) fn login_of(state: &AppState, headers: &HeaderMap) -> Result<Arc<Login>, ApiError> {
    let console = console_of(state)?;
    let token = cookie_token(headers).ok_or_else(ApiError::unauthorized)?;
    let hash = token_hash(token);
    let login = {
        let mut logins = console.logins.lock();
        let Some(login) = logins.get(&hash).cloned() else {
            return Err(ApiError::unauthorized());
        };
        if login.expires <= Instant::now() || login.ended.load(Ordering::Acquire) {
            logins.remove(&hash);
            return Err(ApiError::unauthorized());
        }
        login
    };
    let snapshot = state.snapshot();
    match snapshot.keys.get(&login.key_id) {
        Some(key) if key.record.role == KeyRole::Admin => Ok(login),
        _ => {
            login.ended.store(true, Ordering::Release);
            console.logins.lock().remove(&hash);
            Err(ApiError::unauthorized())
        }
    }
}

/// [`login_of`] for a state-changing request: its `X-CSRF-Token` must be the login's (403
/// otherwise).
pub(crate) fn login_with_csrf(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Login>, ApiError> {
    let login = login_of(state, headers)?;
    let presented = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Equal lengths are compared in constant time; the length itself is public (64).
    if bool::from(presented.ct_eq(login.csrf.as_bytes())) {
        Ok(login)
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "missing or wrong `X-CSRF-Token`: reload the console",
        ))
    }
}

/// Security headers on every console answer; the API's are never cached.
async fn headers_layer(req: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The console's routes (none when `console.enabled` is false).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if state.console().is_none() {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/api/session", get(session))
        .route("/ui/api/policies", get(policies))
        .route("/ui/api/approvals", get(approvals))
        .route("/ui/api/approvals/{id}/approve", post(approve))
        .route("/ui/api/approvals/{id}/deny", post(deny))
        .route("/ui/api/sessions/view", get(session_view))
        .route("/ui/api/sessions/clear-taint", post(clear_taint))
        .route("/ui/api/pins", get(pins::held))
        .route("/ui/api/pins/approve", post(pins::approve))
        .route("/ui/events", get(events))
        .layer(axum::middleware::from_fn(headers_layer))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    key: String,
}

/// `POST /ui/login` with `{"key": "..."}` (JSON only: a cross-site form cannot send it without
/// a preflight, which is never granted, so nobody can be logged in behind their back).
async fn login(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let console = console_of(&state)?;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = req.headers().clone();
    let client = Client::of(&state, &headers, peer, None);
    crate::auth::check_lockout(&state, client)?;
    let body = crate::body::json_body(&state, req, false).await?;
    let LoginBody { key } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "field `key`: an API key of 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    let snapshot = state.snapshot();
    let key_id = match snapshot.keys.verify(&key) {
        Some(verified) if verified.record.role == KeyRole::Admin => Arc::clone(&verified.id),
        Some(verified) => {
            tracing::warn!(key_id = %verified.id, "console login with a key without the admin role");
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the console needs an API key with the `admin` role",
            ));
        }
        None => {
            state.metrics().auth_failures.inc();
            tracing::warn!("console login with an unknown or revoked key");
            crate::auth::failed_authentication(&state, client).await;
            return Err(ApiError::unauthorized());
        }
    };
    let token = random_hex()?;
    let csrf = random_hex()?;
    let ttl = Duration::from_secs(console.config.login_ttl_secs);
    {
        let mut logins = console.logins.lock();
        let now = Instant::now();
        logins.retain(|_, l| l.expires > now && !l.ended.load(Ordering::Acquire));
        if logins.len() >= MAX_LOGINS {
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                format!("{MAX_LOGINS} console logins are open: log out elsewhere or wait"),
            ));
        }
        logins.insert(
            token_hash(&token),
            Arc::new(Login {
                key_id: Arc::clone(&key_id),
                csrf: csrf.clone(),
                expires: now + ttl,
                ended: AtomicBool::new(false),
            }),
        );
    }
    tracing::info!(key_id = %key_id, "console login");
    // `Secure` when the daemon serves TLS: the browser then never sends it in clear.
    let secure = if state.config().tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    let cookie = HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal())?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({ "key_id": key_id, "csrf": csrf })),
    )
        .into_response())
}

/// `POST /ui/logout` (CSRF token needed): ends the login and its live streams.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let login = login_with_csrf(&state, &headers)?;
    login.ended.store(true, Ordering::Release);
    if let (Ok(console), Some(token)) = (console_of(&state), cookie_token(&headers)) {
        console.logins.lock().remove(&token_hash(token));
    }
    tracing::info!(key_id = %login.key_id, "console logout");
    let clear =
        HeaderValue::from_static("warden_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// `GET /ui/api/session`: who is logged in, and the CSRF token for the page's requests.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let login = login_of(&state, &headers)?;
    let viewers = console_of(&state)?.viewers.load(Ordering::Relaxed);
    Ok(axum::Json(json!({
        "key_id": login.key_id,
        "csrf": login.csrf,
        "viewers": viewers,
        "dropped": state.metrics().console_dropped.get(),
    }))
    .into_response())
}

/// `GET /ui/api/policies`: name, kind, version, digest and load time of each loaded policy.
async fn policies(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    login_of(&state, &headers)?;
    let snapshot = state.snapshot();
    let mut list: Vec<Value> = snapshot
        .policies
        .values()
        .map(|p| {
            json!({
                "name": p.name,
                "kind": match p.kind {
                    crate::PolicyKind::Warden(_) => "warden",
                    crate::PolicyKind::Rego(..) => "rego",
                },
                "version": p.version,
                "digest": p.digest,
                "loaded_at": p.loaded_at,
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(axum::Json(json!({ "policies": list })).into_response())
}

/// `GET /ui/api/approvals`: the pending approvals, oldest first (the arguments' hash only).
async fn approvals(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    login_of(&state, &headers)?;
    let approvals = state
        .pipeline()
        .approvals()
        .list(None, true, now_ms(), MAX_APPROVALS)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "approval store failed");
            ApiError::state_unavailable()
        })?;
    Ok(axum::Json(json!({ "approvals": approvals })).into_response())
}

/// `POST /ui/api/approvals/{id}/approve` with `{"reason": "..."}` and the CSRF token.
async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    answer(state, id, true, req).await
}

/// `POST /ui/api/approvals/{id}/deny` with `{"reason": "..."}` and the CSRF token.
async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    answer(state, id, false, req).await
}

/// The API's answer ([`crate::approvals`]), the login's key as the approver: the same checks,
/// the same audit entries.
async fn answer(
    state: AppState,
    id: String,
    approve: bool,
    req: Request,
) -> Result<Response, ApiError> {
    let login = login_with_csrf(&state, req.headers())?;
    let admin = Admin {
        key_id: Arc::clone(&login.key_id),
    };
    crate::approvals::answer(&state, &admin, &id, approve, req)
        .await
        .map(IntoResponse::into_response)
}

/// Longest reason for clearing a taint, in bytes (as an approval's).
const MAX_REASON_BYTES: usize = warden::state::MAX_APPROVAL_REASON_BYTES;

/// A tenant and a session id, checked.
fn check_session_names(tenant: &str, session: &str, limit: usize) -> Result<(), ApiError> {
    for (name, value) in [("tenant", tenant), ("session", session)] {
        if value.is_empty() || value.len() > limit {
            return Err(ApiError::bad_request(format!(
                "field `{name}`: 1 to {limit} bytes"
            )));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    tenant: String,
    session: String,
}

/// `GET /ui/api/sessions/view?tenant=T&session=S`: the session's taints and the tools of its
/// recent history (names and classes only).
async fn session_view(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    login_of(&state, &headers)?;
    check_session_names(
        &query.tenant,
        &query.session,
        state.config().max_identifier_bytes,
    )?;
    let caller = Caller {
        tenant: Some(&query.tenant),
        policy: None,
        request_id: None,
        tokens: false,
    };
    let key = caller.session_key(&query.session);
    let found = state.pipeline().sessions().get(&key).await.map_err(|e| {
        tracing::error!(error = %e, "session store failed");
        ApiError::state_unavailable()
    })?;
    let Some(found) = found else {
        return Err(ApiError::new(
            ErrorCode::ResourceNotFound,
            format!(
                "no session `{}` for tenant `{}` here",
                query.session, query.tenant
            ),
        ));
    };
    let history: Vec<Value> = found
        .history
        .iter()
        .map(|h| json!({ "tool": h.tool, "classes": h.classes }))
        .collect();
    Ok(axum::Json(json!({
        "tenant": query.tenant,
        "session": query.session,
        "taints": found.taints,
        "history": history,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearTaint {
    tenant: String,
    session: String,
    taint: String,
    reason: String,
}

/// `POST /ui/api/sessions/clear-taint` with `{"tenant", "session", "taint", "reason"}` and the
/// CSRF token: removes the taint (audited, `session_change`); 404 when the session does not
/// have it.
async fn clear_taint(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let login = login_with_csrf(&state, req.headers())?;
    let body = crate::body::json_body(&state, req, false).await?;
    let ClearTaint {
        tenant,
        session,
        taint,
        reason,
    } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let limit = state.config().max_identifier_bytes;
    check_session_names(&tenant, &session, limit)?;
    if taint.is_empty() || taint.len() > limit {
        return Err(ApiError::bad_request(format!(
            "field `taint`: 1 to {limit} bytes"
        )));
    }
    if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "field `reason`: 1 to {MAX_REASON_BYTES} bytes, not blank"
        )));
    }
    let caller = Caller {
        tenant: Some(&tenant),
        policy: None,
        request_id: None,
        tokens: false,
    };
    let cleared = state
        .pipeline()
        .clear_taint(&caller, &session, &taint)
        .await
        .map_err(crate::handlers::refused)?;
    if !cleared {
        return Err(ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("session `{session}` of tenant `{tenant}` has no taint `{taint}` here"),
        ));
    }
    tracing::info!(
        key_id = %login.key_id,
        tenant = %tenant,
        session = %session,
        taint = %taint,
        reason = %reason,
        "taint cleared in the console"
    );
    crate::audit::audit_taint_cleared(
        state.effects().audit.as_ref(),
        &tenant,
        &session,
        &login.key_id,
        &taint,
        &reason,
    )
    .await?;
    Ok(axum::Json(json!({ "cleared": true })).into_response())
}

/// What a live stream shows: decisions matching every filter given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    tenant: Option<String>,
    verdict: Option<String>,
    rule: Option<String>,
    tool: Option<String>,
}

impl Filter {
    fn check(&self) -> Result<(), ApiError> {
        for (name, value) in [
            ("tenant", &self.tenant),
            ("verdict", &self.verdict),
            ("rule", &self.rule),
            ("tool", &self.tool),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_BYTES) {
                return Err(ApiError::bad_request(format!(
                    "parameter `{name}`: at most {MAX_FILTER_BYTES} bytes"
                )));
            }
        }
        if let Some(verdict) = &self.verdict
            && !verdict.is_empty()
            && !["allow", "deny", "pending"].contains(&verdict.as_str())
        {
            return Err(ApiError::bad_request(
                "parameter `verdict`: `allow`, `deny` or `pending`",
            ));
        }
        Ok(())
    }

    fn matches(&self, event: &LiveEvent) -> bool {
        fn one(want: Option<&String>, have: Option<&str>) -> bool {
            match want {
                None => true,
                Some(want) if want.is_empty() => true,
                Some(want) => have == Some(want.as_str()),
            }
        }
        one(self.tenant.as_ref(), event.tenant.as_deref())
            && one(self.verdict.as_ref(), Some(event.verdict))
            && one(self.rule.as_ref(), event.rule.as_deref())
            && one(self.tool.as_ref(), event.tool.as_deref())
    }
}

/// Frees a viewer's place when its stream ends.
struct Viewer(Arc<AtomicUsize>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a live stream carries along between events.
struct Stream {
    live: Live,
    receiver: broadcast::Receiver<Arc<Batch>>,
    /// The sequence number of the next decision this viewer expects (`None`: any).
    expect: Option<u64>,
    filter: Filter,
    login: Arc<Login>,
    dropped: Counter,
    /// Since when nothing was written (a comment keeps idle connections open).
    quiet_since: Instant,
    /// Decisions written whole per batch window, at most; the others are only counted.
    per_window: usize,
    /// This window's decisions written whole, and the others' count per verdict.
    shown: usize,
    skipped: [u64; 3],
    _viewer: Viewer,
}

/// `GET /ui/events?tenant=&verdict=&rule=&tool=`: the live decisions, as server-sent events
/// (`decision`, JSON; `dropped`, the count this viewer missed; `skipped`, counts per verdict
/// over its rate). Ends with the login (at
/// the latest [`BATCH_WINDOW`] after it).
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Result<Response, ApiError> {
    let login = login_of(&state, &headers)?;
    filter.check()?;
    let console = console_of(&state)?;
    let viewers = console.viewers.fetch_add(1, Ordering::AcqRel);
    let viewer = Viewer(Arc::clone(&console.viewers));
    if viewers >= console.config.max_viewers {
        drop(viewer);
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "{} live streams are open (`console.max_viewers`): close one",
                console.config.max_viewers
            ),
        ));
    }
    let start = Stream {
        live: console.live.clone(),
        receiver: console.live.sender.subscribe(),
        expect: None,
        filter,
        login,
        dropped: state.metrics().console_dropped.clone(),
        quiet_since: Instant::now(),
        per_window: per_window(console.config.live_events_per_sec),
        shown: 0,
        skipped: [0; 3],
        _viewer: viewer,
    };
    let stream = futures_util::stream::unfold(start, |mut s| async move {
        loop {
            // One wake and one write per window, whatever the rate of decisions.
            tokio::time::sleep(BATCH_WINDOW).await;
            if s.login.ended.load(Ordering::Acquire) || s.login.expires <= Instant::now() {
                return None;
            }
            s.live.flush();
            let mut chunk = String::new();
            loop {
                match s.receiver.try_recv() {
                    Ok(batch) => s.add(&batch, &mut chunk),
                    // The batches lost show as a gap in the next one's numbers.
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return None,
                }
            }
            s.end_window(&mut chunk);
            if chunk.is_empty() {
                if s.quiet_since.elapsed() < KEEP_ALIVE {
                    continue;
                }
                chunk.push_str(": keep-alive\n\n");
            }
            s.quiet_since = Instant::now();
            return Some((Ok::<_, Infallible>(Bytes::from(chunk)), s));
        }
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// The verdicts a `skipped` event counts, in its order.
const VERDICTS: [&str; 3] = ["allow", "deny", "pending"];

/// Decisions written whole per [`BATCH_WINDOW`] for a cap of `per_sec` a second (at least one).
fn per_window(per_sec: usize) -> usize {
    let windows_per_sec = (1000 / BATCH_WINDOW.as_millis().max(1)).max(1);
    usize::try_from(u128::try_from(per_sec).unwrap_or(u128::MAX) / windows_per_sec)
        .unwrap_or(usize::MAX)
        .max(1)
}

impl Stream {
    /// Closes the batch window: the decisions over the cap go out as counts per verdict (a
    /// `skipped` event), so the page's rates stay whole while what a person can read is shown.
    fn end_window(&mut self, chunk: &mut String) {
        if self.skipped.iter().any(|n| *n > 0) {
            let [allow, deny, pending] = self.skipped;
            chunk.push_str(&format!(
                "event: skipped\ndata: {{\"allow\":{allow},\"deny\":{deny},\"pending\":{pending}}}\n\n"
            ));
        }
        self.shown = 0;
        self.skipped = [0; 3];
    }

    /// Adds `batch` to `chunk`: first how many decisions this viewer missed before it (if
    /// any), then each decision that passes the filter, whole up to the window's share and
    /// counted beyond it.
    fn add(&mut self, batch: &Batch, chunk: &mut String) {
        let expected = self.expect.unwrap_or(batch.first);
        if let Some(missed) = batch.first.checked_sub(expected).filter(|n| *n > 0) {
            self.dropped.inc_by(missed);
            chunk.push_str(&format!("event: dropped\ndata: {missed}\n\n"));
        }
        self.expect = Some(batch.first + batch.events.len() as u64);
        for event in &batch.events {
            if !self.filter.matches(event) {
                continue;
            }
            if self.shown >= self.per_window {
                if let Some(n) = VERDICTS
                    .iter()
                    .position(|v| *v == event.verdict)
                    .and_then(|i| self.skipped.get_mut(i))
                {
                    *n += 1;
                }
                continue;
            }
            match serde_json::to_string(event) {
                Ok(json) => {
                    self.shown += 1;
                    chunk.push_str("event: decision\ndata: ");
                    chunk.push_str(&json);
                    chunk.push_str("\n\n");
                }
                Err(e) => tracing::warn!(error = %e, "a live decision could not be encoded"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn event(tool: &str, verdict: &'static str) -> LiveEvent {
        LiveEvent {
            at_ms: 0,
            tenant: Some("acme".into()),
            principal: None,
            session: None,
            tool: Some(tool.into()),
            kind: "tool_call",
            verdict,
            rule: None,
            policy: Arc::from("p"),
            latency_us: 1,
            shown: None,
        }
    }

    #[test]
    fn displayable_fields_are_cut_summarised_or_withheld() {
        let request: Decided = serde_json::from_value(json!({
            "tool": "t",
            "args": {"long": "x".repeat(300), "list": [1, 2, 3], "obj": {"a": 1}, "card": "4111", "n": null}
        }))
        .unwrap();
        let mut decision: Decision = serde_json::from_value(json!({
            "decision": "allow", "rule": null, "reasons": [], "warnings": [], "taints": [],
            "findings": [], "redacted": null, "dry_run_decision": null,
            "policy": {"name": "p", "version": null, "digest": "sha256:0"}
        }))
        .unwrap();
        decision.findings = vec![
            serde_json::from_value(
                json!({"detector": "credit_card", "path": "/args/card", "start": 0, "end": 4}),
            )
            .unwrap(),
        ];
        let pointers: Vec<Box<str>> = [
            "/args/long",
            "/args/list",
            "/args/obj",
            "/args/card",
            "/args/n",
            "/args/none",
        ]
        .map(Box::from)
        .to_vec();
        let shown = super::shown_fields(&pointers, &request, &decision);
        assert_eq!(shown["/args/long"], json!(format!("{}…", "x".repeat(200))));
        assert_eq!(shown["/args/list"], json!("[3 items]"));
        assert_eq!(shown["/args/obj"], json!("{1 members}"));
        assert_eq!(shown["/args/card"], json!(super::WITHHELD));
        assert_eq!(shown["/args/n"], json!(null));
        assert!(!shown.contains_key("/args/none"));
    }

    #[test]
    fn filters_match_every_field_given() {
        let filter = Filter {
            tenant: Some("acme".into()),
            verdict: Some("deny".into()),
            ..Filter::default()
        };
        assert!(filter.matches(&event("a", "deny")));
        assert!(!filter.matches(&event("a", "allow")));
        let other = Filter {
            tenant: Some("globex".into()),
            ..Filter::default()
        };
        assert!(!other.matches(&event("a", "deny")));
        assert!(Filter::default().matches(&event("a", "allow")));
        let bad = Filter {
            verdict: Some("maybe".into()),
            ..Filter::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; warden_console=abc; b=2"),
        );
        assert_eq!(cookie_token(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("warden_consolex=1"),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn a_slow_viewer_loses_the_oldest_and_memory_stays_bounded() {
        // Batches of 2 decisions, 4 of them held.
        let live = Live::new(8);
        let mut receiver = live.sender.subscribe();
        for round in 0..10 {
            for i in 0..3 {
                live.push(event(&format!("t{round}-{i}"), "allow"));
            }
            live.flush();
        }
        // The channel holds 4 batches of 2; the third decision of each window was numbered
        // but not kept, and the 6 older batches are gone.
        assert_eq!(live.sender.len(), 4);
        match receiver.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected a lag, got {other:?}"),
        }
        let batch = receiver.try_recv().unwrap();
        assert_eq!(batch.first, 18);
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].tool.as_deref(), Some("t6-0"));
        assert_eq!(receiver.try_recv().unwrap().first, 21);
    }
}
