//! The request: the input to one decision (spec section 1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Deepest JSON nesting accepted in a request (serde_json's own recursion limit is 128; this is
/// checked explicitly so the limit is part of Warden's contract, not an implementation detail).
pub const MAX_REQUEST_DEPTH: usize = 64;

/// What a request describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent wants to call a tool (the default).
    #[default]
    ToolCall,
    /// A tool returned a result.
    ToolResult,
    /// A prompt sent to a model.
    Prompt,
    /// A model's completion.
    Completion,
    /// An HTTP request.
    Http,
}

impl Kind {
    /// The kind's name as written in policies and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ToolCall => "tool_call",
            Kind::ToolResult => "tool_result",
            Kind::Prompt => "prompt",
            Kind::Completion => "completion",
            Kind::Http => "http",
        }
    }
}

/// One decision's input. Unknown fields are rejected; `args`, `result` and `context` are free-form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Session id: taints and history are kept per session. None: no state is read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Who acts, e.g. `user:alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// What the request describes; `tool_call` when omitted.
    #[serde(default)]
    pub kind: Kind,
    /// Tool name (`tool_call`, `tool_result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Tool arguments (`tool_call`); always a JSON object when present.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object"
    )]
    pub args: Option<Value>,
    /// What the tool returned (`tool_result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Prompt or completion text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The HTTP request (`http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequest>,
    /// Free attributes (tenant, model, cost estimate, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

/// The HTTP part of a request of kind `http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// Method, e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path, e.g. `/v1/charges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Header values by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A request that could not be parsed; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match field { Some(f) => format!("field `{f}`: {message}"), None => message.clone() })]
pub struct RequestError {
    /// Dotted path of the field at fault (`args`, `http.headers`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl From<crate::unique_keys::DuplicateKey> for RequestError {
    fn from(e: crate::unique_keys::DuplicateKey) -> Self {
        Self {
            field: Some(e.field),
            message: crate::unique_keys::MESSAGE.to_owned(),
        }
    }
}

impl Request {
    /// Parses a request from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RequestError> {
        // One pass straight into the typed request (no intermediate `Value` tree); the depth
        // limit and the object check are done on the bytes first.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(RequestError {
                field: None,
                message: "a request must be a JSON object".to_owned(),
            });
        }
        if nesting_exceeds(bytes, MAX_REQUEST_DEPTH) {
            return Err(too_deep());
        }
        crate::unique_keys::reject_duplicate_keys(bytes)?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        // Tracking the path costs more than the parse itself, so it is done only to explain a
        // failure: the second pass fails the same way and names the field.
        let Ok(request) = Request::deserialize(&mut de) else {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let error = match serde_path_to_error::deserialize::<_, Request>(&mut de) {
                Err(e) => {
                    let path = e.path().to_string();
                    json_error(e.into_inner(), Some(path))
                }
                Ok(_) => RequestError {
                    field: None,
                    message: "invalid request".to_owned(),
                },
            };
            return Err(error);
        };
        de.end().map_err(|e| json_error(e, None))?;
        Ok(request)
    }

    /// Builds a request from an already parsed JSON value (e.g. one step of a YAML scenario).
    pub fn from_value(value: Value) -> Result<Self, RequestError> {
        if !value.is_object() {
            return Err(RequestError {
                field: None,
                message: "a request must be a JSON object".to_owned(),
            });
        }
        if depth(&value) > MAX_REQUEST_DEPTH {
            return Err(too_deep());
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_path_to_error's path ends at the offending field (unknown ones included).
            let field = (path != ".").then_some(path);
            RequestError {
                field,
                message: inner,
            }
        })
    }
}

/// Accepts only a JSON object (or null, meaning absent) and keeps it as a `Value`, so argument
/// conditions can resolve JSON Pointers against it directly.
fn object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(d)?.map(Value::Object))
}

/// Syntax errors are "invalid JSON"; data errors name the field at `path`.
fn json_error(e: serde_json::Error, path: Option<String>) -> RequestError {
    if e.is_syntax() || e.is_eof() {
        return RequestError {
            field: None,
            message: format!("invalid JSON: {e}"),
        };
    }
    RequestError {
        field: path.filter(|p| p != "." && p != "?"),
        message: e.to_string(),
    }
}

fn too_deep() -> RequestError {
    RequestError {
        field: None,
        message: format!("nesting deeper than {MAX_REQUEST_DEPTH} levels"),
    }
}

/// Whether JSON text nests arrays/objects deeper than `max`, from the bytes alone (brackets
/// inside strings do not count). Malformed text is left to the parser to report.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Container nesting depth of a JSON value (`{}` is 1, a scalar 0), iteratively (no recursion on
/// hostile input).
pub fn depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                max = max.max(d);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                max = max.max(d);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_and_round_trip() {
        let r = Request::from_json(br#"{"tool":"t","args":{"a":1}}"#).unwrap();
        assert_eq!(r.kind, Kind::ToolCall);
        assert_eq!(r.tool.as_deref(), Some("t"));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"kind":"tool_call","tool":"t","args":{"a":1}})
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Request::from_json(br#"{"tool":"t","bogus":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bogus"));
        let e = Request::from_json(br#"{"kind":"http","http":{"verb":"GET"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("http.verb"));
    }

    #[test]
    fn wrong_types_are_named() {
        let e = Request::from_json(br#"{"args":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args"));
        let e = Request::from_json(br#"{"kind":"toolcall"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("kind"));
        let e = Request::from_json(br#"{"session":5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("session"));
        let e = Request::from_json(br#"[1]"#).unwrap_err();
        assert!(e.message.contains("object"));
        let e = Request::from_json(b"{").unwrap_err();
        assert!(e.message.contains("invalid JSON"));
    }

    #[test]
    fn free_form_fields_accept_anything_but_depth_is_bounded() {
        assert!(Request::from_json(br#"{"context":{"x":{"y":[1,{"z":null}]}}}"#).is_ok());
        let deep = format!(
            "{{\"args\":{{\"a\":{}1{}}}}}",
            "[".repeat(80),
            "]".repeat(80)
        );
        let e = Request::from_json(deep.as_bytes()).unwrap_err();
        assert!(e.message.contains("nesting"), "{e}");
    }

    #[test]
    fn byte_depth_agrees_with_value_depth() {
        for text in [
            r#"{"a":[1,{"b":"[[[{{"}]}"#,
            r#"{"s":"\\\"[","t":[[[]]]}"#,
            "{}",
            r#"{"a":{"b":{"c":{}}}}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            for max in 0..6 {
                assert_eq!(
                    nesting_exceeds(text.as_bytes(), max),
                    depth(&value) > max,
                    "{text} {max}"
                );
            }
        }
    }

    #[test]
    fn trailing_content_is_rejected() {
        let e = Request::from_json(br#"{"tool":"t"} {"tool":"u"}"#).unwrap_err();
        assert!(e.message.contains("invalid JSON"), "{e}");
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::from_json(&bytes);
        }

        #[test]
        fn parser_never_panics_on_jsonish(s in r#"\{("(session|tool|kind|args|http|x)":("a"|1|null|\{\}|\[\]|"tool_call"),?){0,5}\}"#) {
            let _ = Request::from_json(s.as_bytes());
        }
    }
}
