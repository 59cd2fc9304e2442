//! The one API error type: a stable code, a message, a status; never a stack trace.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error code the HTTP API answers with, its status and the level it is logged at: the one
/// table (docs/serve.md lists the same; a test keeps them equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad Request: a request the daemon cannot take as it is; the message names the field.
    InvalidRequest,
    /// Unauthorized: no key, or an unknown or revoked one.
    Unauthorized,
    /// Forbidden: a valid key without the role the route needs (an admin route).
    Forbidden,
    /// Not Found: no approval has that id.
    ApprovalNotFound,
    /// Conflict: the approval was answered (or used) before.
    ApprovalSettled,
    /// Conflict: the approval expired before it was answered.
    ApprovalExpired,
    /// Not Found: no such route.
    NotFound,
    /// Not Found: no policy module or data document at that id or path (OPA's policy and data
    /// API).
    ResourceNotFound,
    /// Not Found: an audit route without an audit log.
    AuditDisabled,
    /// Not Found: a token route without a signing key.
    SigningDisabled,
    /// Method Not Allowed: a known route, another method.
    MethodNotAllowed,
    /// Not Implemented: a known OPA endpoint Warden does not serve (`/v1/compile`).
    NotImplemented,
    /// Conflict: a batch whose sessions kept changing; nothing applied.
    BatchConflict,
    /// Conflict: the tool definition pending approval is no longer the one the approver saw.
    PinChanged,
    /// Payload Too Large: a body over the limit.
    PayloadTooLarge,
    /// Unsupported Media Type: a body that is not JSON.
    UnsupportedMediaType,
    /// Too Many Requests: the key's bucket is empty.
    RateLimited,
    /// Internal Server Error: a failure of the daemon; never an allow.
    Internal,
    /// Internal Server Error: a Rego query failed or hit a limit.
    EvaluationError,
    /// Service Unavailable: no policy loaded, a store or audit failure, or shutting down.
    NotReady,
    /// Service Unavailable: the concurrency limit.
    Overloaded,
    /// Service Unavailable: the request timeout.
    Timeout,
    /// Service Unavailable: the key's policy is not loaded.
    PolicyUnavailable,
    /// Service Unavailable: the audit queue is full (`on_full: deny`).
    AuditUnavailable,
    /// Service Unavailable: the state store (a shared Redis) failed or answered too late.
    StateUnavailable,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::ApprovalNotFound,
        ErrorCode::ApprovalSettled,
        ErrorCode::ApprovalExpired,
        ErrorCode::NotFound,
        ErrorCode::ResourceNotFound,
        ErrorCode::AuditDisabled,
        ErrorCode::SigningDisabled,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotImplemented,
        ErrorCode::BatchConflict,
        ErrorCode::PinChanged,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::EvaluationError,
        ErrorCode::NotReady,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::PolicyUnavailable,
        ErrorCode::AuditUnavailable,
        ErrorCode::StateUnavailable,
    ];

    /// The code as answered (`"invalid_request"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ApprovalNotFound => "approval_not_found",
            ErrorCode::ApprovalSettled => "approval_settled",
            ErrorCode::ApprovalExpired => "approval_expired",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ResourceNotFound => "resource_not_found",
            ErrorCode::AuditDisabled => "audit_disabled",
            ErrorCode::SigningDisabled => "signing_disabled",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::BatchConflict => "batch_conflict",
            ErrorCode::PinChanged => "pin_changed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::EvaluationError => "evaluation_error",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::PolicyUnavailable => "policy_unavailable",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::StateUnavailable => "state_unavailable",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::ApprovalNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ApprovalSettled | ErrorCode::ApprovalExpired => StatusCode::CONFLICT,
            ErrorCode::NotFound | ErrorCode::ResourceNotFound => StatusCode::NOT_FOUND,
            ErrorCode::AuditDisabled => StatusCode::NOT_FOUND,
            ErrorCode::SigningDisabled => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::BatchConflict | ErrorCode::PinChanged => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::EvaluationError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PolicyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ErrorCode {
    /// The gRPC status code it is answered with on the gRPC service (the code itself travels
    /// in the `warden-error-code` metadata).
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::InvalidRequest | ErrorCode::UnsupportedMediaType => Code::InvalidArgument,
            ErrorCode::Unauthorized => Code::Unauthenticated,
            ErrorCode::Forbidden => Code::PermissionDenied,
            ErrorCode::ApprovalNotFound => Code::NotFound,
            ErrorCode::ApprovalSettled | ErrorCode::ApprovalExpired | ErrorCode::PinChanged => {
                Code::FailedPrecondition
            }
            ErrorCode::NotFound
            | ErrorCode::ResourceNotFound
            | ErrorCode::AuditDisabled
            | ErrorCode::SigningDisabled => Code::NotFound,
            ErrorCode::MethodNotAllowed | ErrorCode::NotImplemented => Code::Unimplemented,
            ErrorCode::BatchConflict => Code::Aborted,
            ErrorCode::PayloadTooLarge | ErrorCode::RateLimited => Code::ResourceExhausted,
            ErrorCode::Internal | ErrorCode::EvaluationError => Code::Internal,
            ErrorCode::Timeout => Code::DeadlineExceeded,
            ErrorCode::NotReady
            | ErrorCode::Overloaded
            | ErrorCode::PolicyUnavailable
            | ErrorCode::AuditUnavailable
            | ErrorCode::StateUnavailable => Code::Unavailable,
        }
    }
}

