//! Thin handlers: extract, decide, answer. Every failure is an [`ApiError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden::{CompiledPolicy, PipelineError, Request as DecisionRequest, SessionStore as _};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::middleware::RequestId;
use crate::snapshot::{LoadedPolicy, PolicyKind};

use crate::body::json_body;

fn policy_of(caller: &Caller) -> Result<&Arc<LoadedPolicy>, ApiError> {
    caller.snapshot.policies.get(&caller.policy).ok_or_else(|| {
        tracing::error!(tenant = %caller.tenant, policy = %caller.policy, "the tenant's policy is not loaded");
        ApiError::new(ErrorCode::PolicyUnavailable,
            "the policy for this key is not loaded",
        )
    })
}

fn warden_policy(loaded: &LoadedPolicy) -> Result<&Arc<CompiledPolicy>, ApiError> {
    match &loaded.kind {
        PolicyKind::Warden(p) => Ok(p),
        PolicyKind::Rego(..) => Err(ApiError::bad_request(
            "this key's policy is a Rego policy: use `POST /v1/data/{path}`",
        )),
    }
}

/// The first identifier of `request` longer than `max` bytes, by field name: `session`,
/// `principal`, `tool`, `http.method`, a header or query parameter name (`http.headers`,
/// `http.query`) or a `context` attribute name. Identifiers become session keys, metric-free
/// log fields and audit entries: unbounded, 100 requests with 2 MB session ids took the daemon
/// from 27 MB to 450 MB.
fn long_identifier(request: &DecisionRequest, max: usize) -> Option<&'static str> {
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > max);
    if too_long(&request.session) {
        return Some("session");
    }
    if too_long(&request.principal) {
        return Some("principal");
    }
    if too_long(&request.tool) {
        return Some("tool");
    }
    if let Some(http) = &request.http {
        if too_long(&http.method) {
            return Some("http.method");
        }
        if http.headers.keys().any(|k| k.len() > max) {
            return Some("http.headers");
        }
        if http.query.keys().any(|k| k.len() > max) {
            return Some("http.query");
        }
    }
    if request
        .context
        .as_ref()
        .is_some_and(|c| c.keys().any(|k| k.len() > max))
    {
        return Some("context");
    }
    None
}

/// 400 naming the field (after `prefix`: `[3].`, `input.`) when an identifier is over the
/// `max_identifier_bytes` limit.
fn check_identifiers(
    state: &AppState,
    request: &DecisionRequest,
    prefix: &str,
) -> Result<(), ApiError> {
    let max = state.config().max_identifier_bytes;
    match long_identifier(request, max) {
        None => Ok(()),
        Some(field) => Err(ApiError::bad_request(format!(
            "field `{prefix}{field}`: longer than {max} bytes (max_identifier_bytes)"
        ))),
    }
}

/// The pipeline's view of `caller`: its sessions namespaced by its tenant, its policy by name.
pub(crate) fn asking<'a>(
    caller: &'a Caller,
    request_id: &'a str,
) -> warden_core::pipeline::Caller<'a> {
    warden_core::pipeline::Caller {
        tenant: Some(&caller.tenant),
        policy: Some(&caller.policy),
        request_id: Some(request_id),
        tokens: true,
    }
}

/// The answer when the pipeline made no decision: never an allow.
pub(crate) fn refused(e: PipelineError<ApiError>) -> ApiError {
    match e {
        PipelineError::Effect(e) => e,
        // Logged by the pipeline (and counted by the effects).
        PipelineError::Store(_) => ApiError::state_unavailable(),
        PipelineError::UnknownPolicy(policy) => {
            tracing::error!(%policy, "the caller's policy is not loaded");
            ApiError::new(
                ErrorCode::PolicyUnavailable,
                "the policy for this key is not loaded",
            )
        }
        PipelineError::Conflict { attempts } => ApiError::new(
            ErrorCode::BatchConflict,
            format!(
                "other requests kept changing this batch's sessions ({attempts} attempts); \
                 nothing was applied: retry"
            ),
        ),
        PipelineError::Abandoned => {
            tracing::warn!("batch abandoned by its caller before its sessions changed; voided");
            ApiError::internal()
        }
    }
}

/// `POST /v1/decide`.
pub async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    decide_request(&state, &caller, &request_id.0, req).await
}

