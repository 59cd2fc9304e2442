//! Who is calling: the API key (`X-Api-Key` or `Authorization: Bearer`), checked against the
//! hashed keys in constant time by the key store, or the anonymous policy (with
//! `tls.identity: tenant`, for the tenant the client certificate names); and the per-key rate
//! limit, which counts decisions (a batch of N takes N).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use warden::state::{CounterStore, KeyRole};

use sha2::{Digest as _, Sha256};

use crate::config::{RateLimit, StateFailMode, TlsIdentity};

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
    /// The id of the caller's API key (`None`: anonymous).
    pub key_id: Option<Arc<str>>,
    /// What the caller's key may do (`agent` when anonymous).
    pub role: KeyRole,
    /// The principal the client certificate fixes (`tls.identity: principal`), if any.
    pub certified_principal: Option<Arc<str>>,
}

impl Caller {
    /// Binds `request` to the principal the client certificate fixes: filled in when the
    /// request names none; a request naming another is refused (`field` names where).
    pub(crate) fn bind_principal(
        &self,
        request: &mut warden::Request,
        field: &str,
    ) -> Result<(), ApiError> {
        let Some(fixed) = &self.certified_principal else {
            return Ok(());
        };
        match &request.principal {
            Some(named) if **named != **fixed => Err(ApiError::bad_request(format!(
                "field `{field}principal`: the client certificate makes the principal `{fixed}`"
            ))),
            _ => {
                request.principal = Some(fixed.to_string());
                Ok(())
            }
        }
    }
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

/// The per-key rate limit: a token bucket in this instance (`per_second` sustained, `burst` at
/// once), or, with shared state, a count per key and whole second across every instance (at
/// most `per_second` decisions in each second; `burst` does not apply).
pub(crate) enum RateLimiter {
    /// This instance's buckets.
    Local(DefaultKeyedRateLimiter<u64>),
    /// Counters every instance adds to.
    Shared {
        /// Where the counts are kept.
        counters: Arc<dyn CounterStore>,
        /// Decisions per key and second.
        per_second: u64,
    },
}

impl RateLimiter {
    /// The limiter `limit` asks for (none when `per_second` is 0), shared when `counters` is.
    pub(crate) fn new(limit: RateLimit, counters: Option<Arc<dyn CounterStore>>) -> Option<Self> {
        let rate = NonZeroU32::new(limit.per_second)?;
        Some(match counters {
            Some(counters) => Self::Shared {
                counters,
                per_second: u64::from(rate.get()),
            },
            None => {
                let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
                Self::Local(governor::RateLimiter::keyed(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }
        })
    }
}

fn limiter_key(id: &str) -> u64 {
    u64::from_str_radix(id, 16).unwrap_or(u64::MAX - 1)
}

/// Where a request comes from, for brute-force protection and authentication events.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Client<'a> {
    /// The client's address: the connection's peer, or `client_address_header`'s last entry.
    pub(crate) addr: Option<IpAddr>,
    /// Its `User-Agent`.
    pub(crate) user_agent: Option<&'a str>,
    /// The identity of its verified client certificate (mutual TLS).
    pub(crate) certificate: Option<&'a crate::tls::ClientIdentity>,
}

impl<'a> Client<'a> {
    /// The client of a request with `headers`, connected from `peer` (with `certificate`).
    pub(crate) fn of(
        state: &AppState,
        headers: &'a HeaderMap,
        peer: Option<IpAddr>,
        certificate: Option<&'a crate::tls::ClientIdentity>,
    ) -> Self {
        let addr = match &state.config().client_address_header {
            None => peer,
            Some(name) => headers
                .get_all(name.as_str())
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok()),
        };
        Self {
            addr,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            certificate,
        }
    }
}

/// Refuses a locked-out client (429) before its key is looked at.
pub(crate) fn check_lockout(state: &AppState, client: Client<'_>) -> Result<(), ApiError> {
    let (Some(lockout), Some(addr)) = (&state.0.lockout, client.addr) else {
        return Ok(());
    };
    lockout.check(addr).inspect_err(|_| {
        state.metrics().auth_lockouts.inc();
        if let Some(events) = &state.0.auth_events {
            events.refused("locked_out", client.addr, client.user_agent);
        }
    })
}

/// Records a failed authentication of `client` and counts it towards its lockout.
pub(crate) async fn failed_authentication(state: &AppState, client: Client<'_>) {
    if let Some(events) = &state.0.auth_events {
        events.refused("failure", client.addr, client.user_agent);
    }
    if let (Some(lockout), Some(addr)) = (&state.0.lockout, client.addr) {
        lockout.failed(addr).await;
    }
}

/// Resolves who is calling: readiness, then the API key (or the anonymous policy), then the
/// key's rate limit.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
    client: Client<'_>,
) -> Result<Caller, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let caller = identify(state, headers, request_id, client)?;
    let limit_key = caller.rate_key;
    if let Some(RateLimiter::Local(limiter)) = &state.0.limiter
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

