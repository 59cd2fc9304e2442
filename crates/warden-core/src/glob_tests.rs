#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

fn g(p: &str) -> Glob {
    Glob::new(p).unwrap()
}

#[test]
fn exact_prefix_suffix_and_general_shapes() {
    assert!(g("send_email").matches("send_email"));
    assert!(!g("send_email").matches("send_emails"));
    assert!(g("db.*").matches("db."));
    assert!(g("db.*").matches("db.read"));
    assert!(!g("db.*").matches("xdb.read"));
    assert!(g("*_write").matches("file_write"));
    assert!(!g("*_write").matches("file_writer"));
    assert!(g("*").matches(""));
    assert!(g("a?c").matches("abc"));
    assert!(!g("a?c").matches("ac"));
    assert!(g("a*b*c").matches("aXXbYYc"));
    assert!(!g("a*b*c").matches("aXXbYY"));
    assert!(g("intern:*").matches("intern:carl"));
    assert!(g("?é*").matches("xé"));
}

#[test]
fn globs_are_case_sensitive_and_have_no_escapes_or_classes() {
    assert!(!g("Send").matches("send"));
    assert!(g("[a]").matches("[a]"));
    assert!(!g("[a]").matches("a"));
    assert!(g("a\\*").matches("a\\xyz"));
}

#[test]
fn empty_glob_is_rejected() {
    assert_eq!(Glob::new(""), Err(GlobError::Empty));
}

#[test]
fn literal_prefix_stops_at_first_wildcard() {
    assert_eq!(g("db.*").literal_prefix(), "db.");
    assert_eq!(g("a?b*").literal_prefix(), "a");
    assert_eq!(g("exact").literal_prefix(), "exact");
    assert_eq!(g("*x").literal_prefix(), "");
}

/// Reference semantics: translate to an anchored regex.
fn reference(pattern: &str, text: &str) -> bool {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str("(?s:.*)"),
            '?' => re.push_str("(?s:.)"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap().is_match(text)
}

proptest! {
    #[test]
    fn matches_like_the_regex_translation(p in "[ab*?]{1,8}", t in "[ab]{0,10}") {
        prop_assert_eq!(g(&p).matches(&t), reference(&p, &t));
    }
}
