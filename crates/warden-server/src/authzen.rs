//! The AuthZEN Authorization API 1.0 (OpenID Foundation): `POST /access/v1/evaluation`,
//! `POST /access/v1/evaluations` and `GET /.well-known/authzen-configuration`.
//!
//! Thin handlers: parse the AuthZEN request, map it onto a Warden [`DecisionRequest`], decide it
//! through the daemon's one decision pipeline (sessions, tokens, metrics, decision log, audit:
//! exactly as `/v1/decide` and `/v1/decide/batch` do), answer `{"decision", "context"}`. The
//! mapping, the limits and the error answers are documented in `docs/serve.md` ("AuthZEN"):
//!
//! - `subject` -> `principal` `TYPE:ID`; `subject.properties.session` -> `session`;
//! - `resource.type` `tool`: `resource.id` is the tool, `action.name` `call`/`tool_call` is a
//!   `tool_call` with `resource.properties.arguments` as `args`, `result`/`tool_result` a
//!   `tool_result` with `resource.properties.result`;
//! - any other resource: a `tool_call` of the tool `RESOURCE_TYPE:ACTION_NAME` whose `args` are
//!   the three entities as sent (`{"subject", "action", "resource"}`);
//! - `context` -> `context`.
//!
//! Fail closed: a request that cannot be mapped is a 400 naming the AuthZEN field (one
//! evaluation of a batch: `"decision": false` with the error in its `context`), and a decision
//! that cannot be made is never answered `true`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use warden::{Decision, Kind, Request as DecisionRequest, Verdict};
use warden_core::request::{MAX_REQUEST_DEPTH, depth};

use crate::AppState;
use crate::auth::Caller;
use crate::body::json_body;
use crate::error::{ApiError, ErrorCode};
use crate::handlers::{asking, refused};
use crate::middleware::RequestId;
use crate::snapshot::PolicyKind;

/// The path of the Access Evaluation API.
pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
/// The path of the Access Evaluations (batch) API.
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
/// The path of the Policy Decision Point metadata document.
pub const CONFIGURATION_PATH: &str = "/.well-known/authzen-configuration";

/// The resource type whose `id` is a tool name (an agent calling a tool).
const TOOL: &str = "tool";

/// A field of the AuthZEN request at fault, and what is wrong with it.
#[derive(Debug)]
struct Invalid {
    /// Dotted path of the field (`subject.id`, `evaluations[2].resource`).
    field: String,
    /// What is wrong.
    message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::bad_request(format!("field `{}`: {}", e.field, e.message))
    }
}

/// Why one evaluation of a batch was not decided: answered `"decision": false` with
/// `context.error` = `{status, code, message}`.
#[derive(Debug)]
struct ItemError {
    status: u16,
    code: &'static str,
    message: String,
}

impl From<ApiError> for ItemError {
    fn from(e: ApiError) -> Self {
        Self {
            status: e.status.as_u16(),
            code: e.code.as_str(),
            message: e.message,
        }
    }
}

impl From<Invalid> for ItemError {
    fn from(e: Invalid) -> Self {
        ApiError::from(e).into()
    }
}

impl ItemError {
    /// The evaluation's answer: a denial carrying the error.
    fn answer(&self) -> Value {
        json!({
            "decision": false,
            "context": {"error": {"status": self.status, "code": self.code, "message": self.message}},
        })
    }
}

/// `options.evaluations_semantic` of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    /// Every evaluation is decided (one all-or-nothing batch of the pipeline).
    ExecuteAll,
    /// In order; stops after the first evaluation that is not `true` (`&&`).
    DenyOnFirstDeny,
    /// In order; stops after the first evaluation that is `true` (`||`).
    PermitOnFirstPermit,
}

/// `POST /access/v1/evaluation`: one AuthZEN request -> `{"decision": bool, "context": {...}}`.
pub async fn evaluation(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let doc = read(&state, &caller, req).await?;
    decide_one(&state, &caller, &request_id.0, &doc).await
}