impl ErrorCode {
    /// The level an answer with this code is logged at: a client's mistake at `debug` (it is the
    /// client's to see, and a flood of them must not flood the log), the daemon refusing work it
    /// cannot take now at `warn`, a failure of the daemon at `error`.
    pub fn log_level(self) -> tracing::Level {
        match self.status() {
            StatusCode::INTERNAL_SERVER_ERROR => tracing::Level::ERROR,
            StatusCode::SERVICE_UNAVAILABLE => tracing::Level::WARN,
            _ => tracing::Level::DEBUG,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message (never secrets, never internals).
    pub message: String,
    /// Seconds for `Retry-After`, when set.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code (which gives the status) and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 401 with the one message every authentication failure gets.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid API key")
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such route")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        )
    }

    /// 503 `state_unavailable` with `Retry-After: 1`: a decision that needed the state store
    /// could not be made (the store's error is logged apart, never answered).
    pub fn state_unavailable() -> Self {
        Self::new(
            ErrorCode::StateUnavailable,
            "the state store cannot be used now; the request was not allowed",
        )
        .retry_after(1)
    }

    /// 500 with a generic message; the detail belongs in the log.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal error; the request was not allowed",
        )
    }

    /// 503 `not_ready`.
    pub fn not_ready() -> Self {
        Self::new(ErrorCode::NotReady, "the server is not ready").retry_after(1)
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl From<ApiError> for tonic::Status {
    /// The gRPC form: the status code from the table, the message, and the Warden code (and
    /// `retry-after` seconds, when set) as metadata.
    fn from(error: ApiError) -> Self {
        let mut status = tonic::Status::new(error.code.grpc_code(), error.message);
        let metadata = status.metadata_mut();
        metadata.insert(
            "warden-error-code",
            tonic::metadata::MetadataValue::from_static(error.code.as_str()),
        );
        if let Some(seconds) = error.retry_after {
            metadata.insert("retry-after", tonic::metadata::MetadataValue::from(seconds));
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The message is what the client sees (never a secret or request content), so it may be
        // logged; the request id is on the surrounding span.
        let (code, status, message) = (self.code.as_str(), self.status.as_u16(), &self.message);
        match self.code.log_level() {
            tracing::Level::ERROR => tracing::error!(code, status, message, "request failed"),
            tracing::Level::WARN => tracing::warn!(code, status, message, "request refused"),
            _ => tracing::debug!(code, status, message, "request refused"),
        }
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // RFC 9110: a 401 names the scheme that would authenticate.
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        response
    }
}

impl From<warden_core::unique_keys::DuplicateKey> for ApiError {
    fn from(e: warden_core::unique_keys::DuplicateKey) -> Self {
        warden::RequestError::from(e).into()
    }
}

impl From<warden::RequestError> for ApiError {
    fn from(e: warden::RequestError) -> Self {
        match &e.field {
            Some(field) => Self::new(
                ErrorCode::InvalidRequest,
                format!("field `{field}`: {}", e.message),
            ),
            None => Self::bad_request(e.message),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::ErrorCode;

    /// The table of codes in docs/serve.md ("Errors") lists every code with its status and log
    /// level, and no other code.
    #[test]
    fn the_documented_error_table_is_the_code_table() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/serve.md"),
        )
        .unwrap();
        let rows: Vec<(u16, Vec<&str>, &str)> = docs
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let status = cells.next()?.parse::<u16>().ok()?;
                let codes = cells
                    .next()?
                    .split(',')
                    .map(|c| c.trim().trim_matches('`'))
                    .collect();
                let level = cells.next()?.trim_matches('`');
                Some((status, codes, level))
            })
            .collect();
        for code in ErrorCode::ALL {
            let level = code.log_level().as_str().to_ascii_lowercase();
            let documented = rows.iter().any(|(status, codes, logged)| {
                *status == code.status().as_u16()
                    && codes.contains(&code.as_str())
                    && *logged == level
            });
            assert!(
                documented,
                "{code} ({}, logged at {level}) is not in docs/serve.md",
                code.status()
            );
        }
        for (status, codes, _) in &rows {
            for documented in codes {
                assert!(
                    ErrorCode::ALL
                        .iter()
                        .any(|c| c.as_str() == *documented && c.status().as_u16() == *status),
                    "docs/serve.md lists {documented} ({status}), which the daemon does not answer"
                );
            }
        }
    }

    /// `InvalidArgument` -> `INVALID_ARGUMENT`.
    fn screaming(code: tonic::Code) -> String {
        let mut out = String::new();
        for (i, c) in format!("{code:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    /// The gRPC table in docs/serve.md ("gRPC") maps every code to its gRPC status.
    #[test]
    fn the_documented_grpc_table_is_the_code_table() {
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/serve.md"),
        )
        .unwrap();
        let rows: Vec<(Vec<&str>, &str)> = docs
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let codes: Vec<&str> = cells
                    .next()?
                    .split(',')
                    .map(|c| c.trim().trim_matches('`'))
                    .collect();
                let status = cells.next()?.trim_matches('`');
                let is_status = !status.is_empty()
                    && status.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                (is_status
                    && codes
                        .iter()
                        .all(|c| ErrorCode::ALL.iter().any(|k| k.as_str() == *c)))
                .then_some((codes, status))
            })
            .collect();
        for code in ErrorCode::ALL {
            let status = screaming(code.grpc_code());
            assert!(
                rows.iter()
                    .any(|(codes, s)| codes.contains(&code.as_str()) && *s == status),
                "{code} ({status}) is not in the gRPC table of docs/serve.md"
            );
        }
        assert_eq!(
            rows.iter().map(|(codes, _)| codes.len()).sum::<usize>(),
            ErrorCode::ALL.len(),
            "the gRPC table lists a code twice"
        );
    }
}
