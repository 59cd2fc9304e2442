//! Query references: `data.pkg.rule`, `data.pkg["odd-name"].rule`.

/// Splits a reference into its components (`["data", "pkg", "rule"]`).
///
/// Accepted: `data`, then any number of `.ident` or `["string"]` selectors. Anything else
/// (expressions, variables, numeric indexes) is refused with a message.
pub(crate) fn parse_ref(query: &str) -> Result<Vec<String>, String> {
    let text = query.trim();
    let mut rest = text.strip_prefix("data").ok_or_else(|| {
        "expected a reference that starts with `data`, such as `data.pkg.rule`".to_string()
    })?;
    let mut components = vec!["data".to_string()];
    while !rest.is_empty() {
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = ident_len(after_dot);
            if len == 0 {
                return Err("expected a name after `.`".to_string());
            }
            let (name, tail) = after_dot.split_at(len);
            components.push(name.to_string());
            rest = tail;
        } else if let Some(after_bracket) = rest.strip_prefix("[\"") {
            let end = after_bracket
                .find("\"]")
                .ok_or_else(|| "unterminated `[\"...\"]` selector".to_string())?;
            let (name, tail) = after_bracket.split_at(end);
            if name.contains(['"', '\\']) {
                return Err("escapes are not supported in `[\"...\"]` selectors".to_string());
            }
            components.push(name.to_string());
            rest = tail.get(2..).unwrap_or_default();
        } else {
            return Err(format!(
                "unexpected `{}`: only `.name` and `[\"name\"]` selectors are allowed",
                rest.chars().next().unwrap_or_default()
            ));
        }
    }
    Ok(components)
}

/// Length in bytes of the Rego identifier at the start of `s` (0 when there is none).
fn ident_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// `true` when `prefix` is a (non-strict) prefix of `path`.
pub(crate) fn is_prefix(prefix: &[String], path: &[String]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Formats components as a canonical reference (`data.a["b-c"].d`).
pub(crate) fn format_ref(components: &[String]) -> String {
    let mut out = String::new();
    for (i, c) in components.iter().enumerate() {
        if i == 0 {
            out.push_str(c);
        } else if !c.is_empty() && ident_len(c) == c.len() {
            out.push('.');
            out.push_str(c);
        } else {
            out.push_str("[\"");
            out.push_str(c);
            out.push_str("\"]");
        }
    }
    out
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
