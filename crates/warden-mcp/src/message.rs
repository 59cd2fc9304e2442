//! JSON-RPC 2.0 message classification and the error replies Warden writes.
//!
//! Classification reads only the envelope (`id`, `method`, whether `result` / `error` are
//! present) through borrowed raw values, so a message Warden does not inspect is never
//! re-serialised: the caller forwards the original bytes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// JSON-RPC error code for a call denied by policy (server-defined range).
pub const DENIED: i64 = -32001;
/// JSON-RPC error code for a tool result blocked by policy.
pub const RESULT_BLOCKED: i64 = -32002;
/// JSON-RPC error code for a tool whose definition changed since it was pinned.
pub const TOOL_CHANGED: i64 = -32003;
/// JSON-RPC error code when the decision could not be made (fail closed).
pub const DECISION_FAILED: i64 = -32004;
/// JSON-RPC "invalid request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "invalid params".
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC "parse error".
pub const PARSE_ERROR: i64 = -32700;

/// The envelope of one JSON-RPC message, borrowing from the bytes.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// Request or response id, as raw JSON (`1`, `"abc"`).
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// Method name (requests and notifications).
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    /// Request parameters.
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    /// Success result (responses).
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    /// Error object (error responses).
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result`.
    Response,
    /// Has `id` and `error`.
    ErrorResponse,
    /// A JSON array (JSON-RPC batch; removed from MCP in 2025-06-18).
    Batch,
    /// Not a JSON-RPC message Warden understands.
    Invalid,
}

/// A classified message.
#[derive(Debug)]
pub struct Message<'a> {
    /// The kind.
    pub kind: MessageKind,
    /// The envelope (empty for batches and invalid messages).
    pub envelope: Option<Envelope<'a>>,
}

impl<'a> Message<'a> {
    /// Classifies one message from its bytes.
    pub fn classify(bytes: &'a [u8]) -> Self {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Self {
                kind: MessageKind::Batch,
                envelope: None,
            };
        }
        let Ok(envelope) = serde_json::from_slice::<Envelope<'a>>(bytes) else {
            return Self {
                kind: MessageKind::Invalid,
                envelope: None,
            };
        };
        // A message with both `result` and `error`, or a method and a result, is ambiguous:
        // peers could read it differently from Warden, so it is invalid.
        let (has_result, has_error) = (envelope.result.is_some(), envelope.error.is_some());
        let kind = match (&envelope.method, &envelope.id) {
            _ if has_result && has_error => MessageKind::Invalid,
            (Some(_), _) if has_result || has_error => MessageKind::Invalid,
            (Some(_), Some(_)) => MessageKind::Request,
            (Some(_), None) => MessageKind::Notification,
            // An error answering an unreadable request has a null id.
            (None, _) if has_error => MessageKind::ErrorResponse,
            (None, Some(_)) if has_result => MessageKind::Response,
            _ => MessageKind::Invalid,
        };
        Self {
            kind,
            envelope: Some(envelope),
        }
    }

    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        self.envelope.as_ref().and_then(|e| e.method.as_deref())
    }

    /// The raw id text, for requests and responses.
    pub fn id(&self) -> Option<&'a RawValue> {
        self.envelope.as_ref().and_then(|e| e.id)
    }
}

/// A JSON-RPC error response for `id` (raw JSON; `null` when unknown).
pub fn error_response(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Vec<u8> {
    let id: Value = id
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null);
    let mut error = json!({"code": code, "message": message});
    if let (Some(data), Some(object)) = (data, error.as_object_mut()) {
        object.insert("data".to_owned(), data);
    }
    let reply = json!({"jsonrpc": "2.0", "id": id, "error": error});
    // Serialising a `Value` cannot fail (all keys are strings).
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// The key a request id is matched by: peers compare ids as JSON values, so `"a\u0062"` and
/// `"ab"` are one id, and so are `1` and `1.0`. None when the id is not a string or number.
pub fn id_key(id: &RawValue) -> Option<String> {
    match serde_json::from_str::<Value>(id.get()).ok()? {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => n.as_f64().map(|f| format!("n:{f}")),
        _ => None,
    }
}
