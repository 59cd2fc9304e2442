//! `email` (anchored on `@`) and `ipv6` (anchored on `:`).

use std::net::Ipv6Addr;

use crate::builtin::{Builtin, Sink};
use crate::bytes::{alnum, at, before, digit, word};

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// File extensions that look like top-level domains in `name@2x.png`-style strings.
const NOT_TLDS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "json", "yaml", "yml",
    "txt", "html", "htm", "tsx", "jsx", "lock", "toml", "csv", "log",
];

/// Length of the character ending at byte `i` of `s` when it is a non-ASCII letter or digit
/// (internationalised addresses, RFC 6531: `josé@example.com`, `user@bücher.de`).
#[inline]
fn intl_before(s: &str, i: usize) -> Option<usize> {
    if before(s.as_bytes(), i).is_ascii() {
        return None;
    }
    let c = s.get(..i)?.chars().next_back()?;
    (!c.is_ascii() && c.is_alphanumeric()).then(|| c.len_utf8())
}

/// Length of the character starting at byte `i` of `s` when it is a non-ASCII letter or digit.
#[inline]
fn intl_at(s: &str, i: usize) -> Option<usize> {
    if at(s.as_bytes(), i).is_ascii() {
        return None;
    }
    let c = s.get(i..)?.chars().next()?;
    (!c.is_ascii() && c.is_alphanumeric()).then(|| c.len_utf8())
}

/// Whether `domain` has two or more labels, none empty, longer than 63 bytes or starting or
/// ending with `-`, and an alphabetic TLD of 2+ characters that is not a file extension.
#[inline]
fn domain_ok(domain: &str) -> bool {
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in domain.as_bytes().split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = if last.is_ascii() {
        last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
    } else {
        // An internationalised TLD (`рф`): letters of any script.
        let tld = std::str::from_utf8(last).unwrap_or("");
        tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic)
    };
    labels >= 2
        && tld_ok
        && !NOT_TLDS
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(last))
}

/// Email at the `@` at byte `a`; returns the byte where scanning may resume.
pub(crate) fn email(s: &str, a: usize, sink: &mut Sink<'_>) -> usize {
    let b = s.as_bytes();
    // Local part: up to 64 bytes of allowed chars before '@', no leading/trailing/double dot.
    let mut ls = a;
    while ls > 0 && a - ls < 64 {
        if local_char(before(b, ls)) {
            ls -= 1;
        } else if let Some(n) = intl_before(s, ls) {
            ls -= n;
        } else {
            break;
        }
    }
    while at(b, ls) == b'.' && ls < a {
        ls += 1;
    }
    if ls == a
        || local_char(before(b, ls))
        || intl_before(s, ls).is_some()
        || before(b, ls) == b'@'
        || before(b, a) == b'.'
    {
        return a + 1;
    }
    if b.get(ls..a)
        .is_none_or(|l| l.windows(2).any(|w| w == b".."))
    {
        return a + 1;
    }
    // Domain: labels of letters, digits and `-`, dot separated, alphabetic TLD of 2+ chars.
    let ds = a + 1;
    let mut de = ds;
    while de - ds < 255 {
        if domain_char(at(b, de)) {
            de += 1;
        } else if let Some(n) = intl_at(s, de) {
            de += n;
        } else {
            break;
        }
    }
    let resume = de;
    while de > ds && matches!(at(b, de - 1), b'.' | b'-') {
        de -= 1;
    }
    if at(b, de) == b'@' || de == ds {
        return resume.max(a + 1);
    }
    let Some(domain) = s.get(ds..de) else {
        return resume.max(a + 1);
    };
    if domain_ok(domain) {
        sink.push(Builtin::Email, ls, de);
    }
    resume.max(a + 1)
}

fn hexish(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':'
}

/// IPv6 address around the `:` at byte `c`; returns the byte where scanning may resume.
pub(crate) fn ipv6(s: &str, c: usize, sink: &mut Sink<'_>) -> usize {
    let b = s.as_bytes();
    if !hexish(before(b, c)) || !hexish(at(b, c + 1)) {
        return c + 1;
    }
    let mut st = c;
    while hexish(before(b, st)) {
        st -= 1;
    }
    let mut en = c + 1;
    while hexish(at(b, en)) || (at(b, en) == b'.' && digit(at(b, en + 1))) {
        en += 1;
    }
    let resume = en;
    let p = before(b, st);
    if word(p) || p == b'.' || alnum(at(b, en)) || at(b, en) == b'_' {
        return resume;
    }
    // A trailing single ':' is punctuation ("address fe80::1: down").
    if at(b, en.wrapping_sub(1)) == b':' && before(b, en.wrapping_sub(1)) != b':' {
        en -= 1;
    }
    let Some(text) = s.get(st..en) else {
        return resume;
    };
    let colons = text.bytes().filter(|&x| x == b':').count();
    // "1::" and similar: one group not led by "::" is too weak a signal.
    let groups = text.split(':').filter(|g| !g.is_empty()).count();
    let shaped = groups >= 2 || text.starts_with("::");
    if colons >= 2 && shaped && text.bytes().any(digit) && text.parse::<Ipv6Addr>().is_ok() {
        sink.push(Builtin::Ipv6, st, en);
    }
    resume
}
