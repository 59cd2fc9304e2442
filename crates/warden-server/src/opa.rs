//! OPA's REST API, as OPA's own clients (`@styra/opa`, `opa-python-client`) call it: the Data
//! API (`GET`/`POST /v1/data[/{path}]`), the Query API (`GET`/`POST /v1/query`), the default
//! decision (`POST /`), the batch Data API (`POST /v1/batch/data/{path}`) and `GET /health`, with OPA's error body
//! (`{"code", "message"}`) and its query options.
//!
//! Each evaluation is [`handlers::evaluate_data`]: a Rego policy's document, or a Warden
//! policy's decision through the decision pipeline. What OPA offers and Warden does not
//! (`explain`, `instrument`, `strict-builtin-errors`) is a 400 naming the option, never
//! silently ignored.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::json_body;
use crate::error::{ApiError, ErrorCode};
use crate::handlers::{evaluate_data, evaluate_query};
use crate::middleware::RequestId;

/// The query parameters of a Data API call.
type Params = Query<Vec<(String, String)>>;

/// The options OPA's Data API takes that change the answer.
#[derive(Debug, Default)]
struct Options {
    pretty: bool,
    metrics: bool,
    provenance: bool,
}

/// OPA's boolean query parameters: present without a value, or `true`, is on.
fn flag(value: &str) -> bool {
    value.is_empty() || value.eq_ignore_ascii_case("true")
}

fn unsupported(name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "query parameter `{name}` is not supported by warden"
    ))
}

impl Options {
    fn of(params: &[(String, String)]) -> Result<Self, ApiError> {
        let mut options = Self::default();
        for (name, value) in params {
            match name.as_str() {
                "pretty" => options.pretty = flag(value),
                "metrics" => options.metrics = flag(value),
                "provenance" => options.provenance = flag(value),
                "explain" if !value.eq_ignore_ascii_case("off") => {
                    return Err(unsupported(name));
                }
                "instrument" | "strict-builtin-errors" if flag(value) => {
                    return Err(unsupported(name));
                }
                _ => {}
            }
        }
        Ok(options)
    }

    /// The answer: `body` with the options' members, pretty-printed when asked.
    fn answer(
        &self,
        status: StatusCode,
        mut body: Map<String, Value>,
        started: Instant,
    ) -> Response {
        if self.metrics {
            let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            body.insert(
                "metrics".into(),
                json!({ "timer_server_handler_ns": elapsed }),
            );
        }
        if self.provenance {
            body.insert(
                "provenance".into(),
                json!({ "version": env!("CARGO_PKG_VERSION"), "bundles": {} }),
            );
        }
        let text = if self.pretty {
            serde_json::to_string_pretty(&Value::Object(body))
        } else {
            serde_json::to_string(&Value::Object(body))
        };
        match text {
            Ok(text) => json_response(status, text),
            Err(_) => ApiError::internal().into_response(),
        }
    }
}

fn json_response(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `input` query parameter of a `GET` (JSON), if given.
fn query_input(params: &[(String, String)]) -> Result<Option<Value>, ApiError> {
    params
        .iter()
        .find(|(name, _)| name == "input")
        .map(|(_, text)| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("query parameter `input`: {e}")))
        })
        .transpose()
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// A Data API answer: `{"result": ...}`, or `{}` for an undefined document.
fn result_body(result: Option<Value>) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(result) = result {
        body.insert("result".into(), result);
    }
    body
}

/// A body that must be one JSON object (duplicate keys refused); an empty body is `None`.
fn object_of(body: &[u8]) -> Result<Option<Map<String, Value>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    warden_core::unique_keys::reject_duplicate_keys(body)?;
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(doc)) => Ok(Some(doc)),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// The body of a request that must carry a JSON object.
async fn body_object(state: &AppState, req: Request) -> Result<Map<String, Value>, ApiError> {
    let body = json_body(state, req, true).await?;
    object_of(&body)?.ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
}

/// The body of a `POST`: `(input, whether the `input` key was there)`. An empty body has none.
async fn post_input(state: &AppState, req: Request) -> Result<(Option<Value>, bool), ApiError> {
    let body = json_body(state, req, true).await?;
    Ok(match object_of(&body)? {
        None => (None, false),
        Some(mut doc) => {
            let had = doc.contains_key("input");
            (doc.remove("input"), had)
        }
    })
}