/// `POST /access/v1/evaluations`: `evaluations` (at most `max_batch_items`), each completed by
/// the top-level `subject`, `action`, `resource` and `context` it omits, decided per
/// `options.evaluations_semantic` -> `{"evaluations": [...]}` in request order. Without
/// `evaluations` (or with an empty array) it is the single evaluation.
pub async fn evaluations(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let doc = read(&state, &caller, req).await?;
    let items = match doc.get("evaluations") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.is_empty() => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(Invalid::new("evaluations", "must be an array").into()),
    };
    let Some(items) = items else {
        return decide_one(&state, &caller, &request_id.0, &doc).await;
    };
    let max = state.config().max_batch_items;
    if items.len() > max {
        return Err(Invalid::new(
            "evaluations",
            format!(
                "at most {max} evaluations (max_batch_items), not {}",
                items.len()
            ),
        )
        .into());
    }
    let semantic = semantic(&doc)?;
    let limit = state.config().max_identifier_bytes;
    // The defaults must be valid themselves: a bad one is the whole request's fault.
    for entity in [Entity::Subject, Entity::Action, Entity::Resource] {
        if let Some(value) = present(&doc, entity.key()) {
            entity.check(value, entity.key(), limit)?;
        }
    }
    if let Some(context) = present(&doc, "context") {
        context_map(context, "context", limit)?;
    }
    let prepared: Vec<Result<DecisionRequest, ItemError>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| prepare_item(&state, &caller, &doc, i, item))
        .collect();
    // The request took one token of the key's rate limit on its way in; each further
    // evaluation takes one now (a batch of N takes N, whatever its semantic).
    crate::auth::charge_decisions(&state, &caller, items.len().saturating_sub(1)).await?;
    let answers = match semantic {
        Semantic::ExecuteAll => execute_all(state, caller, request_id.0, prepared).await?,
        Semantic::DenyOnFirstDeny | Semantic::PermitOnFirstPermit => {
            in_order(&state, &caller, &request_id.0, prepared, semantic).await
        }
    };
    Ok(Json(json!({ "evaluations": answers })).into_response())
}

/// `GET /.well-known/authzen-configuration`: the Policy Decision Point metadata. The PDP
/// identifier is the URL the client used: `https` when `X-Forwarded-Proto` says so (a proxy
/// terminating TLS), else `http`, and the request's host (`Host`, or the authority of an
/// HTTP/2 request). No key needed.
pub async fn configuration(headers: HeaderMap, uri: Uri) -> Response {
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let Some(authority) = authority.filter(|a| plain_authority(a)) else {
        return ApiError::bad_request("field `Host`: a host is required to name the endpoints")
            .into_response();
    };
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| v.eq_ignore_ascii_case("https"))
        .map_or("http", |_| "https");
    let base = format!("{scheme}://{authority}");
    let mut response = Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}{EVALUATION_PATH}"),
        "access_evaluations_endpoint": format!("{base}{EVALUATIONS_PATH}"),
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("x-forwarded-proto"));
    response
}

/// A host with an optional port: letters, digits, `.`, `-`, `:`, `[`, `]` (IPv6), at most 255
/// bytes; nothing that could turn the URLs into something else.
fn plain_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority.len() <= 255
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The body as a JSON object, once the caller's policy is known to be a loaded Warden policy.
/// A body that is not `application/json` is a 400 here (AuthZEN's error codes), not a 415.
async fn read(
    state: &AppState,
    caller: &Caller,
    req: Request,
) -> Result<Map<String, Value>, ApiError> {
    let body = json_body(state, req, false).await.map_err(|e| {
        if e.code == ErrorCode::UnsupportedMediaType {
            ApiError::bad_request("field `Content-Type`: the body must be `application/json`")
        } else {
            e
        }
    })?;
    let loaded = caller.snapshot.policies.get(&caller.policy).ok_or_else(|| {
        tracing::error!(tenant = %caller.tenant, policy = %caller.policy, "the tenant's policy is not loaded");
        ApiError::new(
            ErrorCode::PolicyUnavailable,
            "the policy for this key is not loaded",
        )
    })?;
    if let PolicyKind::Rego(..) = loaded.kind {
        return Err(ApiError::bad_request(
            "this key's policy is a Rego policy: use `POST /v1/data/{path}`",
        ));
    }
    warden_core::unique_keys::reject_duplicate_keys(&body)?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(ApiError::bad_request(
            "the body must be a JSON object (an AuthZEN request)",
        )),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// One evaluation: the request's own `subject`, `action`, `resource` and `context`.
async fn decide_one(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    doc: &Map<String, Value>,
) -> Result<Response, ApiError> {
    let limit = state.config().max_identifier_bytes;
    let mut parts = Vec::with_capacity(3);
    for entity in [Entity::Subject, Entity::Action, Entity::Resource] {
        let value = present(doc, entity.key())
            .ok_or_else(|| Invalid::new(entity.key(), "required (an object)"))?;
        parts.push((value, entity.key().to_owned()));
    }
    let context = present(doc, "context").map(|c| (c, "context".to_owned()));
    let mut request = map_request(&parts, context, limit)?;
    caller.bind_principal(&mut request, "")?;
    crate::signing::check_mintable(state, caller, &request)?;
    let decision = state
        .pipeline()
        .decide(&asking(caller, request_id), &request)
        .await
        .map_err(refused)?;
    Ok(Json(answer(&decision)).into_response())
}

/// The value of `key` in `doc`, unless absent or null (the spec asks senders to omit nulls).
fn present<'a>(doc: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    doc.get(key).filter(|v| !v.is_null())
}

