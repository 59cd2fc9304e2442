//! JSON-RPC 2.0 messages as Warden reads and writes them, and the error replies it writes.
//!
//! Every message is parsed strictly into a [`Message`] and every message Warden forwards is
//! written from that parse ([`Message::to_bytes`]), never copied from the bytes it received: the
//! peer on the other side sees exactly what Warden decided on. The parse refuses what two JSON
//! parsers could read differently (see [`Refusal`]): duplicate keys, keys that differ only in
//! case (Go's `encoding/json` matches struct fields case-insensitively, with Unicode folding),
//! non-ASCII keys that fold to ASCII ones (`ſ`, the Kelvin sign), a byte-order mark, and
//! members next to each other that no peer reads the same way (`result` and `error`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

/// JSON-RPC error code for a call denied by policy. Warden's codes (-32060 to -32064) are in the
/// server-defined range and given no other meaning by the MCP SDKs (which use -32000, -32001,
/// -32002 and -32042), so a client never mistakes a denial for a timeout it could retry.
pub const DENIED: i64 = -32060;
/// JSON-RPC error code for a tool result (or a server request) blocked by policy.
pub const RESULT_BLOCKED: i64 = -32061;
/// JSON-RPC error code for a tool whose definition changed since it was pinned.
pub const TOOL_CHANGED: i64 = -32062;
/// JSON-RPC error code when the decision could not be made (fail closed).
pub const DECISION_FAILED: i64 = -32063;
/// JSON-RPC error code for a call held for a person's approval: not forwarded; `data.approval`
/// names the approval, and the same call (same arguments) made again once it is approved goes
/// through once.
pub const APPROVAL_PENDING: i64 = -32064;
/// JSON-RPC "invalid request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "invalid params".
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC "parse error".
pub const PARSE_ERROR: i64 = -32700;

