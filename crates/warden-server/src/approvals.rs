//! Approvals over HTTP, for admin keys only ([`Admin`]): list and show the approvals of calls
//! that `effect: ask` rules hold, approve or deny one with a reason. The pipeline records each
//! answer in the audit log; the approval keeps the arguments' hash, never their values.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/approvals?status=pending\|all&tenant=T&limit=N` | `{"approvals": [...]}`, oldest first |
//! | `GET /v1/approvals/{id}` | the approval |
//! | `POST /v1/approvals/{id}/approve`, `.../deny` with `{"reason": "..."}` | the approval as answered |

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use serde::Deserialize;
use serde_json::{Value, json};
use warden::state::{Approval, MAX_APPROVAL_REASON_BYTES, Resolved};

use crate::AppState;
use crate::auth::Admin;
use crate::body::json_body;
use crate::error::{ApiError, ErrorCode};
use crate::handlers::refused;

/// Most approvals one listing answers with (and the default).
pub(crate) const MAX_LIST: usize = 1000;

/// Longest approval id accepted in a path, in bytes (ids are `apr_` + 32 hex digits).
const MAX_ID_BYTES: usize = 64;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::ApprovalNotFound, format!("no approval `{id}`"))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::bad_request(format!(
            "field `id`: an approval id is 1 to {MAX_ID_BYTES} letters, digits or `_`"
        )));
    }
    Ok(())
}

fn store_failed(e: &warden::StoreError) -> ApiError {
    tracing::error!(error = %e, "approval store failed");
    ApiError::state_unavailable()
}

/// `GET /v1/approvals`.
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let mut pending_only = true;
    let mut tenant = None;
    let mut limit = MAX_LIST;
    for (name, value) in &params {
        match name.as_str() {
            "status" => {
                pending_only = match value.as_str() {
                    "pending" => true,
                    "all" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "parameter `status`: `pending` or `all`",
                        ));
                    }
                }
            }
            "tenant" => tenant = Some(value.as_str()),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIST).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("parameter `limit`: 1 to {MAX_LIST}"))
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`: expected `status`, `tenant` or `limit`"
                )));
            }
        }
    }
    let approvals = state
        .pipeline()
        .approvals()
        .list(tenant, pending_only, now_ms(), limit)
        .await
        .map_err(|e| store_failed(&e))?;
    Ok(Json(json!({ "approvals": approvals })))
}

/// `GET /v1/approvals/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    check_id(&id)?;
    state
        .pipeline()
        .approvals()
        .get(&id, now_ms())
        .await
        .map_err(|e| store_failed(&e))?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    reason: String,
}

/// `POST /v1/approvals/{id}/approve`.
pub(crate) async fn approve(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<Approval>, ApiError> {
    answer(&state, &admin, &id, true, req).await
}

/// `POST /v1/approvals/{id}/deny`.
pub(crate) async fn deny(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<Approval>, ApiError> {
    answer(&state, &admin, &id, false, req).await
}

/// Answers approval `id` for `admin` with the JSON body's reason (the console's answers too).
pub(crate) async fn answer(
    state: &AppState,
    admin: &Admin,
    id: &str,
    approve: bool,
    req: Request,
) -> Result<Json<Approval>, ApiError> {
    check_id(id)?;
    let body = json_body(state, req, false).await?;
    let Answer { reason } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    if reason.trim().is_empty() || reason.len() > MAX_APPROVAL_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "field `reason`: 1 to {MAX_APPROVAL_REASON_BYTES} bytes, not blank"
        )));
    }
    let resolved = state
        .pipeline()
        .resolve_approval(id, approve, &admin.key_id, &reason)
        .await
        .map_err(refused)?;
    match resolved {
        Resolved::Done(approval) => Ok(Json(approval)),
        Resolved::NotFound => Err(not_found(id)),
        Resolved::Expired(_) => Err(ApiError::new(
            ErrorCode::ApprovalExpired,
            format!("approval `{id}` expired before it was answered (expiry is a deny)"),
        )),
        Resolved::Settled(approval) => Err(ApiError::new(
            ErrorCode::ApprovalSettled,
            format!("approval `{id}` is {} already", approval.status.as_str()),
        )),
    }
}
