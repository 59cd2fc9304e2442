//! The texts of a body: JSON Pointers to the strings a decision inspects, joined into the one
//! text a `prompt` or `completion` request carries, and redacted in place afterwards.

use serde_json::Value;
use warden_content::ContentPolicy;
use warden_core::{Kind, Request};

use crate::api::{Refusal, RefusalKind};

/// Between two texts in the joined text: a paragraph break, as a model reads consecutive
/// messages.
pub(crate) const SEPARATOR: &str = "\n\n";

/// One reference token of a JSON Pointer, escaped (`~` as `~0`, `/` as `~1`).
pub(crate) fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Pointers to every string leaf of `value` (at `at`), in document order.
pub(crate) fn leaves(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::String(_) => out.push(at.to_owned()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(members) => {
            for (key, item) in members {
                leaves(item, &format!("{at}/{}", token(key)), out);
            }
        }
        _ => {}
    }
}

/// The texts at `pointers`, joined by [`SEPARATOR`] (a pointer that names no string adds an
/// empty text, which cannot happen for pointers found in the same body).
pub(crate) fn join(root: &Value, pointers: &[String]) -> String {
    let mut joined = String::new();
    for (i, pointer) in pointers.iter().enumerate() {
        if i > 0 {
            joined.push_str(SEPARATOR);
        }
        joined.push_str(root.pointer(pointer).and_then(Value::as_str).unwrap_or(""));
    }
    joined
}

/// Redacts each text at `pointers` as the policy redacts a request of `kind` (`prompt`:
/// input; `completion`: output), then checks the joined result holds nothing the policy would
/// still redact: a finding cut across two texts (found in the joined text, in neither alone)
/// refuses the exchange rather than pass half of it.
pub(crate) fn redact(
    root: &mut Value,
    pointers: &[String],
    content: &ContentPolicy,
    kind: Kind,
) -> Result<(), Refusal> {
    for pointer in pointers {
        let Some(slot) = root.pointer_mut(pointer) else {
            continue;
        };
        let Value::String(text) = slot else {
            continue;
        };
        let request = Request {
            kind,
            text: Some(std::mem::take(text)),
            ..Request::default()
        };
        let outcome = warden_core::content::scan(content, &request);
        *text = match outcome.redacted {
            Some(Value::String(redacted)) => redacted,
            _ => request.text.unwrap_or_default(),
        };
    }
    let check = Request {
        kind,
        text: Some(join(root, pointers)),
        ..Request::default()
    };
    if warden_core::content::scan(content, &check)
        .redacted
        .is_some()
    {
        return Err(Refusal::new(
            RefusalKind::Denied,
            "Warden denied the exchange: a finding spans two texts and cannot be redacted in either",
        ));
    }
    Ok(())
}

/// Redacts every string of an upstream's error (its message may quote what the model or the
/// prompt held) as the policy redacts an answer; the error is passed on, never its findings.
pub fn redact_error(error: &mut Value, content: Option<&ContentPolicy>) {
    let Some(content) = content else { return };
    let mut pointers = Vec::new();
    leaves(error, "", &mut pointers);
    for pointer in pointers {
        let Some(Value::String(text)) = error.pointer_mut(&pointer) else {
            continue;
        };
        let request = Request {
            kind: Kind::Completion,
            text: Some(std::mem::take(text)),
            ..Request::default()
        };
        let outcome = warden_core::content::scan(content, &request);
        *text = match (outcome.redacted, outcome.deny) {
            (Some(Value::String(redacted)), _) => redacted,
            // A finding the policy blocks: the message is withheld.
            (_, Some(_)) => "[withheld by Warden]".to_owned(),
            _ => request.text.unwrap_or_default(),
        };
    }
}