/// The work of `POST /v1/decide` once the caller is known; also called by the fast path
/// ([`crate::fast`]).
pub(crate) async fn decide_request(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let body = json_body(state, req, false).await?;
    check_decidable(caller)?;
    let request = DecisionRequest::from_json(&body)?;
    let decision = decide_one(state, caller, request_id, &request).await?;
    Ok(json_response(&decision))
}

/// A JSON response serialized into a buffer sized for a typical decision (axum's `Json` starts
/// at 128 bytes and grows).
fn json_response(value: &impl serde::Serialize) -> Response {
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => ApiError::internal().into_response(),
    }
}

/// `POST /v1/decide/batch`: a JSON array of at most `max_batch_items` requests, all validated
/// before any is decided, decided in order against one policy snapshot.
///
/// All or nothing: every item is validated, the key's rate limit charged for every decision
/// (429), and every decision made against copies of its sessions, before anything changes.
/// Then tokens are minted, the decisions audited as one group (written whole or not at all),
/// and only then the sessions written back, each if no other request changed it meanwhile. A
/// failure on the way (signing, a full audit queue, a failed audit write) changes no session
/// and leaves no entry in the log. When another request changed one of the batch's sessions,
/// the batch is decided again from the new state (its entries so far are marked void in the
/// audit log), up to [`BATCH_ATTEMPTS`] times, then answered 409 `batch_conflict`.
pub async fn decide_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = json_body(&state, req, false).await?;
    warden_policy(policy_of(&caller)?)?;
    warden_core::unique_keys::reject_duplicate_keys(&body)?;
    let items: Vec<Value> = match serde_json::from_slice(&body) {
        Ok(Value::Array(items)) => items,
        Ok(_) => {
            return Err(ApiError::bad_request(
                "a batch must be a JSON array of requests",
            ));
        }
        Err(e) => return Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    };
    check_batch_size(&state, items.len())?;
    let requests = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            DecisionRequest::from_value(item).map_err(|e| {
                let field = match e.field {
                    Some(f) => format!("[{i}].{f}"),
                    None => format!("[{i}]"),
                };
                ApiError::bad_request(format!("field `{field}`: {}", e.message))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let decisions = decide_requests(&state, &caller, &request_id.0, requests).await?;
    Ok(Json(decisions).into_response())
}

/// A batch of `items` requests is more than `max_batch_items`: refused before any is read.
pub(crate) fn check_batch_size(state: &AppState, items: usize) -> Result<(), ApiError> {
    let max = state.config().max_batch_items;
    if items > max {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {max} requests (max_batch_items), not {items}"
        )));
    }
    Ok(())
}

/// The parsed batch `requests`, validated and decided as one (the work of
/// `POST /v1/decide/batch` once parsed, shared with gRPC's `DecideBatch`; see
/// [`decide_batch`] for the all-or-nothing semantics).
pub(crate) async fn decide_requests(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    mut requests: Vec<DecisionRequest>,
) -> Result<Vec<warden::Decision>, ApiError> {
    warden_policy(policy_of(caller)?)?;
    check_batch_size(state, requests.len())?;
    for (i, request) in requests.iter_mut().enumerate() {
        caller.bind_principal(request, &format!("[{i}]."))?;
        check_identifiers(state, request, &format!("[{i}]."))?;
        crate::signing::check_mintable(state, caller, request).map_err(|mut e| {
            e.message = format!("[{i}]: {}", e.message);
            e
        })?;
    }
    // The request took one token on its way in; the other decisions take theirs now.
    crate::auth::charge_decisions(state, caller, requests.len().saturating_sub(1)).await?;
    // The batch runs in its own task, so that a request dropped (timeout, client gone) while
    // its entries are being written cannot stop it between the audit and the session writes;
    // the task sees that nobody waits any more and voids the entries instead of committing.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (state, caller, request_id) = (state.clone(), caller.clone(), request_id.to_owned());
    let task = async move {
        let abandoned = || tx.is_closed();
        let result = state
            .pipeline()
            .decide_batch(&asking(&caller, &request_id), &requests, &abandoned)
            .await
            .map_err(refused);
        // Nobody waits any more: the batch already voided its entries and changed nothing.
        let _ = tx.send(result);
    };
    // The caller's trace context goes with the task (its decisions' spans are the request's).
    tokio::spawn(opentelemetry::context::FutureExt::with_current_context(
        task,
    ));
    match rx.await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("batch task ended without an answer; answering 500");
            Err(ApiError::internal())
        }
    }
}

/// The caller's policy is a loaded Warden policy: a clear 503 (not loaded) or 400 (a Rego
/// policy, which only the Data API serves) before anything is parsed.
pub(crate) fn check_decidable(caller: &Caller) -> Result<(), ApiError> {
    warden_policy(policy_of(caller)?).map(|_| ())
}