/// The caller `headers` name, against the policy set in force now: the API key's tenant and
/// policy, or the anonymous policy without a key.
fn identify(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
    client: Client<'_>,
) -> Result<Caller, ApiError> {
    let snapshot = state.snapshot();
    let tls_identity = state
        .config()
        .tls
        .as_ref()
        .map_or(TlsIdentity::None, |t| t.identity);
    let certified = match tls_identity {
        TlsIdentity::None => None,
        TlsIdentity::Principal | TlsIdentity::Tenant => match client.certificate {
            Some(identity) => Some(Arc::clone(&identity.0)),
            // Mutual TLS admitted the connection, so a certificate is there; without one (a
            // certificate whose identity could not be read) nothing is decided.
            None => {
                return Err(auth_failure(
                    state,
                    request_id,
                    "no client certificate identity",
                ));
            }
        },
    };
    let (certified_principal, certified_tenant) = match tls_identity {
        TlsIdentity::Principal => (certified, None),
        TlsIdentity::Tenant => (None, certified),
        TlsIdentity::None => (None, None),
    };
    if certified_tenant.as_deref() == Some(ANONYMOUS) {
        // Callers without a key share the `anonymous` tenant's sessions: a certificate
        // naming it would reach them.
        return Err(auth_failure(
            state,
            request_id,
            "a client certificate cannot name the anonymous tenant",
        ));
    }
    match presented_key(headers) {
        Some(key) => match snapshot.keys.verify(key) {
            // With the certificate as the tenant, a key works only from its own tenant's
            // certificate: a stolen key is useless from another client.
            Some(key)
                if certified_tenant
                    .as_deref()
                    .is_some_and(|tenant| tenant != &*key.tenant) =>
            {
                Err(auth_failure(
                    state,
                    request_id,
                    "the key's tenant is not the client certificate's",
                ))
            }
            Some(key) => {
                if let Some(events) = &state.0.auth_events {
                    events.success(&key.record.id, &key.tenant, client.addr, client.user_agent);
                }
                Ok(Caller {
                    tenant: Arc::clone(&key.tenant),
                    policy: Arc::clone(&key.policy),
                    snapshot: Arc::clone(&snapshot),
                    rate_key: limiter_key(&key.record.id),
                    key_id: Some(Arc::clone(&key.id)),
                    role: key.record.role,
                    certified_principal,
                })
            }
            None => Err(auth_failure(state, request_id, "unknown or revoked key")),
        },
        None => match (&snapshot.anonymous, certified_tenant) {
            // The certificate names the tenant; the policy is the one for callers without a key.
            (Some(policy), Some(tenant)) => Ok(Caller {
                rate_key: certificate_rate_key(&tenant),
                tenant,
                policy: Arc::clone(policy),
                snapshot: Arc::clone(&snapshot),
                key_id: None,
                role: KeyRole::Agent,
                certified_principal,
            }),
            (Some(policy), None) => Ok(Caller {
                tenant: Arc::from(ANONYMOUS),
                policy: Arc::clone(policy),
                snapshot: Arc::clone(&snapshot),
                rate_key: u64::MAX,
                key_id: None,
                role: KeyRole::Agent,
                certified_principal,
            }),
            (None, _) => Err(auth_failure(state, request_id, "no key")),
        },
    }
}

/// The tenant of callers without a key or a certificate naming one.
const ANONYMOUS: &str = "anonymous";

/// The rate limit bucket of a certificate's tenant: its own, apart from keys' (whose buckets
/// are their hexadecimal ids) and anonymous callers' (`u64::MAX`).
fn certificate_rate_key(tenant: &str) -> u64 {
    let digest = Sha256::digest(tenant.as_bytes());
    let first: [u8; 8] = digest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 8]);
    u64::from_be_bytes(first).min(u64::MAX - 2)
}