/// `options.evaluations_semantic` (other options are ignored, as unknown fields are).
fn semantic(doc: &Map<String, Value>) -> Result<Semantic, Invalid> {
    let Some(options) = present(doc, "options") else {
        return Ok(Semantic::ExecuteAll);
    };
    let options = options
        .as_object()
        .ok_or_else(|| Invalid::new("options", "must be an object"))?;
    match present(options, "evaluations_semantic") {
        None => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) if s == "execute_all" => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) if s == "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
        Some(Value::String(s)) if s == "permit_on_first_permit" => {
            Ok(Semantic::PermitOnFirstPermit)
        }
        Some(_) => Err(Invalid::new(
            "options.evaluations_semantic",
            "must be `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`",
        )),
    }
}

/// Evaluation `i` of a batch completed by the defaults and mapped (not yet decided).
fn prepare_item(
    state: &AppState,
    caller: &Caller,
    doc: &Map<String, Value>,
    i: usize,
    item: &Value,
) -> Result<DecisionRequest, ItemError> {
    let at = format!("evaluations[{i}]");
    let item = item
        .as_object()
        .ok_or_else(|| Invalid::new(at.clone(), "must be an object"))?;
    let limit = state.config().max_identifier_bytes;
    let mut parts = Vec::with_capacity(3);
    for entity in [Entity::Subject, Entity::Action, Entity::Resource] {
        let key = entity.key();
        // An entity given in the evaluation replaces the default whole (no merging of fields).
        let part = match (present(item, key), present(doc, key)) {
            (Some(own), _) => (own, format!("{at}.{key}")),
            (None, Some(default)) => (default, key.to_owned()),
            (None, None) => {
                return Err(Invalid::new(
                    format!("{at}.{key}"),
                    "required: neither this evaluation nor the request gives one",
                )
                .into());
            }
        };
        parts.push(part);
    }
    let context = match (present(item, "context"), present(doc, "context")) {
        (Some(own), _) => Some((own, format!("{at}.context"))),
        (None, Some(default)) => Some((default, "context".to_owned())),
        (None, None) => None,
    };
    let request = map_request(&parts, context, limit)?;
    crate::signing::check_mintable(state, caller, &request).map_err(|mut e| {
        e.message = format!("{at}: {}", e.message);
        e
    })?;
    Ok(request)
}