/// One parsed request decided for `caller` (whose policy [`check_decidable`] accepted): the
/// work of `POST /v1/decide` after parsing, shared with gRPC's `Decide` and `DecideStream`.
pub(crate) async fn decide_one(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    request: &DecisionRequest,
) -> Result<warden::Decision, ApiError> {
    let bound;
    let request = if caller.certified_principal.is_some() {
        let mut copy = request.clone();
        caller.bind_principal(&mut copy, "")?;
        bound = copy;
        &bound
    } else {
        request
    };
    check_identifiers(state, request, "")?;
    crate::signing::check_mintable(state, caller, request)?;
    state
        .pipeline()
        .decide(&asking(caller, request_id), request)
        .await
        .map_err(refused)
}

/// Evaluates the OPA Data API path `segments` for the caller: a Rego policy's document
/// (`data.a.b`, a numeric segment indexing an array: `data.a[0]`) with `input`, or a Warden
/// policy's decision of `input` as a request (through the decision pipeline, like
/// `/v1/decide`; a path ending in `allow` answers the boolean). `Ok(None)` is an undefined
/// document. Audited like every decision.
pub(crate) async fn evaluate_data(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    segments: &[&str],
    input: Option<Value>,
) -> Result<Option<Value>, ApiError> {
    let loaded = policy_of(caller)?;
    match &loaded.kind {
        PolicyKind::Rego(rego, _) => {
            let identifier = |s: &str| {
                s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !s.starts_with(|c: char| c.is_ascii_digit())
            };
            let index =
                |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
            if segments.iter().any(|s| !identifier(s) && !index(s)) {
                return Err(ApiError::bad_request(
                    "field `path`: segments must be Rego identifiers or array indexes",
                ));
            }
            // Refused before evaluation with the limit named: the engine would only report
            // "limit exceeded", indistinguishable from the time budget.
            let max_depth =
                usize::try_from(rego.limits().max_recursion_depth).unwrap_or(usize::MAX);
            if input
                .as_ref()
                .is_some_and(|i| warden_core::request::depth(i) > max_depth)
            {
                return Err(ApiError::bad_request(format!(
                    "field `input`: nesting deeper than {max_depth} levels"
                )));
            }
            let mut query = "data".to_owned();
            for segment in segments {
                if index(segment) {
                    query.push_str(&format!("[{segment}]"));
                } else {
                    query.push('.');
                    query.push_str(segment);
                }
            }
            let started = Instant::now();
            let result = rego.eval_value(&query, input.as_ref().unwrap_or(&Value::Null));
            // Audited like every decision, errors and limits included, and answered only once
            // the entry is durable per `fsync` (a failed append fails closed).
            let ack = crate::audit::audit_data_query(
                state,
                caller,
                &loaded.digest,
                &query,
                input.as_ref(),
                crate::audit::data_query_outcome(&result),
                started,
            )?;
            crate::audit::audit_wait(vec![ack]).await?;
            result.map_err(|e| {
                tracing::warn!(request_id = %request_id.0, error = %e, "rego evaluation failed");
                ApiError::new(
                    ErrorCode::EvaluationError,
                    "the policy could not be evaluated",
                )
            })
        }
        PolicyKind::Warden(_) => {
            let Some(input) = input else {
                return Err(ApiError::bad_request(
                    "field `input`: a request is required",
                ));
            };
            let mut request = DecisionRequest::from_value(input).map_err(|e| {
                let field = match e.field {
                    Some(f) => format!("input.{f}"),
                    None => "input".to_owned(),
                };
                ApiError::bad_request(format!("field `{field}`: {}", e.message))
            })?;
            caller.bind_principal(&mut request, "input.")?;
            check_identifiers(state, &request, "input.")?;
            let decision = state
                .pipeline()
                .decide(
                    &warden_core::pipeline::Caller {
                        tokens: false,
                        ..asking(caller, &request_id.0)
                    },
                    &request,
                )
                .await
                .map_err(refused)?;
            let result = if segments.last() == Some(&"allow") {
                json!(decision.verdict == warden::Verdict::Allow)
            } else {
                serde_json::to_value(&decision).map_err(|_| ApiError::internal())?
            };
            Ok(Some(result))
        }
    }
}

