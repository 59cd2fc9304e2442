//! Argument conditions (spec sections 3 and 9): JSON Pointer into `args`, then a set of checks.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Map, Value};

/// Largest compiled size accepted for a `matches` regex, in bytes.
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// Deepest nesting of `any` / `all` inside one argument condition.
pub const MAX_ARG_NESTING: usize = 8;

/// What a condition says about a value: yes, no, or it cannot judge it (a value of a type the
/// condition is not about, a number it cannot compare exactly). Combined with Kleene logic, so
/// a "cannot judge" decides the outcome only where it could change it. A rule's argument
/// conditions that cannot be judged make a deny rule match and an allow or warn rule not: an
/// unexpected value never slips past a deny rule, nor through an allow rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The condition holds.
    Yes,
    /// The condition does not hold.
    No,
    /// The condition cannot judge the value.
    Unknown,
}

impl Judgement {
    fn from_bool(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }

    /// Kleene conjunction: No wins, then Unknown.
    pub fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::No, _) | (_, Self::No) => Self::No,
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            _ => Self::Yes,
        }
    }

    /// Kleene disjunction: Yes wins, then Unknown.
    pub fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::Yes, _) | (_, Self::Yes) => Self::Yes,
            (Self::Unknown, _) | (_, Self::Unknown) => Self::Unknown,
            _ => Self::No,
        }
    }

    /// Conjunction over `items`, stopping at the first No.
    pub fn all(items: impl IntoIterator<Item = Self>) -> Self {
        let mut acc = Self::Yes;
        for j in items {
            acc = acc.and(j);
            if acc == Self::No {
                break;
            }
        }
        acc
    }

    /// Disjunction over `items`, stopping at the first Yes.
    pub fn any(items: impl IntoIterator<Item = Self>) -> Self {
        let mut acc = Self::No;
        for j in items {
            acc = acc.or(j);
            if acc == Self::Yes {
                break;
            }
        }
        acc
    }
}

/// One compiled argument condition: every check given must hold.
#[derive(Debug, Clone)]
pub struct ArgCondition {
    /// RFC 6901 JSON Pointer into the request's `args` or `context` (per `subject`).
    pub pointer: String,
    /// What the pointer points into.
    pub subject: Subject,
    /// The checks on the value the pointer resolves to.
    pub checks: Vec<ArgCheck>,
}

/// A single check on an argument value.
#[derive(Debug, Clone)]
pub enum ArgCheck {
    /// Strict JSON equality (numbers by exact value); judges values of the operand's type.
    Equals(Value),
    /// Equal to one of the values; judges values of the type of one of them.
    OneOf(Vec<Value>),
    /// The regex finds a match in the value; judges strings.
    Matches(Regex),
    /// Substring of a string (judges strings when the operand is one), or an element of an
    /// array equal to the operand (elements judged as by `Equals`).
    Contains(Value),
    /// Whether the pointer resolves to a value (`null` counts as present); judges anything.
    Exists(bool),
    /// String length in chars or array length at most N; judges strings and arrays.
    MaxLen(usize),
    /// A number compared with the operand by exact value; judges numbers. `between: [lo, hi]`
    /// compiles to `Compare(Gte, lo)` and `Compare(Lte, hi)`.
    Compare(Comparison, serde_json::Number),
    /// Some element of the array meets every check (a value that is not an array is taken as
    /// the one element of a list).
    Any(Vec<ArgCheck>),
    /// Every element of the array meets every check (a value that is not an array is taken as
    /// the one element of a list; an empty array meets it).
    All(Vec<ArgCheck>),
}

/// How [`ArgCheck::Compare`] compares a value with its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Greater than (`gt`).
    Gt,
    /// Greater than or equal (`gte`).
    Gte,
    /// Less than (`lt`).
    Lt,
    /// Less than or equal (`lte`).
    Lte,
}

impl Comparison {
    /// The condition's name in a policy.
    pub fn name(self) -> &'static str {
        match self {
            Comparison::Gt => "gt",
            Comparison::Gte => "gte",
            Comparison::Lt => "lt",
            Comparison::Lte => "lte",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Gte => ordering != Ordering::Less,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Lte => ordering != Ordering::Greater,
        }
    }
}

/// Where an [`ArgCondition`]'s pointer points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The request's `args` (a rule's `args:`).
    Args,
    /// The request's `context` attributes (a rule's `context:`; the pointer is not empty).
    Context,
    /// A header of the request's `http` member, named (lower case) by the pointer's one token
    /// (a rule's `http.headers`); header names compare without regard to case.
    HttpHeader,
    /// A query parameter of the request's `http` member, named by the pointer's one token (a
    /// rule's `http.query`).
    HttpQuery,
}

