//! Cross-cutting layers: request ids and HTTP metrics, auth and rate limits, concurrency and
//! time limits, panic isolation.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::HttpLabels;
use crate::snapshot::Snapshot;

/// The request's id: the client's `X-Request-Id` when it is short and plain, else generated.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Who is calling, resolved by [`auth`], with the snapshot the request uses throughout.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Tenant name (`anonymous` without a key); sessions are namespaced by it.
    pub tenant: Arc<str>,
    /// The policy deciding this caller's requests.
    pub policy: Arc<str>,
    /// The policy set in force when the request arrived.
    pub snapshot: Arc<Snapshot>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn request_id(headers: &HeaderMap) -> Arc<str> {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Arc::from(v);
    }
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    });
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Arc::from(format!("{:08x}-{n:x}", prefix & 0xffff_ffff))
}

/// Outermost layer: request id (echoed as `X-Request-Id`) and `warden_http_requests_total`.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let id = tag(&mut req);
    let response = next.run(req).await;
    answered(&state, route, &id, response)
}

/// Gives the request its id (a [`RequestId`] extension) and returns it.
pub(crate) fn tag(req: &mut Request) -> Arc<str> {
    let id = request_id(req.headers());
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    id
}

/// Echoes the request id and counts the response in `warden_http_requests_total`.
pub(crate) fn answered(
    state: &AppState,
    route: String,
    id: &str,
    mut response: Response,
) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state
        .metrics()
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.to_str().unwrap_or(""));
    }
    let v = headers.get(header::AUTHORIZATION)?.to_str().unwrap_or("");
    Some(
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(""),
    )
}

fn limiter_key(id: &str) -> u64 {
    u64::from_str_radix(id, 16).unwrap_or(u64::MAX - 1)
}

/// API routes: readiness, API key (or anonymous policy), per-key rate limit; then the global
/// concurrency limit and the request timeout. One layer rather than two: each `from_fn` layer
/// costs a boxed future and a service clone per request.
pub async fn api(State(state): State<AppState>, req: Request, next: Next) -> Response {
    guarded(&state, req, |req| next.run(req)).await
}

/// What every `/v1/*` request goes through before its handler, shared by the router's layer
/// ([`api`]) and the `/v1/decide` fast path ([`crate::fast`]): readiness, API key (or anonymous
/// policy), per-key rate limit, then the global concurrency limit and the request timeout
/// around `handler`.
pub(crate) async fn guarded<F, Fut>(state: &AppState, req: Request, handler: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let req = match authenticate(state, req) {
        Ok(req) => req,
        Err(error) => return error.into_response(),
    };
    let Ok(_permit) = state.0.concurrency.try_acquire() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress",
        )
        .retry_after(1)
        .into_response();
    };
    let limit = Duration::from_millis(state.config().request_timeout_ms);
    match tokio::time::timeout(limit, handler(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
        .retry_after(1)
        .into_response(),
    }
}

fn authenticate(state: &AppState, mut req: Request) -> Result<Request, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let snapshot = state.snapshot();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| Arc::clone(&r.0))
        .unwrap_or_else(|| Arc::from(""));
    let (caller, limit_key) = match presented_key(req.headers()) {
        Some(key) => match snapshot.keys.verify(key) {
            Some(record) => (
                Caller {
                    tenant: Arc::from(record.tenant.as_str()),
                    policy: Arc::from(record.policy_name()),
                    snapshot: Arc::clone(&snapshot),
                },
                limiter_key(&record.id),
            ),
            None => return Err(auth_failure(state, &request_id, "unknown or revoked key")),
        },
        None => match &snapshot.anonymous {
            Some(policy) => (
                Caller {
                    tenant: Arc::from("anonymous"),
                    policy: Arc::clone(policy),
                    snapshot: Arc::clone(&snapshot),
                },
                u64::MAX,
            ),
            None => return Err(auth_failure(state, &request_id, "no key")),
        },
    };
    if let Some(limiter) = &state.0.limiter
        && let Err(not_until) = limiter.check_key(&limit_key)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        tracing::warn!(request_id = %request_id, tenant = %caller.tenant, "rate limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this key",
        )
        .retry_after(wait.as_secs_f64().ceil() as u64));
    }
    req.extensions_mut().insert(caller);
    Ok(req)
}

fn auth_failure(state: &AppState, request_id: &str, reason: &'static str) -> ApiError {
    state.metrics().auth_failures.inc();
    tracing::warn!(request_id = %request_id, reason, "authentication failed");
    ApiError::unauthorized()
}

/// A panicking handler becomes a generic 500; the server keeps serving.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::internal().into_response()
}
