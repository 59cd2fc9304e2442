//! Who is calling: the API key (`X-Api-Key` or `Authorization: Bearer`), checked against the
//! hashed keys in constant time by the key store, or the anonymous policy; and the per-key rate
//! limit, which counts decisions (a batch of N takes N).

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use governor::clock::{Clock, DefaultClock};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::snapshot::Snapshot;

/// Who is calling, resolved by [`authenticate`], with the snapshot the request uses throughout.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Tenant name (`anonymous` without a key); sessions are namespaced by it.
    pub tenant: Arc<str>,
    /// The policy deciding this caller's requests.
    pub policy: Arc<str>,
    /// The policy set in force when the request arrived.
    pub snapshot: Arc<Snapshot>,
    /// The caller's rate limit bucket (a batch takes one token per decision).
    pub(crate) rate_key: u64,
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

/// Resolves who is calling: readiness, then the API key (or the anonymous policy), then the
/// key's rate limit.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Caller, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let snapshot = state.snapshot();
    let (caller, limit_key) = match presented_key(headers) {
        Some(key) => match snapshot.keys.verify(key) {
            Some(key) => (
                Caller {
                    tenant: Arc::clone(&key.tenant),
                    policy: Arc::clone(&key.policy),
                    snapshot: Arc::clone(&snapshot),
                    rate_key: limiter_key(&key.record.id),
                },
                limiter_key(&key.record.id),
            ),
            None => return Err(auth_failure(state, request_id, "unknown or revoked key")),
        },
        None => match &snapshot.anonymous {
            Some(policy) => (
                Caller {
                    tenant: Arc::from("anonymous"),
                    policy: Arc::clone(policy),
                    snapshot: Arc::clone(&snapshot),
                    rate_key: u64::MAX,
                },
                u64::MAX,
            ),
            None => return Err(auth_failure(state, request_id, "no key")),
        },
    };
    if let Some(limiter) = &state.0.limiter
        && let Err(not_until) = limiter.check_key(&limit_key)
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        tracing::warn!(request_id = %request_id, tenant = %caller.tenant, "rate limited");
        return Err(
            ApiError::new(ErrorCode::RateLimited, "too many requests for this key")
                .retry_after(wait.as_secs_f64().ceil() as u64),
        );
    }
    Ok(caller)
}

/// Takes `decisions` more tokens from the caller's bucket (the request itself took one): rate
/// limits count decisions, so a batch of N costs N. More than the bucket holds, or not enough
/// tokens now, is a 429 and nothing is decided.
pub(crate) fn charge_decisions(
    state: &AppState,
    caller: &Caller,
    decisions: usize,
) -> Result<(), ApiError> {
    let Some(limiter) = &state.0.limiter else {
        return Ok(());
    };
    let Some(n) = u32::try_from(decisions)
        .ok()
        .and_then(std::num::NonZeroU32::new)
    else {
        return if decisions == 0 {
            Ok(())
        } else {
            Err(too_many_for_bucket(state, decisions))
        };
    };
    match limiter.check_key_n(&caller.rate_key, n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::warn!(tenant = %caller.tenant, decisions, "rate limited");
            Err(
                ApiError::new(ErrorCode::RateLimited, "too many decisions for this key")
                    .retry_after(wait.as_secs_f64().ceil() as u64),
            )
        }
        Err(_) => Err(too_many_for_bucket(state, decisions)),
    }
}

fn too_many_for_bucket(state: &AppState, decisions: usize) -> ApiError {
    let limit = state.config().rate_limit;
    let burst = if limit.burst == 0 {
        limit.per_second
    } else {
        limit.burst
    };
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "a batch of {} decisions is more than this key's rate limit allows at once ({burst})",
            decisions.saturating_add(1)
        ),
    )
}

fn auth_failure(state: &AppState, request_id: &str, reason: &'static str) -> ApiError {
    state.metrics().auth_failures.inc();
    tracing::warn!(request_id = %request_id, reason, "authentication failed");
    ApiError::unauthorized()
}