/// Longest ad hoc query accepted (`/v1/query`), in bytes.
pub(crate) const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Evaluates an ad hoc Rego `query` (OPA's Query API) against the caller's Rego policy: one
/// object of variable bindings per way it succeeds. Audited like a Data API query. A Warden
/// policy has no Rego to query: 400.
pub(crate) async fn evaluate_query(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    query: &str,
    input: Option<Value>,
) -> Result<Vec<Value>, ApiError> {
    if query.trim().is_empty() || query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(format!(
            "field `query`: 1 to {MAX_QUERY_BYTES} bytes of Rego"
        )));
    }
    let loaded = policy_of(caller)?;
    let PolicyKind::Rego(rego, _) = &loaded.kind else {
        return Err(ApiError::bad_request(
            "this key's policy is a Warden policy: ad hoc queries need a Rego policy",
        ));
    };
    let max_depth = usize::try_from(rego.limits().max_recursion_depth).unwrap_or(usize::MAX);
    if input
        .as_ref()
        .is_some_and(|i| warden_core::request::depth(i) > max_depth)
    {
        return Err(ApiError::bad_request(format!(
            "field `input`: nesting deeper than {max_depth} levels"
        )));
    }
    let started = Instant::now();
    let result = rego.query_bindings(query, input.as_ref().unwrap_or(&Value::Null));
    let outcome = match &result {
        Ok(found) if found.is_empty() => "deny",
        Ok(_) => "value",
        Err(_) => "error",
    };
    let ack = crate::audit::audit_data_query(
        state,
        caller,
        &loaded.digest,
        query,
        input.as_ref(),
        outcome,
        started,
    )?;
    crate::audit::audit_wait(vec![ack]).await?;
    result.map_err(|e| {
        tracing::debug!(request_id = %request_id.0, error = %e, "ad hoc query failed");
        ApiError::bad_request(format!("the query could not be evaluated: {e}"))
    })
}

/// `GET /health/live`: the process answers.
pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /health/ready`: policies loaded, the session store reachable and its last flush
/// written, the shared state (Redis) answering a PING within its timeout, the audit log
/// writing, not shutting down; each store's status is in the answer. PostgreSQL is reported but
/// does not make the daemon unready: decisions do not need it (the keys and policies it holds
/// are loaded), so a database outage must not take every instance out of the load balancer.
pub async fn ready(State(state): State<AppState>) -> Response {
    let status = |ok: bool| if ok { "ok" } else { "failing" };
    let sessions_ok = state
        .store()
        .probe()
        .inspect_err(|e| tracing::debug!(error = %e, "not ready: session store"))
        .is_ok();
    let mut stores = serde_json::Map::new();
    let shared_ok = match state.shared() {
        Some(shared) => {
            let ok = shared
                .ping()
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "not ready: shared state"))
                .is_ok();
            stores.insert("redis".into(), status(ok).into());
            ok
        }
        None => {
            stores.insert("sessions".into(), status(sessions_ok).into());
            true
        }
    };
    if let Some(database) = state.database() {
        let timeout = Duration::from_millis(state.config().redis_timeout_ms.max(1));
        let ok = matches!(
            tokio::time::timeout(timeout, database.ping()).await,
            Ok(Ok(()))
        );
        stores.insert("database".into(), status(ok).into());
    }
    let audit_ok = state.effects().audit.as_ref().is_none_or(|a| !a.status().2);
    if state.effects().audit.is_some() {
        stores.insert("audit".into(), status(audit_ok).into());
    }
    if state.is_ready() && sessions_ok && shared_ok && audit_ok {
        Json(json!({
            "status": "ready",
            "policies": state.snapshot().policies.len(),
            "state": if state.shared().is_some() { "redis" } else { "embedded" },
            "keys": if state.database().is_some() { "database" } else { "file" },
            "stores": stores,
        }))
        .into_response()
    } else {
        let failing: Vec<&str> = stores
            .iter()
            .filter(|(_, v)| *v == "failing")
            .map(|(k, _)| k.as_str())
            .collect();
        let mut error = ApiError::not_ready();
        if !failing.is_empty() {
            error.message = format!("the server is not ready: {} failing", failing.join(", "));
        }
        error.into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics()
        .sessions
        .set(i64::try_from(state.store().len()).unwrap_or(i64::MAX));
    if let Some(audit) = &state.effects().audit {
        let (queued, seq, _) = audit.status();
        let metrics = state.metrics();
        metrics
            .audit_queue
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        metrics
            .audit_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
    }
    crate::audit::audit_metrics(&state);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

/// Unknown route.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
