//! Reading a request body: its content type, its size limit.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// Reads the body: `application/json` (415 otherwise, unless `lenient`: OPA accepts any
/// content type on its Data API, so that route does too), at most the configured limit (413).
pub(crate) async fn json_body(
    state: &AppState,
    req: Request,
    lenient: bool,
) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    let is_json = content_type.is_some_and(|t| {
        t.eq_ignore_ascii_case("application/json")
            || t.len()
                .checked_sub(5)
                .and_then(|start| t.get(start..))
                .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
    });
    let accepted = is_json || lenient;
    if !accepted {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be `application/json`",
        ));
    }
    let limit = state.config().body_limit_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = err.source();
            }
            ApiError::bad_request("cannot read the body")
        })
}
