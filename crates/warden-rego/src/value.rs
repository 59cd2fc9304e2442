//! Value helpers: input depth, truthiness, conversion to JSON.

use std::collections::BTreeMap;

use regorus::Value;

use crate::error::RegoEvalError;

/// Hard ceiling on [`crate::RegoLimits::max_recursion_depth`]: conversion recurses once per
/// level, so this bounds its stack use whatever the caller configures.
pub(crate) const MAX_DEPTH_CEILING: u32 = 1_000;

/// Converts a request to a regorus value in one pass, refusing values nested deeper than
/// `max_depth` (a scalar has depth 0) with [`RegoEvalError::LimitExceeded`].
///
/// Numbers follow regorus' own JSON reader: integers stay exact, other numbers are `f64`.
pub(crate) fn to_rego(value: &serde_json::Value, max_depth: u32) -> Result<Value, RegoEvalError> {
    convert(value, max_depth.min(MAX_DEPTH_CEILING))
}

fn convert(value: &serde_json::Value, depth_left: u32) -> Result<Value, RegoEvalError> {
    Ok(match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                // Not representable: serde_json without arbitrary precision has no NaN.
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Ok(Value::new_array());
            }
            let left = depth_left
                .checked_sub(1)
                .ok_or(RegoEvalError::LimitExceeded)?;
            let converted: Result<Vec<Value>, RegoEvalError> =
                items.iter().map(|v| convert(v, left)).collect();
            Value::from(converted?)
        }
        serde_json::Value::Object(fields) => {
            if fields.is_empty() {
                return Ok(Value::new_object());
            }
            let left = depth_left
                .checked_sub(1)
                .ok_or(RegoEvalError::LimitExceeded)?;
            let mut map = BTreeMap::new();
            for (k, v) in fields {
                map.insert(Value::from(k.as_str()), convert(v, left)?);
            }
            Value::from(map)
        }
    })
}

/// One field of an input object assembled from parts (see [`crate::RegoPolicy::prepare_fields`]).
#[derive(Clone, Copy, Debug)]
pub enum InputField<'a> {
    /// A JSON value, converted with the depth limit.
    Json(&'a serde_json::Value),
    /// A JSON object given as its map, converted with the depth limit.
    Map(&'a serde_json::Map<String, serde_json::Value>),
    /// A string.
    Str(&'a str),
    /// An array of strings.
    Strs(&'a [&'a str]),
    /// A nested object.
    Object(&'a [(&'a str, InputField<'a>)]),
}

/// Converts an object given as fields, each at depth 1 below the object.
pub(crate) fn fields_to_rego(
    fields: &[(&str, InputField<'_>)],
    max_depth: u32,
) -> Result<Value, RegoEvalError> {
    object_from_fields(fields, max_depth.min(MAX_DEPTH_CEILING))
}

fn object_from_fields(
    fields: &[(&str, InputField<'_>)],
    depth_left: u32,
) -> Result<Value, RegoEvalError> {
    let left = depth_left
        .checked_sub(1)
        .ok_or(RegoEvalError::LimitExceeded)?;
    let mut map = BTreeMap::new();
    for (key, field) in fields {
        let value = match field {
            InputField::Json(v) => convert(v, left)?,
            InputField::Map(m) => {
                let inner = left.checked_sub(1).ok_or(RegoEvalError::LimitExceeded)?;
                let mut out = BTreeMap::new();
                for (k, v) in m.iter() {
                    out.insert(Value::from(k.as_str()), convert(v, inner)?);
                }
                Value::from(out)
            }
            InputField::Str(s) => Value::from(*s),
            InputField::Strs(items) => {
                Value::from(items.iter().map(|s| Value::from(*s)).collect::<Vec<_>>())
            }
            InputField::Object(inner) => object_from_fields(inner, left)?,
        };
        map.insert(Value::from(*key), value);
    }
    Ok(Value::from(map))
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
