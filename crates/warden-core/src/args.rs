//! Argument conditions (spec sections 3 and 9): JSON Pointer into `args`, then a set of checks.

use regex::Regex;
use serde_json::Value;

/// Largest compiled size accepted for a `matches` regex, in bytes.
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// One compiled argument condition: every check given must hold.
#[derive(Debug, Clone)]
pub struct ArgCondition {
    /// RFC 6901 JSON Pointer into the request's `args`.
    pub pointer: String,
    /// The checks on the value the pointer resolves to.
    pub checks: Vec<ArgCheck>,
}

/// A single check on an argument value.
#[derive(Debug, Clone)]
pub enum ArgCheck {
    /// Strict JSON equality (numbers by value).
    Equals(Value),
    /// Equal to one of the values.
    OneOf(Vec<Value>),
    /// The value is a string and the regex finds a match in it.
    Matches(Regex),
    /// Substring of a string, or an element of an array.
    Contains(Value),
    /// Whether the pointer resolves to a value (`null` counts as present).
    Exists(bool),
    /// String length in chars or array length at most N.
    MaxLen(usize),
}

impl ArgCondition {
    /// Whether the condition holds for `args` (absent args resolve nothing).
    pub fn holds(&self, args: Option<&Value>) -> bool {
        let target = args.and_then(|a| a.pointer(&self.pointer));
        self.checks.iter().all(|check| check.holds(target))
    }
}

impl ArgCheck {
    /// Whether the check holds for the resolved value (`None`: the pointer resolved to nothing).
    pub fn holds(&self, target: Option<&Value>) -> bool {
        let Some(value) = target else {
            // Where the pointer resolves to nothing, only `exists: false` holds.
            return matches!(self, ArgCheck::Exists(false));
        };
        match self {
            ArgCheck::Equals(expected) => json_eq(value, expected),
            ArgCheck::OneOf(options) => options.iter().any(|o| json_eq(value, o)),
            ArgCheck::Matches(re) => value.as_str().is_some_and(|s| re.is_match(s)),
            ArgCheck::Contains(needle) => match value {
                Value::String(s) => needle.as_str().is_some_and(|n| s.contains(n)),
                Value::Array(items) => items.iter().any(|item| json_eq(item, needle)),
                _ => false,
            },
            ArgCheck::Exists(expected) => *expected,
            ArgCheck::MaxLen(max) => match value {
                Value::String(s) => s.chars().count() <= *max,
                Value::Array(items) => items.len() <= *max,
                _ => false,
            },
        }
    }
}

/// Compiles a `matches` regex with an explicit size limit.
pub fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
}

/// Checks that `pointer` is a syntactically valid RFC 6901 JSON Pointer.
pub fn validate_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`{pointer}` is not a JSON Pointer (it must start with `/`)"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{pointer}` is not a JSON Pointer (`~` must be followed by 0 or 1)"
            ));
        }
    }
    Ok(())
}

/// Strict JSON equality: types must agree (`1` is not `"1"`, `true` is not `1`), numbers compare
/// by value (`1` equals `1.0`), arrays element-wise, objects key-wise regardless of order.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let as_int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (as_int(x), as_int(y)) {
        (Some(a), Some(b)) => a == b,
        _ => match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
