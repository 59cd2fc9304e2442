//! OPA's policy API (`/v1/policies`) and the writes of its Data API (`PUT`/`PATCH`/`DELETE
//! /v1/data/{path}`), on the caller's own policy.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `GET /v1/policies` | any key | `{"result": [{"id", "ast", "raw"}], "policies": [...]}` |
//! | `GET /v1/policies/{id}` | any key | `{"result": {"id", "ast", "raw"}}`, 404 `resource_not_found` |
//! | `PUT /v1/policies/{id}` (Rego text) | admin key | 200 `{}`; 400 with OPA's `errors` when it does not compile |
//! | `DELETE /v1/policies/{id}` | admin key | 200 `{}` |
//! | `PUT /v1/data/{path}` (JSON) | admin key | 204; 304 with `If-None-Match: *` when it exists |
//! | `PATCH /v1/data/{path}` (JSON Patch) | admin key | 204, all or nothing |
//! | `DELETE /v1/data/{path}` | admin key | 204 |
//!
//! A Rego policy's modules are its policies in OPA's sense (a file's module has the file's name
//! as its id); a change compiles the whole policy before it is swapped in, so a change that
//! breaks it is refused and changes nothing. `raw` (the source) is shown to admin keys only: an
//! agent's key may decide against the policy without reading its rules. `ast` is the part of
//! OPA's AST its clients read: the package path and the rules' names. Each change is audited.

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use warden::rego::RegoError;

use crate::AppState;
use crate::auth::{Admin, Caller};
use crate::body::json_body;
use crate::error::{ApiError, ErrorCode};
use crate::overlay::{self, Change, ChangeError, ChangeFailure};
use crate::snapshot::{LoadedPolicy, PolicyKind};

/// OPA's AST of a module, as far as its clients read it: `package.path` (terms, `data` first)
/// and `rules[].head.name`.
fn ast(package: &[String], rules: &[String]) -> Value {
    let path: Vec<Value> = package
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let kind = if i == 0 { "var" } else { "string" };
            json!({"type": kind, "value": part})
        })
        .collect();
    let rules: Vec<Value> = rules
        .iter()
        .map(|name| json!({"head": {"name": name}}))
        .collect();
    json!({"package": {"path": path}, "rules": rules})
}

/// The caller's policy in OPA's shape: one entry per Rego module, or one for a Warden policy
/// (its name as id, no AST: it is not Rego).
fn modules(loaded: &LoadedPolicy, admin: bool) -> Vec<Value> {
    match &loaded.kind {
        PolicyKind::Warden(_) => vec![json!({"id": loaded.name, "ast": {}})],
        PolicyKind::Rego(rego, sources) => rego
            .outlines()
            .iter()
            .map(|outline| {
                let mut entry = Map::new();
                entry.insert("id".into(), Value::String(outline.module.clone()));
                if admin
                    && let Some(module) = sources.modules.iter().find(|m| m.name == outline.module)
                {
                    entry.insert("raw".into(), Value::String(module.source.clone()));
                }
                entry.insert("ast".into(), ast(&outline.package, &outline.rules));
                Value::Object(entry)
            })
            .collect(),
    }
}

fn is_admin(caller: &Caller) -> bool {
    caller.key_id.is_some() && caller.role == warden::state::KeyRole::Admin
}

/// `GET /v1/policies`: the caller's policy (tenants do not see each other's), in OPA's shape
/// (`result`) and Warden's (`policies`: name, version, digest, load time, kind).
pub async fn list(Extension(caller): Extension<Caller>) -> Response {
    let loaded = caller.snapshot.policies.get(&caller.policy);
    let result: Vec<Value> = loaded
        .map(|p| modules(p, is_admin(&caller)))
        .unwrap_or_default();
    let policies: Vec<Value> = loaded
        .map(|p| {
            json!({
                "name": p.name,
                "version": p.version,
                "digest": p.digest,
                "loaded_at": p.loaded_at,
                "kind": match p.kind { PolicyKind::Warden(_) => "warden", PolicyKind::Rego(..) => "rego" },
            })
        })
        .into_iter()
        .collect();
    axum::Json(json!({"result": result, "policies": policies})).into_response()
}

fn no_module(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ResourceNotFound,
        format!("no policy module `{id}`"),
    )
}

/// `GET /v1/policies/{id}`: one module of the caller's policy.
pub async fn show(Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    let found = caller.snapshot.policies.get(&caller.policy).and_then(|p| {
        modules(p, is_admin(&caller))
            .into_iter()
            .find(|m| m.get("id").and_then(Value::as_str) == Some(id.as_str()))
    });
    match found {
        Some(module) => axum::Json(json!({"result": module})).into_response(),
        None => no_module(&id).into_response(),
    }
}

