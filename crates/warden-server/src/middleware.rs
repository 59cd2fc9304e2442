//! Cross-cutting layers: request ids and HTTP metrics, the guard of every API route (the caller
//! from [`crate::auth`], then concurrency and time limits), panic isolation.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::{
    Caller, Client, authenticate, charge_request, check_lockout, failed_authentication,
};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::HttpLabels;

/// The request's id: the client's `X-Request-Id` when it is short and plain, else generated.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's `X-Request-Id` when it is short and plain, else
/// `PPPPPPPP-N`: 8 hex digits fixed for the process, then a hex counter.
pub(crate) fn request_id(headers: &HeaderMap) -> Arc<str> {
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
    format_id(prefix & 0xffff_ffff, n)
}

/// `{prefix:08x}-{n:x}`, formatted into a stack buffer: `format!` and then `Arc::from` would
/// allocate twice on every request.
fn format_id(prefix: u64, n: u64) -> Arc<str> {
    use std::io::Write as _;
    let mut buf = [0u8; 25]; // 8 + 1 + 16 hex digits at most
    let mut out = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(out, "{prefix:08x}-{n:x}");
    let len = usize::try_from(out.position()).unwrap_or(0);
    Arc::from(
        buf.get(..len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("0"),
    )
}

/// Outermost layer: request id (echoed as `X-Request-Id`) and `warden_http_requests_total`.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = Cow::Owned(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |m| m.as_str())
            .to_owned(),
    );
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
    route: Cow<'static, str>,
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

/// API routes: readiness, API key (or anonymous policy), per-key rate limit; then the global
/// concurrency limit and the request timeout. One layer rather than two: each `from_fn` layer
/// costs a boxed future and a service clone per request. The handler finds the [`Caller`] as
/// an extension.
pub async fn api(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| Arc::clone(&r.0))
        .unwrap_or_else(|| Arc::from(""));
    guarded(&state, req, &request_id, |mut req, caller| {
        req.extensions_mut().insert(caller);
        next.run(req)
    })
    .await
}

/// What every `/v1/*` request goes through before its handler, shared by the router's layer
/// ([`api`]) and the `/v1/decide` fast path ([`crate::fast`]): readiness, API key (or anonymous
/// policy), per-key rate limit, then the global concurrency limit and the request timeout
/// around `handler`, which is given the authenticated [`Caller`].
pub(crate) async fn guarded<F, Fut>(
    state: &AppState,
    req: Request,
    request_id: &str,
    handler: F,
) -> Response
where
    F: FnOnce(Request, Caller) -> Fut,
    Fut: Future<Output = Response>,
{
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let certificate = req.extensions().get::<crate::tls::ClientIdentity>();
    let caller = match admit(state, req.headers(), peer, certificate, request_id).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    limited(state, handler(req, caller))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Who may call, shared by HTTP ([`guarded`]) and gRPC: a locked-out address is refused, then
/// readiness, the API key (or anonymous policy; a failure counts towards the address's
/// lockout) and the key's rate limit.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    certificate: Option<&crate::tls::ClientIdentity>,
    request_id: &str,
) -> Result<Caller, ApiError> {
    let client = Client::of(state, headers, peer, certificate);
    check_lockout(state, client)?;
    let caller = match authenticate(state, headers, request_id, client) {
        Ok(caller) => caller,
        Err(error) => {
            if error.code == ErrorCode::Unauthorized {
                failed_authentication(state, client).await;
            }
            return Err(error);
        }
    };
    charge_request(state, &caller).await?;
    Ok(caller)
}

/// `work` under the global concurrency limit (503 `overloaded` at once when it is reached)
/// and the request timeout (503 `timeout`).
pub(crate) async fn limited<T>(
    state: &AppState,
    work: impl Future<Output = T>,
) -> Result<T, ApiError> {
    let Ok(_permit) = state.0.concurrency.try_acquire() else {
        return Err(
            ApiError::new(ErrorCode::Overloaded, "too many requests in progress").retry_after(1),
        );
    };
    let limit = Duration::from_millis(state.config().request_timeout_ms);
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ApiError::new(ErrorCode::Timeout, "the request took too long").retry_after(1))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn generated_ids_read_like_the_format_they_replace() {
        for prefix in [0, 1, 0xabc, 0xffff_ffff, 0x0123_4567] {
            for n in [0, 1, 9, 10, 15, 16, 255, 256, 0xdead_beef, u64::MAX] {
                assert_eq!(&*format_id(prefix, n), format!("{prefix:08x}-{n:x}"));
            }
        }
    }

    #[test]
    fn a_plain_client_id_is_kept_and_anything_else_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123_x.y"));
        assert_eq!(&*request_id(&headers), "abc-123_x.y");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        let generated = request_id(&headers);
        let (prefix, counter) = generated.split_once('-').unwrap();
        assert_eq!(prefix.len(), 8);
        assert!(u64::from_str_radix(prefix, 16).is_ok());
        assert!(u64::from_str_radix(counter, 16).is_ok());
        assert_ne!(request_id(&headers), generated, "every generated id is new");
    }
}