/// Longest key quoted in a refusal.
const QUOTED_KEY_CHARS: usize = 40;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result`.
    Response,
    /// Has `error` (and an `id`, `null` when the request was unreadable).
    ErrorResponse,
}

/// Why a message was refused: it is not one JSON-RPC 2.0 message that every peer reads the way
/// Warden does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not valid JSON (or nested deeper than 128 levels).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// Starts with a byte-order mark (some parsers skip it, others refuse the message).
    #[error("the message starts with a byte-order mark")]
    ByteOrderMark,
    /// A raw carriage return in a stdio line: a line break to some readers, whitespace to others.
    #[error("a raw carriage return inside a message line")]
    CarriageReturn,
    /// A JSON-RPC batch (removed from MCP in 2025-06-18).
    #[error("JSON-RPC batches are not supported through warden")]
    Batch,
    /// Not an object with a valid JSON-RPC 2.0 envelope.
    #[error("{0}")]
    Envelope(String),
    /// One object holds the same key twice.
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    /// Two keys of one object differ only in case.
    #[error("keys `{0}` and `{1}` differ only in case")]
    CaseFoldedKey(String, String),
    /// A non-ASCII key that case-folds to an ASCII one (`ſ` to `s`, `K` to `k`).
    #[error("key `{0}` case-folds to `{1}`")]
    FoldsToAscii(String, String),
}

impl Refusal {
    /// The JSON-RPC error code of the refusal.
    pub fn code(&self) -> i64 {
        match self {
            Refusal::Json(_) | Refusal::ByteOrderMark | Refusal::CarriageReturn => PARSE_ERROR,
            _ => INVALID_REQUEST,
        }
    }
}

fn quoted(key: &str) -> String {
    if key.chars().count() <= QUOTED_KEY_CHARS {
        key.to_owned()
    } else {
        let mut short: String = key.chars().take(QUOTED_KEY_CHARS).collect();
        short.push('…');
        short
    }
}

/// The key as Go's `encoding/json` compares field names: simple Unicode case folding, under
/// which `ſ` (U+017F) is `s` and the Kelvin sign (U+212A) is `k`.
pub fn fold_key(key: &str) -> String {
    key.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == '\u{17f}' { 's' } else { c })
        .collect()
}

/// Parses JSON into a `Value`, refusing duplicate keys, keys of one object that fold to the same
/// key, and non-ASCII keys that fold to ASCII. A key refusal is recorded in `refused` (serde's
/// error type keeps only text).
struct Strict<'r> {
    refused: &'r RefCell<Option<Refusal>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Strict<'_> {
    fn again(&self) -> Self {
        Strict {
            refused: self.refused,
        }
    }

    fn refuse<E: serde::de::Error>(&self, refusal: Refusal) -> E {
        let text = refusal.to_string();
        *self.refused.borrow_mut() = Some(refusal);
        E::custom(text)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.again())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut folded: HashSet<String> = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(self.refuse(Refusal::DuplicateKey(quoted(&key))));
            }
            let fold = fold_key(&key);
            if !key.is_ascii() && fold.is_ascii() {
                return Err(self.refuse(Refusal::FoldsToAscii(quoted(&key), quoted(&fold))));
            }
            if !folded.insert(fold.clone()) {
                let other = map
                    .keys()
                    .find(|k| fold_key(k) == fold)
                    .cloned()
                    .unwrap_or_default();
                return Err(self.refuse(Refusal::CaseFoldedKey(quoted(&other), quoted(&key))));
            }
            let value = access.next_value_seed(self.again())?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Parses one JSON value strictly (see the module documentation).
pub fn parse_value(bytes: &[u8]) -> Result<Value, Refusal> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(Refusal::ByteOrderMark);
    }
    let refused = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { refused: &refused }
        .deserialize(&mut deserializer)
        .map_err(|e| {
            refused
                .take()
                .unwrap_or_else(|| Refusal::Json(e.to_string()))
        })?;
    deserializer
        .end()
        .map_err(|e| Refusal::Json(e.to_string()))?;
    Ok(value)
}

/// A request id: a string or an integer. Ids are compared as values (`-0` is `0`, `1.0` is `1`,
/// escapes decoded) and a string never matches a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A numeric id.
    Number(i128),
    /// A string id.
    String(String),
}

impl Id {
    /// The id of a JSON value; None for anything but a string or an integral number within
    /// ±2^53 when written as a float.
    pub fn from_value(value: &Value) -> Option<Id> {
        match value {
            Value::String(s) => Some(Id::String(s.clone())),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Some(Id::Number(i128::from(i)))
                } else if let Some(u) = n.as_u64() {
                    Some(Id::Number(i128::from(u)))
                } else {
                    let f = n.as_f64()?;
                    const EXACT: f64 = 9_007_199_254_740_992.0;
                    // Exact: an integral float within ±2^53 converts without loss.
                    #[allow(clippy::cast_possible_truncation)]
                    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(Id::Number(f as i128))
                }
            }
            _ => None,
        }
    }

    /// The id as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Id::String(s) => Value::String(s.clone()),
            Id::Number(n) => i64::try_from(*n)
                .map(Value::from)
                .or_else(|_| u64::try_from(*n).map(Value::from))
                .unwrap_or(Value::Null),
        }
    }
}

/// One JSON-RPC 2.0 message, read strictly. Only the members below are kept: anything else in
/// the envelope is dropped when the message is written again.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The kind.
    pub kind: MessageKind,
    /// The id (requests, responses; None for notifications and for an error answering an
    /// unreadable request).
    pub id: Option<Id>,
    /// The method (requests and notifications).
    pub method: Option<String>,
    /// The params (requests and notifications), an object or an array.
    pub params: Option<Value>,
    /// The result (responses).
    pub result: Option<Value>,
    /// The error object (error responses).
    pub error: Option<Value>,
}

/// The envelope members JSON-RPC 2.0 defines; a key that folds to one of them but is not it
/// (`Method`, `ID`) would be that member to a case-insensitive reader.
const ENVELOPE: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];

/// Checks that no key of `object` folds to one of `members` without being it.
pub fn check_members(object: &Map<String, Value>, members: &[&str]) -> Result<(), Refusal> {
    for key in object.keys() {
        if members.contains(&key.as_str()) {
            continue;
        }
        let fold = fold_key(key);
        if let Some(member) = members.iter().find(|m| fold_key(m) == fold) {
            return Err(Refusal::CaseFoldedKey((*member).to_owned(), quoted(key)));
        }
    }
    Ok(())
}

fn envelope_error(text: &str) -> Refusal {
    Refusal::Envelope(text.to_owned())
}

impl Message {
    /// Reads one message.
    pub fn parse(bytes: &[u8]) -> Result<Message, Refusal> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Err(Refusal::Batch);
        }
        let Value::Object(mut object) = parse_value(bytes)? else {
            return Err(envelope_error("a JSON-RPC message must be a JSON object"));
        };
        check_members(&object, &ENVELOPE)?;
        if object.get("jsonrpc") != Some(&Value::String("2.0".to_owned())) {
            return Err(envelope_error("`jsonrpc` must be \"2.0\""));
        }
        let id = match object.remove("id") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value) => match Id::from_value(&value) {
                Some(id) => Some(Some(id)),
                None => {
                    return Err(envelope_error(
                        "a request id must be a string or an integer",
                    ));
                }
            },
        };
        let method = match object.remove("method") {
            None => None,
            Some(Value::String(method)) => Some(method),
            Some(_) => return Err(envelope_error("`method` must be a string")),
        };
        let params = match object.remove("params") {
            None => None,
            Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
            Some(_) => return Err(envelope_error("`params` must be an object or an array")),
        };
        let result = object.remove("result");
        let error = object.remove("error");
        let kind = match (&method, &id, &result, &error) {
            (Some(_), _, None, None) => match id {
                Some(Some(_)) => MessageKind::Request,
                None => MessageKind::Notification,
                Some(None) => return Err(envelope_error("a request id must not be null")),
            },
            (None, Some(Some(_)), Some(_), None) if params.is_none() => MessageKind::Response,
            (None, Some(_), None, Some(Value::Object(_))) if params.is_none() => {
                MessageKind::ErrorResponse
            }
            _ => {
                return Err(envelope_error(
                    "not a JSON-RPC request, notification or response (a method next to a result, both result and error, or no id)",
                ));
            }
        };
        if let Some(Value::Object(error)) = &error {
            check_members(error, &["code", "message", "data"])?;
        }
        Ok(Message {
            kind,
            id: id.flatten(),
            method,
            params,
            result,
            error,
        })
    }

    /// Reads one line of a stdio stream (its final `\n` or `\r\n` already removed or not): a raw
    /// carriage return anywhere else is refused.
    pub fn parse_line(line: &[u8]) -> Result<Message, Refusal> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Err(Refusal::CarriageReturn);
        }
        Message::parse(line)
    }

    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The params as an object, when they are one.
    pub fn params_object(&self) -> Option<&Map<String, Value>> {
        self.params.as_ref().and_then(Value::as_object)
    }

    /// The message as JSON, holding only the members read.
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
        match self.kind {
            MessageKind::Request | MessageKind::Notification => {
                if let Some(id) = &self.id {
                    object.insert("id".to_owned(), id.to_value());
                }
                if let Some(method) = &self.method {
                    object.insert("method".to_owned(), Value::String(method.clone()));
                }
                if let Some(params) = &self.params {
                    object.insert("params".to_owned(), params.clone());
                }
            }
            MessageKind::Response => {
                object.insert(
                    "id".to_owned(),
                    self.id.as_ref().map_or(Value::Null, Id::to_value),
                );
                object.insert(
                    "result".to_owned(),
                    self.result.clone().unwrap_or(Value::Null),
                );
            }
            MessageKind::ErrorResponse => {
                object.insert(
                    "id".to_owned(),
                    self.id.as_ref().map_or(Value::Null, Id::to_value),
                );
                object.insert(
                    "error".to_owned(),
                    self.error.clone().unwrap_or(Value::Null),
                );
            }
        }
        Value::Object(object)
    }

    /// The bytes Warden forwards: the message written again from what was read.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_json(&self.to_value())
    }
}

/// Serialises `value` as one line of JSON. U+2028, U+2029 and U+0085 (line breaks to some
/// readers: JavaScript source, Python's `str.splitlines`) are written escaped, so the bytes hold
/// no line break of any kind.
pub fn write_json(value: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (all keys are strings).
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escape = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (0xE2, Some(0x80), Some(0xA8)) => Some((&b"\\u2028"[..], 3)),
            (0xE2, Some(0x80), Some(0xA9)) => Some((&b"\\u2029"[..], 3)),
            (0xC2, Some(0x85), _) => Some((&b"\\u0085"[..], 2)),
            _ => None,
        };
        match escape {
            // These bytes only occur inside JSON strings (everything outside is ASCII), where
            // the escape means the same character.
            Some((text, len)) => {
                out.extend_from_slice(text);
                i += len;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A JSON-RPC error response for `id` (`null` when unknown).
pub fn error_response(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut error = json!({"code": code, "message": message});
    if let (Some(data), Some(object)) = (data, error.as_object_mut()) {
        object.insert("data".to_owned(), data);
    }
    let reply = json!({
        "jsonrpc": "2.0",
        "id": id.map_or(Value::Null, Id::to_value),
        "error": error,
    });
    write_json(&reply)
}

/// The error response for a refused message.
pub fn refusal_response(refusal: &Refusal) -> Vec<u8> {
    error_response(
        None,
        refusal.code(),
        &format!("refused by warden: {refusal}"),
        None,
    )
}
