//! The two wire formats Warden fronts, and the errors it answers in each: the shape each
//! provider's SDK parses, so a refusal surfaces in the client as the SDK's own exception.

use serde_json::{Value, json};

/// Which provider's API a mount speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI Chat Completions: `POST /v1/chat/completions`.
    Openai,
    /// Anthropic Messages: `POST /v1/messages`.
    Anthropic,
}

impl Api {
    /// The API's name in decisions' context (`openai`, `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    /// The path the API serves, below the mount, and forwarded to the upstream unchanged.
    pub fn path(self) -> &'static str {
        match self {
            Api::Openai => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }

    /// The JSON error body of a refusal, as the provider writes its own errors.
    pub fn error_body(self, refusal: &Refusal) -> Value {
        let kind = refusal.kind;
        match self {
            Api::Openai => json!({
                "error": {
                    "message": refusal.message,
                    "type": kind.openai_type(),
                    "param": Value::Null,
                    "code": kind.code(),
                }
            }),
            Api::Anthropic => json!({
                "type": "error",
                "error": {"type": kind.anthropic_type(), "message": refusal.message},
            }),
        }
    }

    /// The server-sent event that ends a stream Warden cut: an OpenAI stream's chunk holding
    /// `error` (which the SDK raises as an `APIError`), an Anthropic stream's `error` event.
    pub fn error_event(self, refusal: &Refusal) -> Vec<u8> {
        let body = self.error_body(refusal).to_string();
        match self {
            Api::Openai => format!("data: {body}\n\n").into_bytes(),
            Api::Anthropic => format!("event: error\ndata: {body}\n\n").into_bytes(),
        }
    }
}

/// Why an exchange was refused or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The client's request cannot be read or holds what Warden does not inspect (400).
    BadRequest,
    /// The policy denied the prompt, the answer or the whole exchange (403).
    Denied,
    /// A streamed answer was cut: a finding the policy blocks, or one Warden can no longer
    /// redact because part of it was sent (sent as the stream's error event).
    Blocked,
    /// A budget of the policy has not enough left (429).
    Budget,
    /// The upstream failed or answered what Warden cannot read (502).
    Upstream,
    /// A decision failed: fail closed (503).
    Unavailable,
}

impl RefusalKind {
    /// The HTTP status of a refusal of this kind answered before any byte was sent.
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::BadRequest => 400,
            RefusalKind::Denied | RefusalKind::Blocked => 403,
            RefusalKind::Budget => 429,
            RefusalKind::Upstream => 502,
            RefusalKind::Unavailable => 503,
        }
    }

    /// Warden's error code, the same in both formats.
    pub fn code(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "invalid_request",
            RefusalKind::Denied => "policy_denied",
            RefusalKind::Blocked => "content_blocked",
            RefusalKind::Budget => "budget_exhausted",
            RefusalKind::Upstream => "upstream_error",
            RefusalKind::Unavailable => "decision_failed",
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "invalid_request_error",
            RefusalKind::Denied => "permission_denied",
            RefusalKind::Blocked => "policy_violation",
            RefusalKind::Budget => "insufficient_quota",
            RefusalKind::Upstream | RefusalKind::Unavailable => "api_error",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "invalid_request_error",
            RefusalKind::Denied | RefusalKind::Blocked => "permission_error",
            RefusalKind::Budget => "rate_limit_error",
            RefusalKind::Upstream => "api_error",
            RefusalKind::Unavailable => "overloaded_error",
        }
    }
}

/// A refused or cut exchange: its kind and a message naming the cause (a rule id, a
/// detector, a field), never the text that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What the client reads.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A bad request naming the member at `pointer`.
    pub fn bad(pointer: &str, message: impl std::fmt::Display) -> Self {
        Self::new(RefusalKind::BadRequest, format!("`{pointer}`: {message}"))
    }

    /// The refusal a denied decision makes: its rule and reasons (`what` says what was
    /// decided: the prompt, the answer).
    pub fn denied(what: &str, decision: &warden_core::Decision) -> Self {
        let rule = decision.rule.as_deref().unwrap_or("the policy's default");
        let mut message = format!("Warden denied {what}: {rule}");
        if decision.verdict == warden_core::Verdict::Pending {
            message.push_str(" (awaiting approval)");
        }
        for reason in &decision.reasons {
            message.push_str("; ");
            message.push_str(reason);
        }
        Self::new(RefusalKind::Denied, message)
    }

    /// A failed decision: fail closed, without the internal error's text.
    pub fn unavailable() -> Self {
        Self::new(
            RefusalKind::Unavailable,
            "Warden could not decide this request; it was not forwarded",
        )
    }
}