/// `execute_all`: the valid evaluations decided as one batch of the pipeline (all or nothing,
/// one policy snapshot, state carried from one evaluation to the next, as
/// `/v1/decide/batch`); the invalid ones answered `false` with their error, in place.
async fn execute_all(
    state: AppState,
    caller: Caller,
    request_id: Arc<str>,
    prepared: Vec<Result<DecisionRequest, ItemError>>,
) -> Result<Vec<Value>, ApiError> {
    let mut requests = Vec::with_capacity(prepared.len());
    let mut slots = Vec::with_capacity(prepared.len());
    for item in prepared {
        match item {
            Ok(request) => {
                slots.push(Ok(requests.len()));
                requests.push(request);
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    let decisions = if requests.is_empty() {
        Vec::new()
    } else {
        // In its own task, as `/v1/decide/batch`: a request dropped (timeout, client gone)
        // while the entries are written cannot stop the batch between its audit and its
        // session writes; the task sees nobody waits and voids the entries instead.
        let (tx, rx) = tokio::sync::oneshot::channel();
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
        // The caller's trace context goes with the task, as for `/v1/decide/batch`.
        tokio::spawn(opentelemetry::context::FutureExt::with_current_context(
            task,
        ));
        match rx.await {
            Ok(result) => result?,
            Err(_) => {
                tracing::error!("batch task ended without an answer; answering 500");
                return Err(ApiError::internal());
            }
        }
    };
    slots
        .into_iter()
        .map(|slot| match slot {
            Ok(n) => decisions.get(n).map(answer).ok_or_else(|| {
                tracing::error!("the pipeline answered fewer decisions than asked");
                ApiError::internal()
            }),
            Err(e) => Ok(e.answer()),
        })
        .collect()
}

/// `deny_on_first_deny` / `permit_on_first_permit`: one evaluation after the other, each a
/// decision of the pipeline as `/v1/decide` makes it, stopping after the first that settles the
/// answer; the evaluations after it are not decided (no session change, no audit entry) and
/// not answered. An evaluation that is invalid or cannot be decided counts as a denial.
async fn in_order(
    state: &AppState,
    caller: &Caller,
    request_id: &str,
    prepared: Vec<Result<DecisionRequest, ItemError>>,
    semantic: Semantic,
) -> Vec<Value> {
    let mut answers = Vec::with_capacity(prepared.len());
    for item in prepared {
        let (allowed, answered) = match item {
            Err(e) => (false, e.answer()),
            Ok(request) => match state
                .pipeline()
                .decide(&asking(caller, request_id), &request)
                .await
            {
                Ok(decision) => (decision.verdict == Verdict::Allow, answer(&decision)),
                Err(e) => (false, ItemError::from(refused(e)).answer()),
            },
        };
        answers.push(answered);
        let settled = match semantic {
            Semantic::DenyOnFirstDeny => !allowed,
            Semantic::PermitOnFirstPermit => allowed,
            Semantic::ExecuteAll => false,
        };
        if settled {
            break;
        }
    }
    answers
}

/// The three entities of an evaluation.
#[derive(Debug, Clone, Copy)]
enum Entity {
    Subject,
    Action,
    Resource,
}

impl Entity {
    fn key(self) -> &'static str {
        match self {
            Entity::Subject => "subject",
            Entity::Action => "action",
            Entity::Resource => "resource",
        }
    }

    /// Checks `value` as this entity (named `at`), as [`map_request`] will read it.
    fn check(self, value: &Value, at: &str, limit: usize) -> Result<(), Invalid> {
        match self {
            Entity::Subject => subject(value, at, limit).map(drop),
            Entity::Action => action(value, at, limit).map(drop),
            Entity::Resource => typed(value, at, limit).map(drop),
        }
    }
}

/// A `subject` or `resource`: `type` and `id`, and `properties` when given.
struct Typed<'a> {
    kind: &'a str,
    id: &'a str,
    properties: Option<&'a Map<String, Value>>,
}

/// An `action`: its `name` (its `properties`, when given, must be an object).
struct Action<'a> {
    name: &'a str,
}

/// The subject as Warden reads it: the principal `TYPE:ID` and the session.
struct Subject {
    principal: String,
    session: Option<String>,
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| Invalid::new(at, "must be an object"))
}

/// A required, non-empty string of at most `limit` bytes (`max_identifier_bytes`).
fn identifier<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    at: &str,
    limit: usize,
) -> Result<&'a str, Invalid> {
    let field = || format!("{at}.{key}");
    match present(map, key) {
        None => Err(Invalid::new(field(), "required (a string)")),
        Some(Value::String(s)) if s.is_empty() => Err(Invalid::new(field(), "must not be empty")),
        Some(Value::String(s)) if s.len() > limit => Err(Invalid::new(
            field(),
            format!("longer than {limit} bytes (max_identifier_bytes)"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Invalid::new(field(), "must be a string")),
    }
}

/// `properties`, when given: an object.
fn properties<'a>(
    map: &'a Map<String, Value>,
    at: &str,
) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    present(map, "properties")
        .map(|p| object(p, &format!("{at}.properties")))
        .transpose()
}

fn typed<'a>(value: &'a Value, at: &str, limit: usize) -> Result<Typed<'a>, Invalid> {
    let map = object(value, at)?;
    Ok(Typed {
        kind: identifier(map, "type", at, limit)?,
        id: identifier(map, "id", at, limit)?,
        properties: properties(map, at)?,
    })
}

fn action<'a>(value: &'a Value, at: &str, limit: usize) -> Result<Action<'a>, Invalid> {
    let map = object(value, at)?;
    properties(map, at)?;
    Ok(Action {
        name: identifier(map, "name", at, limit)?,
    })
}