impl Subject {
    /// The rule field the condition is written under.
    pub fn field(self) -> &'static str {
        match self {
            Subject::Args => "args",
            Subject::Context => "context",
            Subject::HttpHeader => "http.headers",
            Subject::HttpQuery => "http.query",
        }
    }
}

impl ArgCondition {
    /// What the condition says about `request`: its `args` or its `context`, per `subject`.
    pub fn judge_request(&self, request: &crate::request::Request) -> Judgement {
        match self.subject {
            Subject::Args => self.judge(request.args.as_ref()),
            Subject::Context => {
                let target = request
                    .context
                    .as_ref()
                    .and_then(|context| resolve_in(context, &self.pointer));
                judge_all(&self.checks, target)
            }
            Subject::HttpHeader | Subject::HttpQuery => {
                let name = http_name(&self.pointer);
                let value = request.http.as_ref().and_then(|http| {
                    if self.subject == Subject::HttpHeader {
                        http.headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                            .map(|(_, v)| v)
                    } else {
                        http.query.get(name.as_ref())
                    }
                });
                let value = value.map(|v| Value::String(v.clone()));
                judge_all(&self.checks, value.as_ref())
            }
        }
    }

    /// What the condition says about `args` (absent args resolve nothing).
    pub fn judge(&self, args: Option<&Value>) -> Judgement {
        let target = args.and_then(|a| a.pointer(&self.pointer));
        judge_all(&self.checks, target)
    }

    /// Whether the condition certainly holds for `args` (what an allow rule needs).
    pub fn holds(&self, args: Option<&Value>) -> bool {
        self.judge(args) == Judgement::Yes
    }
}

/// The name a one-token pointer (`/x-env`, `/a~1b`) holds.
fn http_name(pointer: &str) -> std::borrow::Cow<'_, str> {
    let token = pointer.strip_prefix('/').unwrap_or(pointer);
    if token.contains('~') {
        std::borrow::Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        std::borrow::Cow::Borrowed(token)
    }
}

/// The one-token pointer naming `name` (`~` and `/` escaped as RFC 6901 says).
pub fn http_pointer(name: &str) -> String {
    format!("/{}", name.replace('~', "~0").replace('/', "~1"))
}

fn judge_all(checks: &[ArgCheck], target: Option<&Value>) -> Judgement {
    Judgement::all(checks.iter().map(|c| c.judge(target)))
}

/// The elements `any` / `all` range over: an array's items, or the value itself.
fn elements(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

impl ArgCheck {
    /// What the check says about the resolved value (`None`: the pointer resolved to
    /// nothing, where only `exists: false` holds).
    pub fn judge(&self, target: Option<&Value>) -> Judgement {
        let Some(value) = target else {
            return Judgement::from_bool(matches!(self, ArgCheck::Exists(false)));
        };
        match self {
            ArgCheck::Equals(expected) => judge_one_of(value, std::slice::from_ref(expected)),
            ArgCheck::OneOf(options) => judge_one_of(value, options),
            ArgCheck::Matches(re) => value
                .as_str()
                .map_or(Judgement::Unknown, |s| Judgement::from_bool(re.is_match(s))),
            ArgCheck::Contains(needle) => match (value, needle) {
                (Value::String(s), Value::String(n)) => {
                    Judgement::from_bool(s.contains(n.as_str()))
                }
                (Value::Array(items), _) => Judgement::any(
                    items
                        .iter()
                        .map(|item| judge_one_of(item, std::slice::from_ref(needle))),
                ),
                _ => Judgement::Unknown,
            },
            ArgCheck::Exists(expected) => Judgement::from_bool(*expected),
            ArgCheck::MaxLen(max) => match value {
                Value::String(s) => Judgement::from_bool(s.chars().count() <= *max),
                Value::Array(items) => Judgement::from_bool(items.len() <= *max),
                _ => Judgement::Unknown,
            },
            ArgCheck::Compare(comparison, bound) => match value {
                Value::Number(n) => number_cmp(n, bound).map_or(Judgement::Unknown, |o| {
                    Judgement::from_bool(comparison.holds(o))
                }),
                _ => Judgement::Unknown,
            },
            ArgCheck::Any(checks) => {
                Judgement::any(elements(value).iter().map(|e| judge_all(checks, Some(e))))
            }
            ArgCheck::All(checks) => {
                Judgement::all(elements(value).iter().map(|e| judge_all(checks, Some(e))))
            }
        }
    }

    /// Whether the check certainly holds for the resolved value.
    pub fn holds(&self, target: Option<&Value>) -> bool {
        self.judge(target) == Judgement::Yes
    }
}

/// `one_of` (and `equals`, a list of one): judged by the options of the value's JSON type
/// (numbers are one type); a `null` option judges any value; with neither, Unknown.
fn judge_one_of(value: &Value, options: &[Value]) -> Judgement {
    let same_type = |o: &&Value| std::mem::discriminant(*o) == std::mem::discriminant(value);
    if options.iter().any(|o| same_type(&o)) {
        return Judgement::any(options.iter().filter(same_type).map(|o| json_eq3(value, o)));
    }
    // The value is not null (a null option would have its type) and no option has its type.
    if !options.is_empty() && options.iter().all(Value::is_null) {
        Judgement::No
    } else {
        Judgement::Unknown
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
/// by exact value (`1` equals `1.0`), arrays element-wise, objects key-wise regardless of order.
/// A number that cannot be compared exactly counts as unequal here; see [`json_eq3`].
pub fn json_eq(a: &Value, b: &Value) -> bool {
    json_eq3(a, b) == Judgement::Yes
}

/// Strict JSON equality with three outcomes: Unknown where an integer meets a float of
/// magnitude 2^53 or more, which may be the rounded form of many integers (`1e19`, or
/// `1234567890123456768.0` read from `1234567890123456789.0`).
pub fn json_eq3(a: &Value, b: &Value) -> Judgement {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Judgement::No;
            }
            Judgement::all(x.iter().zip(y).map(|(p, q)| json_eq3(p, q)))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Judgement::No;
            }
            Judgement::all(
                x.iter()
                    .map(|(k, v)| y.get(k).map_or(Judgement::No, |w| json_eq3(v, w))),
            )
        }
        _ => Judgement::from_bool(a == b),
    }
}

