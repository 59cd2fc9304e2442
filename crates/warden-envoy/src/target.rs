//! The request target (`:path`) read one way only. A policy decides on the decoded path and
//! query; the upstream receives the raw target. Where servers could read the raw target
//! differently (an encoded `/`, dot segments, `;` path parameters, a double-encoded escape, a
//! query name given twice with different values, a raw `;` in the query), the request is
//! refused rather than decided on one reading and served on another.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// The target a policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path, percent-decoded.
    pub path: String,
    /// Query parameters, decoded (`+` as space).
    pub query: BTreeMap<String, String>,
}

/// Why a target cannot be read one way only (the client's answer names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous(pub &'static str);

/// Bytes a path escape may not stand for: each is read differently by some server once
/// decoded (a separator, a parameter, an escape decoded twice, a string end).
const RESERVED_ESCAPES: &[u8] = b"/\\?#;%\0";

/// Reads `raw` (`:path`, query included).
pub fn read(raw: &str) -> Result<Target, Ambiguous> {
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    if !path.starts_with('/') {
        return Err(Ambiguous("the path must start with `/`"));
    }
    if path.contains(['\\', ';', '#']) {
        return Err(Ambiguous("the path holds `\\`, `;` or `#`"));
    }
    let path = decode_path(path)?;
    for segment in path.split('/').skip(1) {
        if segment == "." || segment == ".." {
            return Err(Ambiguous("the path holds a `.` or `..` segment"));
        }
    }
    if path.contains("//") {
        return Err(Ambiguous("the path holds an empty segment (`//`)"));
    }
    Ok(Target {
        path,
        query: query.map(read_query).transpose()?.unwrap_or_default(),
    })
}

/// Decodes `%XX` escapes, refusing malformed ones and those in [`RESERVED_ESCAPES`].
fn decode_path(path: &str) -> Result<String, Ambiguous> {
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            None => return Err(Ambiguous("the path holds a malformed `%` escape")),
            Some(b) if RESERVED_ESCAPES.contains(&b) => {
                return Err(Ambiguous(
                    "the path encodes `/`, `\\`, `?`, `#`, `;`, `%` or NUL",
                ));
            }
            Some(_) => {}
        }
    }
    percent_decode_str(path)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| Ambiguous("the decoded path is not UTF-8"))
}

/// Decodes `application/x-www-form-urlencoded` pairs; a name given twice must carry one value.
/// A raw `;` is refused: some servers split pairs on it too (`q=1;admin=1`), others do not.
fn read_query(query: &str) -> Result<BTreeMap<String, String>, Ambiguous> {
    if query.contains(';') {
        return Err(Ambiguous(
            "the query holds `;`, which some servers read as a separator (write it as %3B)",
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match out.get(name.as_ref()) {
            Some(seen) if *seen != value => {
                return Err(Ambiguous(
                    "a query parameter is given twice with different values",
                ));
            }
            Some(_) => {}
            None => {
                out.insert(name.into_owned(), value.into_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_plain_target_is_decoded() {
        let t = read("/v1/files/my%20doc%C3%A9?q=a+b&n=%2F1&n=%2F1&flag&s=%3B").unwrap();
        assert_eq!(t.path, "/v1/files/my docé");
        assert_eq!(t.query.get("q").unwrap(), "a b");
        assert_eq!(
            t.query.get("n").unwrap(),
            "/1",
            "an escape in the query is data"
        );
        assert_eq!(t.query.get("flag").unwrap(), "");
        assert_eq!(t.query.get("s").unwrap(), ";", "an escaped `;` is data");
        assert_eq!(read("/").unwrap().path, "/");
        assert_eq!(read("/a/").unwrap().path, "/a/");
    }

    #[test]
    fn targets_servers_read_differently_are_refused() {
        for raw in [
            "/admin%2Fusers",
            "/admin%2fusers",
            "/admin%5Cusers",
            "/admin\\users",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/./admin",
            "/admin/.",
            "//admin",
            "/a//b",
            "/admin;jsessionid=1/x",
            "/admin%3Bx",
            "/%2561dmin",
            "/adm%00in",
            "/adm%zzin",
            "/adm%4",
            "/a%3Fb",
            "/a#frag",
            "/%FF",
            "admin",
            "*",
            "/q?a=1&a=2",
            "/q?a=1;admin=1",
        ] {
            assert!(read(raw).is_err(), "{raw} was read as {:?}", read(raw));
        }
    }

    #[test]
    fn an_escaped_unreserved_byte_reads_as_itself() {
        assert_eq!(read("/%61dmin/x").unwrap().path, "/admin/x");
    }
}