fn subject(value: &Value, at: &str, limit: usize) -> Result<Subject, Invalid> {
    let Typed {
        kind,
        id,
        properties,
    } = typed(value, at, limit)?;
    let principal = format!("{kind}:{id}");
    if principal.len() > limit {
        return Err(Invalid::new(
            at,
            format!("the principal `type:id` is longer than {limit} bytes (max_identifier_bytes)"),
        ));
    }
    let session = match properties {
        Some(props) if present(props, "session").is_some() => {
            let at = format!("{at}.properties");
            Some(identifier(props, "session", &at, limit)?.to_owned())
        }
        _ => None,
    };
    Ok(Subject { principal, session })
}

/// `context`: an object whose attribute names are at most `limit` bytes.
fn context_map(value: &Value, at: &str, limit: usize) -> Result<Map<String, Value>, Invalid> {
    let map = object(value, at)?;
    if map.keys().any(|k| k.len() > limit) {
        return Err(Invalid::new(
            at,
            format!("an attribute name is longer than {limit} bytes (max_identifier_bytes)"),
        ));
    }
    if depth(value) + 1 > MAX_REQUEST_DEPTH {
        return Err(too_deep(at));
    }
    Ok(map.clone())
}

fn too_deep(at: &str) -> Invalid {
    Invalid::new(
        at,
        format!("nesting deeper than {MAX_REQUEST_DEPTH} levels"),
    )
}

/// The Warden request of one evaluation. `parts` are the subject, the action and the resource,
/// each with the name of the field it came from (its own, or the batch's default).
fn map_request(
    parts: &[(&Value, String)],
    context: Option<(&Value, String)>,
    limit: usize,
) -> Result<DecisionRequest, Invalid> {
    let [
        (subject_value, subject_at),
        (action_value, action_at),
        (resource_value, resource_at),
    ] = parts
    else {
        return Err(Invalid::new(
            "",
            "subject, action and resource are required",
        ));
    };
    let Subject { principal, session } = subject(subject_value, subject_at, limit)?;
    let Action { name } = action(action_value, action_at, limit)?;
    let resource = typed(resource_value, resource_at, limit)?;
    let context = context
        .map(|(value, at)| context_map(value, &at, limit))
        .transpose()?;
    let mut request = DecisionRequest {
        session,
        principal: Some(principal),
        context,
        ..DecisionRequest::default()
    };
    if resource.kind == TOOL {
        request.tool = Some(resource.id.to_owned());
        let property = |key: &str| resource.properties.and_then(|p| present(p, key));
        match name {
            "call" | "tool_call" => {
                request.kind = Kind::ToolCall;
                let at = format!("{resource_at}.properties.arguments");
                request.args = property("arguments")
                    .map(|args| {
                        object(args, &at)?;
                        if depth(args) + 1 > MAX_REQUEST_DEPTH {
                            return Err(too_deep(&at));
                        }
                        Ok(args.clone())
                    })
                    .transpose()?;
            }
            "result" | "tool_result" => {
                request.kind = Kind::ToolResult;
                let at = format!("{resource_at}.properties.result");
                request.result = property("result")
                    .map(|result| {
                        if depth(result) + 1 > MAX_REQUEST_DEPTH {
                            return Err(too_deep(&at));
                        }
                        Ok(result.clone())
                    })
                    .transpose()?;
            }
            _ => {
                return Err(Invalid::new(
                    format!("{action_at}.name"),
                    "on a `tool` resource the action is `call` (or `tool_call`) or `result` \
                     (or `tool_result`)",
                ));
            }
        }
    } else {
        let tool = format!("{}:{name}", resource.kind);
        if tool.len() > limit {
            return Err(Invalid::new(
                format!("{resource_at}.type"),
                format!(
                    "the tool `resource.type:action.name` is longer than {limit} bytes \
                     (max_identifier_bytes)"
                ),
            ));
        }
        // The arguments hold the entities one level down: `{"subject": {...}, ...}`.
        for (value, at) in parts {
            if depth(value) + 2 > MAX_REQUEST_DEPTH {
                return Err(too_deep(at));
            }
        }
        request.kind = Kind::ToolCall;
        request.tool = Some(tool);
        request.args = Some(json!({
            "subject": subject_value,
            "action": action_value,
            "resource": resource_value,
        }));
    }
    Ok(request)
}