/// `POST /v1/data/{path}` (and `/v1/data`): `{"input": ...}` in, `{"result": ...}` out; a body
/// without `input` is evaluated without one, with OPA's `api_usage_warning`.
pub async fn data_post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    path: Option<Path<String>>,
    Query(params): Params,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = Options::of(&params)?;
    let (input, had_input) = post_input(&state, req).await?;
    let path = path.map(|Path(p)| p).unwrap_or_default();
    let result = evaluate_data(&state, &caller, &request_id, &segments(&path), input).await?;
    let mut body = result_body(result);
    if !had_input {
        body.insert(
            "warning".into(),
            json!({"code": "api_usage_warning", "message": "'input' key missing from the request"}),
        );
    }
    Ok(options.answer(StatusCode::OK, body, started))
}

/// `GET /v1/data/{path}` (and `/v1/data`): the input, if any, is the `input` query parameter
/// (JSON).
pub async fn data_get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    path: Option<Path<String>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = Options::of(&params)?;
    let input = query_input(&params)?;
    let path = path.map(|Path(p)| p).unwrap_or_default();
    let result = evaluate_data(&state, &caller, &request_id, &segments(&path), input).await?;
    Ok(options.answer(StatusCode::OK, result_body(result), started))
}

/// `GET /v1/query?q=QUERY[&input=JSON]`: OPA's Query API, `{"result": [bindings, ...]}`.
pub async fn query_get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = Options::of(&params)?;
    let query = params
        .iter()
        .find(|(name, _)| name == "q")
        .map(|(_, q)| q.as_str())
        .ok_or_else(|| ApiError::bad_request("query parameter `q` (the Rego query) is required"))?;
    let input = query_input(&params)?;
    let found = evaluate_query(&state, &caller, &request_id, query, input).await?;
    let mut body = Map::new();
    body.insert("result".into(), Value::Array(found));
    Ok(options.answer(StatusCode::OK, body, started))
}

/// `POST /v1/query`: `{"query": QUERY, "input": ...}` in, `{"result": [bindings, ...]}` out.
pub async fn query_post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    Query(params): Params,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = Options::of(&params)?;
    let mut doc = body_object(&state, req).await?;
    let Some(Value::String(query)) = doc.remove("query") else {
        return Err(ApiError::bad_request("field `query`: a string is required"));
    };
    let input = doc.remove("input");
    let found = evaluate_query(&state, &caller, &request_id, &query, input).await?;
    let mut body = Map::new();
    body.insert("result".into(), Value::Array(found));
    Ok(options.answer(StatusCode::OK, body, started))
}

/// `POST /`: the default decision (`data.system.main`, OPA's default), the whole body being
/// the input; answers the result itself, unwrapped (404 `undefined_document` when undefined).
pub async fn default_decision(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    Query(params): Params,
    req: Request,
) -> Result<Response, ApiError> {
    let options = Options::of(&params)?;
    let body = json_body(&state, req, true).await?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        warden_core::unique_keys::reject_duplicate_keys(&body)?;
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    match evaluate_data(
        &state,
        &caller,
        &request_id,
        &["system", "main"],
        Some(input),
    )
    .await?
    {
        Some(result) => {
            let text = if options.pretty {
                serde_json::to_string_pretty(&result)
            } else {
                serde_json::to_string(&result)
            };
            text.map(|t| json_response(StatusCode::OK, t))
                .map_err(|_| ApiError::internal())
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "the default decision (data.system.main) is undefined",
        )),
    }
}

/// Inputs in one batch call, at most (beyond: 400, nothing evaluated).
fn batch_limit(state: &AppState) -> usize {
    state.config().max_batch_items
}