/// The caller of a long-lived call (a gRPC stream) again, once the policy set has changed
/// under it: a key revoked since the call began is refused from then on, and a key moved to
/// another policy is decided by the new one. Its rate limit is not charged again.
pub(crate) fn reauthenticate(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
    client: Client<'_>,
) -> Result<Caller, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    identify(state, headers, request_id, client)
}

/// Takes `decisions` more tokens from the caller's bucket (the request itself took one): rate
/// limits count decisions, so a batch of N costs N. More than the bucket holds, or not enough
/// tokens now, is a 429 and nothing is decided.
pub(crate) async fn charge_decisions(
    state: &AppState,
    caller: &Caller,
    decisions: usize,
) -> Result<(), ApiError> {
    let limiter = match &state.0.limiter {
        None => return Ok(()),
        Some(RateLimiter::Shared {
            counters,
            per_second,
        }) => return charge_shared(state, caller, &**counters, *per_second, decisions).await,
        Some(RateLimiter::Local(limiter)) => limiter,
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

/// The request's own decision, on a shared limiter (the local one took it in
/// [`authenticate`]).
pub(crate) async fn charge_request(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match &state.0.limiter {
        Some(RateLimiter::Shared {
            counters,
            per_second,
        }) => charge_shared(state, caller, &**counters, *per_second, 1).await,
        _ => Ok(()),
    }
}

/// Adds `decisions` to the caller's count in this second, across every instance; over
/// `per_second` is a 429. A count that cannot be kept (the store failing) is a 503 with
/// `state_fail_mode: closed`, and lets the request through uncounted with `open`.
async fn charge_shared(
    state: &AppState,
    caller: &Caller,
    counters: &dyn CounterStore,
    per_second: u64,
    decisions: usize,
) -> Result<(), ApiError> {
    let n = u64::try_from(decisions).unwrap_or(u64::MAX);
    if n == 0 {
        return Ok(());
    }
    if n > per_second {
        return Err(too_many_for_bucket(state, decisions));
    }
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = format!("rate:{:x}", caller.rate_key);
    let total = counters
        .add(&key, second, n, second.saturating_add(2))
        .await;
    let total = match total {
        Ok(total) => total,
        Err(e) if state.config().state_fail_mode == StateFailMode::Open => {
            tracing::warn!(error = %e, "rate limit store failed; not counted (fail open)");
            state.metrics().count_state_failure(true);
            return Ok(());
        }
        Err(e) => {
            tracing::error!(error = %e, "rate limit store failed; refused (fail closed)");
            state.metrics().count_state_failure(false);
            return Err(ApiError::state_unavailable());
        }
    };
    if total > per_second {
        tracing::warn!(tenant = %caller.tenant, decisions, "rate limited");
        return Err(
            ApiError::new(ErrorCode::RateLimited, "too many decisions for this key").retry_after(1),
        );
    }
    Ok(())
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

/// An admin: the caller of an admin route, whose API key has the `admin` role. Extracted from
/// the [`Caller`] the route's guard authenticated: no key is 401 `unauthorized` (as on every
/// route), a key of another role 403 `forbidden`.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    /// The admin key's id: the approver's identity in approvals and the audit log.
    pub(crate) key_id: Arc<str>,
}

impl Admin {
    /// The admin `caller` is, or why not.
    pub(crate) fn of(caller: Option<&Caller>) -> Result<Self, ApiError> {
        let Some(caller) = caller else {
            // The guard runs before every API route; a route without it is a wiring mistake.
            tracing::error!("an admin route ran without its guard");
            return Err(ApiError::internal());
        };
        match (&caller.key_id, caller.role) {
            (None, _) => Err(ApiError::unauthorized()),
            (Some(key_id), KeyRole::Admin) => Ok(Self {
                key_id: Arc::clone(key_id),
            }),
            (Some(key_id), _) => {
                tracing::warn!(key_id = %key_id, "a key without the admin role on an admin route");
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "this route needs an API key with the `admin` role",
                ))
            }
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        Self::of(parts.extensions.get::<Caller>())
    }
}

fn auth_failure(state: &AppState, request_id: &str, reason: &'static str) -> ApiError {
    state.metrics().auth_failures.inc();
    tracing::warn!(request_id = %request_id, reason, "authentication failed");
    ApiError::unauthorized()
}
