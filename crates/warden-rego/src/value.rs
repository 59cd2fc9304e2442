//! Value helpers: input depth, truthiness, conversion to JSON.

use regorus::Value;

use crate::error::RegoEvalError;

/// `true` when `value` nests arrays/objects deeper than `max` (a scalar has depth 0).
///
/// Iterative, so a hostile value cannot overflow the stack here.
pub(crate) fn depth_exceeds(value: &serde_json::Value, max: u32) -> bool {
    let mut stack: Vec<(&serde_json::Value, u32)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) if !a.is_empty() => Box::new(a.iter()),
            serde_json::Value::Object(o) if !o.is_empty() => Box::new(o.values()),
            _ => continue,
        };
        let child_depth = depth.saturating_add(1);
        if child_depth > max {
            return true;
        }
        stack.extend(children.map(|c| (c, child_depth)));
    }
    false
}

/// Spec truthiness (policy-v1 section 3): `true`, a non-empty set/array/object/string and any
/// number are truthy; undefined, `false`, `null` and empty values are not.
pub(crate) fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(_) => true,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Set(s) => !s.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Null | Value::Undefined => false,
    }
}

/// A regorus value as JSON (sets become arrays); `None` for undefined.
pub(crate) fn to_json(value: &Value) -> Result<Option<serde_json::Value>, RegoEvalError> {
    if matches!(value, Value::Undefined) {
        return Ok(None);
    }
    serde_json::to_value(value)
        .map(Some)
        .map_err(|e| RegoEvalError::Eval {
            message: format!("result is not representable as JSON: {e}"),
        })
}
