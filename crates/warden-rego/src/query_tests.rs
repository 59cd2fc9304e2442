#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;

fn parts(q: &str) -> Vec<String> {
    parse_ref(q).unwrap_or_else(|e| vec![format!("ERR {e}")])
}

#[test]
fn parses_dotted_and_bracketed_references() {
    assert_eq!(parts("data"), ["data"]);
    assert_eq!(
        parts("data.payments.too_large"),
        ["data", "payments", "too_large"]
    );
    assert_eq!(parts(" data.a[\"b-c\"].d2 "), ["data", "a", "b-c", "d2"]);
}

#[test]
fn refuses_what_is_not_a_reference() {
    for q in [
        "input.x",
        "data.",
        "data.1a",
        "data[0]",
        "data.a == 1",
        "data.a[\"x",
        "count(data.a)",
        "datax.y",
    ] {
        assert!(parse_ref(q).is_err(), "{q}");
    }
}

#[test]
fn formats_canonically() {
    let c = parts("data.a[\"b\"][\"c-d\"]");
    assert_eq!(format_ref(&c), "data.a.b[\"c-d\"]");
    assert!(is_prefix(&c[..2], &c));
    assert!(!is_prefix(&c, &c[..2]));
}