/// The answer of one decision: `decision` is the enforced verdict (`true`: allow; a `dry_run`
/// policy allows), `context` the rest of Warden's decision without nulls and empty lists, plus
/// `reason`, the first reason of a denial.
fn answer(decision: &Decision) -> Value {
    let mut context: Map<String, Value> = match serde_json::to_value(decision) {
        // Filtered rather than removed from: the fields keep Warden's order.
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| {
                k != "decision" && !(v.is_null() || v.as_array().is_some_and(Vec::is_empty))
            })
            .collect(),
        _ => Map::new(),
    };
    if let Some(reason) = decision.reasons.first() {
        context.insert("reason".to_owned(), Value::from(&**reason));
    }
    json!({
        "decision": decision.verdict == Verdict::Allow,
        "context": context,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn map(doc: Value) -> Result<DecisionRequest, Invalid> {
        let doc = doc.as_object().unwrap().clone();
        let parts: Vec<(&Value, String)> = ["subject", "action", "resource"]
            .iter()
            .map(|k| (doc.get(*k).unwrap(), (*k).to_owned()))
            .collect();
        let context = doc.get("context").map(|c| (c, "context".to_owned()));
        map_request(&parts, context, 64)
    }

    #[test]
    fn a_tool_resource_is_a_tool_call_with_its_arguments() {
        let request = map(json!({
            "subject": {"type": "agent", "id": "bot", "properties": {"session": "s1"}},
            "action": {"name": "call"},
            "resource": {"type": "tool", "id": "send_email",
                         "properties": {"arguments": {"to": "a@b.test"}}},
            "context": {"time": "1985-10-26T01:22-07:00"}
        }))
        .unwrap();
        assert_eq!(request.principal.as_deref(), Some("agent:bot"));
        assert_eq!(request.session.as_deref(), Some("s1"));
        assert_eq!(request.kind, Kind::ToolCall);
        assert_eq!(request.tool.as_deref(), Some("send_email"));
        assert_eq!(request.args, Some(json!({"to": "a@b.test"})));
        assert_eq!(
            request.context.unwrap().get("time"),
            Some(&json!("1985-10-26T01:22-07:00"))
        );
    }

    #[test]
    fn another_resource_is_an_operation_on_it() {
        let doc = json!({
            "subject": {"type": "user", "id": "alice@example.com"},
            "action": {"name": "can_read", "properties": {"method": "GET"}},
            "resource": {"type": "account", "id": "123"}
        });
        let request = map(doc.clone()).unwrap();
        assert_eq!(request.tool.as_deref(), Some("account:can_read"));
        assert_eq!(request.kind, Kind::ToolCall);
        assert_eq!(request.args, Some(doc));
        assert_eq!(request.session, None);
    }

    #[test]
    fn faults_name_the_authzen_field() {
        let field = |doc: Value| map(doc).unwrap_err().field;
        let ok_subject = json!({"type": "user", "id": "alice"});
        let ok_resource = json!({"type": "record", "id": "record-1"});
        assert_eq!(
            field(
                json!({"subject": {"id": "alice"}, "action": {"name": "read"}, "resource": ok_resource})
            ),
            "subject.type"
        );
        assert_eq!(
            field(json!({"subject": ok_subject, "action": {"name": 123}, "resource": ok_resource})),
            "action.name"
        );
        assert_eq!(
            field(json!({"subject": "alice", "action": {"name": "read"}, "resource": ok_resource})),
            "subject"
        );
        assert_eq!(
            field(json!({"subject": ok_subject, "action": {"name": "read"},
                         "resource": {"type": "tool", "id": "x"}})),
            "action.name"
        );
        assert_eq!(
            field(json!({"subject": ok_subject, "action": {"name": "call"},
                         "resource": {"type": "tool", "id": "x", "properties": {"arguments": [1]}}})),
            "resource.properties.arguments"
        );
        assert_eq!(
            field(
                json!({"subject": {"type": "user", "id": "a", "properties": {"session": 7}},
                         "action": {"name": "read"}, "resource": ok_resource})
            ),
            "subject.properties.session"
        );
        let long = "x".repeat(40);
        assert_eq!(
            field(
                json!({"subject": {"type": long, "id": long}, "action": {"name": "read"},
                         "resource": ok_resource})
            ),
            "subject"
        );
        assert_eq!(
            field(json!({"subject": ok_subject, "action": {"name": "read"},
                         "resource": ok_resource, "context": {"x".repeat(65): 1}})),
            "context"
        );
    }

    #[test]
    fn authorities_are_plain_hosts() {
        assert!(plain_authority("pdp.example.com"));
        assert!(plain_authority("127.0.0.1:8181"));
        assert!(plain_authority("[::1]:8181"));
        assert!(!plain_authority(""));
        assert!(!plain_authority("evil.test/path"));
        assert!(!plain_authority("a@b"));
    }
}
