//! Protobuf messages to Warden requests and back.
//!
//! A request is turned into the JSON object `POST /v1/decide` takes and read by the same
//! [`DecisionRequest::from_value`], so both doors accept and refuse exactly the same requests
//! (unknown kinds, depth, identifiers) with the same messages.

use prost_types::value::Kind as ValueKind;
use serde_json::{Map, Number, Value};
use warden::{Decision, Request as DecisionRequest, Verdict};

use super::proto;
use crate::error::ApiError;

/// Largest integer a double holds exactly: integral numbers up to it are read as JSON integers
/// (protobuf's JSON mapping prints them the same way).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The Warden request `message` describes; `prefix` names its place in a batch (`[3].`).
pub(super) fn request(
    message: proto::DecisionRequest,
    prefix: &str,
) -> Result<DecisionRequest, ApiError> {
    let mut object = Map::new();
    if !message.kind.is_empty() {
        object.insert("kind".to_owned(), Value::String(message.kind));
    }
    let strings = [
        ("session", message.session),
        ("principal", message.principal),
        ("tool", message.tool),
        ("text", message.text),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            object.insert(name.to_owned(), Value::String(value));
        }
    }
    let values = [("args", message.args), ("result", message.result)];
    for (name, value) in values {
        if let Some(value) = value {
            object.insert(name.to_owned(), json(value, &format!("{prefix}{name}"))?);
        }
    }
    if let Some(context) = message.context {
        object.insert(
            "context".to_owned(),
            Value::Object(fields(context, &format!("{prefix}context"))?),
        );
    }
    if let Some(http) = message.http {
        object.insert("http".to_owned(), http_request(http));
    }
    DecisionRequest::from_value(Value::Object(object)).map_err(|e| {
        let field = match e.field {
            Some(f) => format!("{prefix}{f}"),
            None => prefix.trim_end_matches('.').to_owned(),
        };
        if field.is_empty() {
            ApiError::bad_request(e.message)
        } else {
            ApiError::bad_request(format!("field `{field}`: {}", e.message))
        }
    })
}

fn http_request(http: proto::HttpRequest) -> Value {
    let mut object = Map::new();
    for (name, value) in [
        ("method", http.method),
        ("path", http.path),
        ("body", http.body),
    ] {
        if let Some(value) = value {
            object.insert(name.to_owned(), Value::String(value));
        }
    }
    // Sorted, as the JSON request's maps are.
    for (name, map) in [("headers", http.headers), ("query", http.query)] {
        let sorted: std::collections::BTreeMap<_, _> = map.into_iter().collect();
        object.insert(
            name.to_owned(),
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        );
    }
    Value::Object(object)
}

fn fields(message: prost_types::Struct, field: &str) -> Result<Map<String, Value>, ApiError> {
    let mut sorted: Vec<_> = message.fields.into_iter().collect();
    // A protobuf map has no order; sorting keeps the request (and its audit entry) stable.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .into_iter()
        .map(|(k, v)| json(v, field).map(|v| (k, v)))
        .collect()
}