/// 2^53: every integer of smaller magnitude is exactly a double.
const EXACT_DOUBLE_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Numbers by exact value: integers (i64 or u64) exactly; two floats as doubles; an integer
/// and a float equal only if the float is integral, below 2^53 in magnitude and the same value
/// (never a float that merely rounds to the integer), Unknown for a larger integral float.
fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> Judgement {
    let as_int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (as_int(x), as_int(y)) {
        (Some(a), Some(b)) => Judgement::from_bool(a == b),
        (Some(int), None) => int_float_eq(int, y.as_f64()),
        (None, Some(int)) => int_float_eq(int, x.as_f64()),
        (None, None) => match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) => Judgement::from_bool(a == b),
            _ => Judgement::No,
        },
    }
}

fn int_float_eq(int: i128, float: Option<f64>) -> Judgement {
    let Some(f) = float.filter(|f| f.is_finite()) else {
        return Judgement::No;
    };
    if f.fract() != 0.0 {
        return Judgement::No;
    }
    if f.abs() >= EXACT_DOUBLE_LIMIT {
        return Judgement::Unknown;
    }
    // Integral and below 2^53 in magnitude: the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    let exact = f as i128;
    Judgement::from_bool(exact == int)
}

/// The value `pointer` (RFC 6901, not empty) resolves to in an object held as a map.
fn resolve_in<'a>(map: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let rest = pointer.strip_prefix('/')?;
    let (first, rest) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, ""),
    };
    let key = first.replace("~1", "/").replace("~0", "~");
    map.get(&key)?.pointer(rest)
}

/// Orders two numbers by exact value: integers exactly (i64 and u64 alike), two floats as
/// doubles, an integer and a float exactly, except where the float (of magnitude 2^53 or more)
/// is within one unit of its last place of the integer: it may be the rounded form of a number
/// on either side, so the order is unknown (`None`).
pub fn number_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    let as_int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (as_int(x), as_int(y)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        (Some(int), None) => int_float_cmp(int, y.as_f64()?),
        (None, Some(int)) => int_float_cmp(int, x.as_f64()?).map(Ordering::reverse),
        (None, None) => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

/// 2^127: beyond every integer JSON gives (at most u64).
const BEYOND_INTEGERS: f64 = 1.7e38;

fn int_float_cmp(int: i128, f: f64) -> Option<Ordering> {
    if !f.is_finite() {
        return None;
    }
    if f >= BEYOND_INTEGERS {
        return Some(Ordering::Less);
    }
    if f <= -BEYOND_INTEGERS {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    // Integral and within i128: the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    let whole = floor as i128;
    if f.abs() >= EXACT_DOUBLE_LIMIT {
        // One unit in the last place of `f` (a power of two at least 2).
        #[allow(clippy::cast_possible_truncation)]
        let ulp = (f.abs() * f64::EPSILON) as i128;
        if (int - whole).abs() <= ulp {
            return None;
        }
        return Some(int.cmp(&whole));
    }
    Some(match int.cmp(&whole) {
        Ordering::Equal if floor == f => Ordering::Equal,
        Ordering::Equal => Ordering::Less,
        other => other,
    })
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