/// OPA's answer to a module that does not compile: 400 `invalid_parameter` with one entry per
/// error in `errors`, which OPA's clients read.
fn compile_error(e: &RegoError) -> Response {
    let error = match e {
        RegoError::Module {
            module,
            line,
            column,
            message,
        } => json!({
            "code": "rego_compile_error",
            "message": message,
            "location": {"file": module, "row": line, "col": column},
        }),
        other => json!({"code": "rego_compile_error", "message": other.to_string()}),
    };
    let body = json!({
        "code": "invalid_parameter",
        "message": "error(s) occurred while compiling module(s)",
        "errors": [error],
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refused(failure: ChangeFailure) -> Response {
    match failure {
        ChangeFailure::NoPolicy(_) => {
            ApiError::new(ErrorCode::PolicyUnavailable, failure.to_string()).into_response()
        }
        ChangeFailure::NotRego(_) => ApiError::bad_request(failure.to_string()).into_response(),
        ChangeFailure::Change(ChangeError::NotFound(message)) => {
            ApiError::new(ErrorCode::ResourceNotFound, message).into_response()
        }
        ChangeFailure::Change(ChangeError::Invalid(message)) => {
            ApiError::bad_request(message).into_response()
        }
        ChangeFailure::Compile(e) => compile_error(&e),
    }
}

/// Applies `change` to the caller's policy and audits it as `action` on `target`; `content` is
/// what was written (its hash is audited, never the content).
async fn apply(
    state: &AppState,
    caller: &Caller,
    admin: &Admin,
    action: &'static str,
    target: String,
    content: &Value,
    change: impl FnOnce(&overlay::RegoSources) -> Result<Change, ChangeError>,
) -> Result<(), Response> {
    let changed = state
        .change_rego(&caller.policy, change)
        .await
        .map_err(refused)?;
    crate::audit::audit_policy_change(
        state.effects().audit.as_ref(),
        &caller.tenant,
        &admin.key_id,
        action,
        target,
        content,
        &changed.digest,
    )
    .await
    .map_err(IntoResponse::into_response)
}

/// `PUT /v1/policies/{id}`: adds or replaces a module of the caller's Rego policy (admin key).
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    admin: Admin,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Response> {
    overlay::check_module_id(&id)
        .map_err(|e| ApiError::bad_request(e.to_string()).into_response())?;
    let body = json_body(&state, req, true)
        .await
        .map_err(IntoResponse::into_response)?;
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the policy must be UTF-8 text").into_response())?;
    let content = Value::String(source.clone());
    let change = Change::PutModule {
        id: id.clone(),
        source,
    };
    apply(&state, &caller, &admin, "put_policy", id, &content, |_| {
        Ok(change)
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `DELETE /v1/policies/{id}`: removes a module of the caller's Rego policy (admin key).
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let change = Change::DeleteModule { id: id.clone() };
    apply(
        &state,
        &caller,
        &admin,
        "delete_policy",
        id,
        &Value::Null,
        |_| Ok(change),
    )
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// The data path of a write: its segments (from the root).
fn data_path(path: Option<Path<String>>) -> Vec<String> {
    path.map(|Path(p)| {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn describe(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

/// A write's body: one JSON document (duplicate keys refused).
async fn json_document(state: &AppState, req: Request) -> Result<Value, Response> {
    let body = json_body(state, req, true)
        .await
        .map_err(IntoResponse::into_response)?;
    warden_core::unique_keys::reject_duplicate_keys(&body)
        .map_err(|e| ApiError::from(e).into_response())?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")).into_response())
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `PUT /v1/data/{path}`: creates or replaces a document of the caller's Rego policy's data
/// (admin key); with `If-None-Match: *`, only when there is none (304 otherwise).
pub async fn data_put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    admin: Admin,
    headers: HeaderMap,
    path: Option<Path<String>>,
    req: Request,
) -> Result<Response, Response> {
    let path = data_path(path);
    let value = json_document(&state, req).await?;
    let only_new = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let mut exists = false;
    let target = describe(&path);
    let change = Change::SetData {
        path: path.clone(),
        value: value.clone(),
    };
    let result = apply(
        &state,
        &caller,
        &admin,
        "put_data",
        target,
        &value,
        |sources| {
            if only_new && overlay::get(&sources.data, &path).is_some() {
                exists = true;
                // Not a failure: nothing to change. Reported as 304 below.
                return Err(ChangeError::NotFound(String::new()));
            }
            Ok(change)
        },
    )
    .await;
    match result {
        Ok(()) => Ok(no_content()),
        Err(_) if exists => Ok(StatusCode::NOT_MODIFIED.into_response()),
        Err(response) => Err(response),
    }
}

/// `PATCH /v1/data/{path}`: applies a JSON Patch (RFC 6902) to a document of the caller's Rego
/// policy's data (admin key), all or nothing.
pub async fn data_patch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    admin: Admin,
    path: Option<Path<String>>,
    req: Request,
) -> Result<Response, Response> {
    let path = data_path(path);
    let ops = json_document(&state, req).await?;
    let target = describe(&path);
    let audited = ops.clone();
    apply(
        &state,
        &caller,
        &admin,
        "patch_data",
        target,
        &audited,
        |sources| overlay::patch(&sources.data, &path, ops),
    )
    .await?;
    Ok(no_content())
}

/// `DELETE /v1/data/{path}`: removes a document of the caller's Rego policy's data (admin
/// key); the root becomes `{}`.
pub async fn data_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    admin: Admin,
    path: Option<Path<String>>,
) -> Result<Response, Response> {
    let path = data_path(path);
    let target = describe(&path);
    let change = Change::RemoveData { path };
    apply(
        &state,
        &caller,
        &admin,
        "delete_data",
        target,
        &Value::Null,
        |_| Ok(change),
    )
    .await?;
    Ok(no_content())
}
