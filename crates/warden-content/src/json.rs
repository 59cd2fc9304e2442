//! Walking a scanned part (every string, number and object key, with its path) and rewriting it
//! with the redactions.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Number, Value};

/// One scanned part of the request (the JSON walk and the scanner both read it).
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    /// A JSON value: every string, number and object key inside it is scanned.
    Value(&'a Value),
    /// A plain text.
    Text(&'a str),
}

/// One step of a path inside a part: an object member, by the name paths give it (the redacted
/// form for a key holding a finding), or an array index.
#[derive(Clone, Debug)]
pub(crate) enum Seg<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

/// What the walk visits.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Leaf<'v> {
    /// A string value.
    Str(&'v str),
    /// A number value.
    Num(&'v Number),
    /// An object key, with the object holding it.
    Key {
        name: &'v str,
        object: &'v Map<String, Value>,
    },
}

/// Visit every string, number and object key of `part` in document order, a key just before
/// its value, with a path and the object key holding the value (with that object, so a value's
/// siblings can be context: the `type` of a service-account key). A key's path is its object's;
/// `f` returns the name paths give the member (`None`: the key itself), so when a key holds a
/// finding no path below it carries the finding's text. Iterative, so arbitrarily deep values
/// cannot overflow the stack.
pub(crate) fn walk<'v>(
    part: &Part<'v>,
    mut f: impl FnMut(&[Seg<'v>], Option<(&'v str, &'v Map<String, Value>)>, Leaf<'v>) -> Option<String>,
) {
    let root = match part {
        Part::Text(t) => {
            f(&[], None, Leaf::Str(t));
            return;
        }
        Part::Value(v) => *v,
    };
    /// How a value hangs from its parent.
    enum From<'v> {
        Root,
        Index(usize),
        Member(&'v str, &'v Map<String, Value>),
    }
    // (value, depth of its parent's path, how it hangs)
    // Room for a typical request up front: growing these is most of a small walk's cost.
    let mut stack: Vec<(&'v Value, usize, From<'v>)> = Vec::with_capacity(16);
    stack.push((root, 0, From::Root));
    let mut path: Vec<Seg<'v>> = Vec::with_capacity(8);
    while let Some((v, depth, from)) = stack.pop() {
        path.truncate(depth);
        let key = match from {
            From::Root => None,
            From::Index(i) => {
                path.push(Seg::Index(i));
                None
            }
            From::Member(name, object) => {
                let seg = f(&path, None, Leaf::Key { name, object })
                    .map_or(Cow::Borrowed(name), Cow::Owned);
                path.push(Seg::Key(seg));
                Some((name, object))
            }
        };
        let d = path.len();
        match v {
            Value::String(s) => {
                f(&path, key, Leaf::Str(s));
            }
            Value::Number(n) => {
                f(&path, key, Leaf::Num(n));
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate().rev() {
                    if !matches!(x, Value::Null | Value::Bool(_)) {
                        stack.push((x, d, From::Index(i)));
                    }
                }
            }
            // Every member: its key is scanned whatever its value.
            Value::Object(m) => {
                for (k, x) in m.iter().rev() {
                    stack.push((x, d, From::Member(k.as_str(), m)));
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// `base` + the escaped segments as a JSON Pointer.
pub(crate) fn pointer(base: &str, segs: &[Seg<'_>]) -> String {
    let mut p = String::from(base);
    for s in segs {
        p.push('/');
        match s {
            Seg::Key(k) => {
                for c in k.chars() {
                    match c {
                        '~' => p.push_str("~0"),
                        '/' => p.push_str("~1"),
                        _ => p.push(c),
                    }
                }
            }
            Seg::Index(i) => p.push_str(&i.to_string()),
        }
    }
    p
}

/// The name a key holding a finding gets: its redacted form, with `#2`, `#3`... appended when
/// another key of the object has that name or was given it already (`taken`).
pub(crate) fn unique_name(
    redacted: String,
    object: &Map<String, Value>,
    taken: &mut Vec<String>,
) -> String {
    let free = |n: &str, taken: &[String]| !object.contains_key(n) && !taken.iter().any(|t| t == n);
    let mut name = redacted.clone();
    let mut i = 2usize;
    while !free(&name, taken) {
        name = format!("{redacted}#{i}");
        i += 1;
    }
    taken.push(name.clone());
    name
}

/// One change to a part, by paths as [`walk`] gives them (renamed keys already renamed).
#[derive(Debug)]
pub(crate) enum Edit {
    /// Replace the value at the pointer.
    Value(String, Value),
    /// Rename a key of the object at the pointer.
    Rename(String, String, String),
}

/// The part with the edits applied; nothing else changes (key order, numbers, nesting).
pub(crate) fn apply(part: &Part<'_>, edits: Vec<Edit>) -> Value {
    let mut out = match part {
        // A text has one edit, of the whole text: no copy of the original is needed.
        Part::Text(t) => {
            return edits
                .into_iter()
                .rev()
                .find_map(|e| match e {
                    Edit::Value(_, v) => Some(v),
                    Edit::Rename(..) => None,
                })
                .unwrap_or_else(|| Value::String((*t).to_owned()));
        }
        Part::Value(v) => (*v).clone(),
    };
    // Renames first, an object's all at once, parents before children: the pointers below
    // them already use the new names.
    let mut renames: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut values = Vec::new();
    for e in edits {
        match e {
            Edit::Rename(object, from, to) => {
                let i = *index.entry(object.clone()).or_insert_with(|| {
                    renames.push((object, HashMap::new()));
                    renames.len() - 1
                });
                if let Some((_, m)) = renames.get_mut(i) {
                    m.insert(from, to);
                }
            }
            Edit::Value(ptr, v) => values.push((ptr, v)),
        }
    }
    for (ptr, names) in renames {
        if let Some(Value::Object(m)) = out.pointer_mut(&ptr) {
            let old = std::mem::take(m);
            for (k, v) in old {
                let k = names.get(&k).cloned().unwrap_or(k);
                m.insert(k, v);
            }
        }
    }
    for (ptr, v) in values {
        if ptr.is_empty() {
            out = v;
        } else if let Some(slot) = out.pointer_mut(&ptr) {
            *slot = v;
        }
    }
    out
}

/// The text numbers are scanned as: the integer digits of an integral value (also of a float
/// such as `4111111111111111.0`, which JSON writers produce from doubles), else serde_json's
/// form.
pub(crate) fn number_text(n: &Number) -> String {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64())
        && f.fract() == 0.0
        && f.abs() < 1e19
    {
        return format!("{f:.0}");
    }
    n.to_string()
}

/// Whether a number is at least a million in magnitude: shorter numbers hold no built-in
/// finding (the shortest, an SSN or phone number under its key, has 7 digits).
pub(crate) fn large(n: &Number) -> bool {
    if let Some(u) = n.as_u64() {
        u >= 1_000_000
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs() >= 1_000_000
    } else {
        n.as_f64().is_none_or(|f| f.abs() >= 1e6)
    }
}