/// A `google.protobuf.Value` as JSON; `field` names it in an error. The decoder's own recursion
/// limit bounds the depth here; the request's depth limit is checked by `from_value`.
fn json(value: prost_types::Value, field: &str) -> Result<Value, ApiError> {
    Ok(match value.kind {
        None | Some(ValueKind::NullValue(_)) => Value::Null,
        Some(ValueKind::BoolValue(b)) => Value::Bool(b),
        Some(ValueKind::StringValue(s)) => Value::String(s),
        Some(ValueKind::NumberValue(n)) => number(n).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field `{field}`: {n} is not a JSON number (NaN or infinite)"
            ))
        })?,
        Some(ValueKind::StructValue(s)) => Value::Object(fields(s, field)?),
        Some(ValueKind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| json(v, field))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn number(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT {
        // Exact: |n| <= 2^53 and integral.
        #[allow(clippy::cast_possible_truncation)]
        return Some(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Value::Number)
}

/// A JSON value as a `google.protobuf.Value` (numbers become doubles).
fn value(json: &Value) -> prost_types::Value {
    let kind = match json {
        Value::Null => ValueKind::NullValue(0),
        Value::Bool(b) => ValueKind::BoolValue(*b),
        Value::Number(n) => ValueKind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => ValueKind::StringValue(s.clone()),
        Value::Array(items) => ValueKind::ListValue(prost_types::ListValue {
            values: items.iter().map(value).collect(),
        }),
        Value::Object(map) => ValueKind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn verdict(v: Verdict) -> proto::Verdict {
    match v {
        Verdict::Allow => proto::Verdict::Allow,
        Verdict::Deny => proto::Verdict::Deny,
        Verdict::Pending => proto::Verdict::Pending,
    }
}

/// The protobuf form of `decision`.
pub(super) fn decision(decision: &Decision) -> proto::Decision {
    let strings = |v: &[std::sync::Arc<str>]| v.iter().map(|s| s.to_string()).collect();
    proto::Decision {
        decision: verdict(decision.verdict).into(),
        rule: decision.rule.as_deref().map(str::to_owned),
        reasons: strings(&decision.reasons),
        warnings: strings(&decision.warnings),
        taints: strings(&decision.taints),
        findings: decision
            .findings
            .iter()
            .map(|f| proto::Finding {
                detector: f.detector.clone(),
                path: f.path.clone(),
                start: u64::try_from(f.start).unwrap_or(u64::MAX),
                end: u64::try_from(f.end).unwrap_or(u64::MAX),
                key: f.key,
                family: f.family.clone(),
                score: f.score,
                families: f.families.clone(),
            })
            .collect(),
        redacted: decision.redacted.as_ref().map(value),
        dry_run_decision: decision
            .dry_run_decision
            .map_or(proto::Verdict::Unspecified, verdict)
            .into(),
        policy: Some(policy_info(
            &decision.policy.name,
            decision.policy.version.as_deref(),
            &decision.policy.digest,
        )),
        token: decision.token.clone(),
        approval_id: decision.approval.as_ref().map(|a| a.id.clone()),
        audited: strings(&decision.audited),
        rewrite: decision.rewrite.as_ref().map(|r| proto::Rewrite {
            model: r.model.as_deref().map(str::to_owned),
            max_tokens: r.max_tokens,
        }),
    }
}

/// A policy's name, version and digest.
pub(super) fn policy_info(name: &str, version: Option<&str>, digest: &str) -> proto::PolicyInfo {
    proto::PolicyInfo {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        digest: digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn num(n: f64) -> prost_types::Value {
        prost_types::Value {
            kind: Some(ValueKind::NumberValue(n)),
        }
    }

    #[test]
    fn integral_doubles_are_json_integers_and_others_stay_doubles() {
        assert_eq!(json(num(5.0), "x").unwrap(), serde_json::json!(5));
        assert_eq!(json(num(-3.0), "x").unwrap(), serde_json::json!(-3));
        assert_eq!(json(num(2.5), "x").unwrap(), serde_json::json!(2.5));
        assert_eq!(json(num(1e300), "x").unwrap(), serde_json::json!(1e300));
        let e = json(num(f64::NAN), "args").unwrap_err();
        assert!(e.message.contains("field `args`"), "{}", e.message);
    }

    #[test]
    fn a_request_reads_like_its_json_form() {
        let message = proto::DecisionRequest {
            kind: String::new(),
            session: Some("s1".into()),
            tool: Some("send_email".into()),
            args: Some(value(&serde_json::json!({"to": "a@b.c", "n": 2}))),
            ..Default::default()
        };
        let from_proto = request(message, "").unwrap();
        let from_json = DecisionRequest::from_json(
            br#"{"session":"s1","tool":"send_email","args":{"to":"a@b.c","n":2}}"#,
        )
        .unwrap();
        assert_eq!(from_proto, from_json);
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_field() {
        let message = proto::DecisionRequest {
            kind: "teleport".into(),
            ..Default::default()
        };
        let e = request(message, "[2].").unwrap_err();
        assert!(e.message.contains("[2].kind"), "{}", e.message);
    }
}