/// `POST /v1/batch/data/{path}`: `{"inputs": {"id": input, ...}}` in, `{"responses": {"id":
/// {"result": ...}}}` out (200); when some fail, 207 with each failure as
/// `{"code", "message", "http_status_code"}`.
pub async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(request_id): Extension<RequestId>,
    Path(path): Path<String>,
    Query(params): Params,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let options = Options::of(&params)?;
    let Some(Value::Object(inputs)) = body_object(&state, req).await?.remove("inputs") else {
        return Err(ApiError::bad_request(
            "field `inputs`: an object is required",
        ));
    };
    if inputs.len() > batch_limit(&state) {
        return Err(ApiError::bad_request(format!(
            "field `inputs`: more than {} inputs",
            batch_limit(&state)
        )));
    }
    // Charged like `/v1/decide/batch`: one decision per input (the request took one).
    crate::auth::charge_decisions(&state, &caller, inputs.len().saturating_sub(1)).await?;
    let path_segments = segments(&path);
    let mut responses = Map::new();
    let mut failed = false;
    for (id, input) in inputs {
        let answer =
            match evaluate_data(&state, &caller, &request_id, &path_segments, Some(input)).await {
                Ok(result) => Value::Object(result_body(result)),
                Err(e) => {
                    failed = true;
                    let status = e.code.status();
                    json!({
                        "http_status_code": status.as_u16().to_string(),
                        "code": opa_code(e.code),
                        "message": e.message,
                    })
                }
            };
        responses.insert(id, answer);
    }
    let mut body = Map::new();
    body.insert("responses".into(), Value::Object(responses));
    let status = if failed {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    };
    Ok(options.answer(status, body, started))
}

/// `GET /v1/config`: OPA's configuration document, as much of it as applies to Warden: the
/// default decision's path and the server's labels. Nothing else of the daemon's configuration
/// (paths, URLs, limits) is shown to API callers.
pub async fn config() -> Response {
    Json(json!({"result": {
        "default_decision": "/system/main",
        "labels": {"id": "warden", "version": env!("CARGO_PKG_VERSION")},
    }}))
    .into_response()
}

/// `GET /v1/status`: OPA's status document, as much of it as applies: the server's labels and
/// its plugins (Warden has none that report a state).
pub async fn status() -> Response {
    Json(json!({"result": {
        "labels": {"id": "warden", "version": env!("CARGO_PKG_VERSION")},
        "plugins": {},
    }}))
    .into_response()
}

/// `POST /v1/compile`: OPA's partial evaluation, which regorus cannot do: a clear 501 rather
/// than a wrong answer.
pub async fn compile() -> ApiError {
    ApiError::new(
        ErrorCode::NotImplemented,
        "partial evaluation (/v1/compile) is not supported: Warden's Rego engine (regorus) \
         evaluates complete queries only",
    )
}

/// `GET /health`: 200 `{}` while the daemon is ready (`bundles`, `plugins` are accepted: Warden
/// has no bundles or plugins that could be unready), else 500 with OPA's error body.
pub async fn health(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({})).into_response()
    } else {
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"code": "internal_error", "message": "the server is not ready"}).to_string(),
        )
    }
}

/// OPA's error code for one of Warden's.
fn opa_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::PayloadTooLarge
        | ErrorCode::UnsupportedMediaType => "invalid_parameter",
        ErrorCode::Unauthorized | ErrorCode::Forbidden => "unauthorized",
        ErrorCode::NotFound => "undefined_document",
        ErrorCode::ResourceNotFound => "resource_not_found",
        ErrorCode::MethodNotAllowed | ErrorCode::NotImplemented | ErrorCode::RateLimited => {
            "invalid_operation"
        }
        _ => "internal_error",
    }
}

/// Rewrites Warden's error body (`{"error": {"code", "message"}}`) into OPA's (`{"code",
/// "message"}`, OPA's code names) on the OPA routes, so that OPA's clients read the server's
/// message instead of failing to parse the body. Error bodies only: they are small and bounded.
pub async fn opa_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let opa = path == "/"
        || path == "/health"
        || path == "/v1/data"
        || path == "/v1/query"
        || path == "/v1/config"
        || path == "/v1/status"
        || path == "/v1/compile"
        || path == "/v1/policies"
        || path.starts_with("/v1/policies/")
        || path.starts_with("/v1/data/")
        || path.starts_with("/v1/batch/data/");
    let response = next.run(req).await;
    if !opa || response.status().is_success() || response.status() == StatusCode::MULTI_STATUS {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return ApiError::internal().into_response();
    };
    let rewritten = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .and_then(|e| {
            let code = e.get("code")?.as_str()?;
            let message = e.get("message")?.as_str()?;
            let code = ErrorCode::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .map_or("internal_error", |c| opa_code(*c));
            Some(json!({"code": code, "message": message}).to_string())
        });
    match rewritten {
        Some(text) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(text))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}
