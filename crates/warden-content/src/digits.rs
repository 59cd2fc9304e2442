//! Digit-driven detectors: `credit_card`, `us_ssn`, `phone`, `ipv4`, `iban`.
//!
//! The engine finds *clusters* (maximal runs of digits joined by at most two separator bytes
//! among ` -.()/`) in one pass and calls [`cluster`] once per cluster; each detector then only
//! looks inside clusters with enough digits, so ordinary prose numbers cost a few comparisons.

use regex::Regex;

use crate::builtin::{Builtin, Sink};
use crate::bytes::{alnum, at, before, count_digits, digit, word};

/// Separator bytes that may join digit groups inside a cluster.
#[inline]
fn sep(c: u8) -> bool {
    matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/')
}

/// End (exclusive) of the cluster starting at digit `i`.
pub(crate) fn cluster_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    loop {
        while digit(at(b, j)) {
            j += 1;
        }
        let mut k = j;
        let mut n = 0;
        while n < 2 && sep(at(b, k)) {
            k += 1;
            n += 1;
        }
        if n > 0 && digit(at(b, k)) {
            j = k;
        } else {
            return j;
        }
    }
}

/// Anchored phone number formats (all ASCII, applied at token starts).
pub(crate) struct PhoneRegexes {
    /// `+CC ...`: digits with single separators and parenthesised groups.
    intl: Regex,
    /// North American `(AAA) EEE-NNNN`, `AAA-EEE-NNNN`, `AAA.EEE.NNNN`, `AAA EEE NNNN`.
    nanp: Regex,
    /// National trunk-prefix formats: `0` + area code + 2-4 separated groups (UK, FR, DE, ...).
    trunk: Regex,
}

impl PhoneRegexes {
    /// Compile the phone patterns.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        Ok(PhoneRegexes {
            intl: Regex::new(r"^\+[1-9](?:[ .\-]?(?:[0-9]|\([0-9]{1,4}\)))*")?,
            nanp: Regex::new(
                r"^(?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[0-9]{3}[ .\-][0-9]{4}",
            )?,
            trunk: Regex::new(r"^0[1-9][0-9]{0,3}(?:[ .\-][0-9]{2,6}){1,4}")?,
        })
    }
}

/// Run the digit detectors on the cluster `cs..ce` (`cs` is a digit preceded by a non-digit).
pub(crate) fn cluster(s: &str, cs: usize, ce: usize, phone: &PhoneRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    if sink.on(Builtin::Iban) {
        iban(b, cs, sink);
    }
    let digits = count_digits(b, cs, ce);
    if digits < 4 {
        return;
    }
    if sink.on(Builtin::CreditCard) && digits >= 13 {
        cards(b, cs, ce, sink);
    }
    let want_ip = sink.on(Builtin::Ipv4) && count_dots(b, cs, ce) >= 3;
    let want_ssn = sink.on(Builtin::UsSsn) && digits >= 9;
    let want_phone = sink.on(Builtin::Phone) && digits >= 8;
    if !(want_ip || want_ssn || want_phone) {
        return;
    }
    let mut t = cs;
    while t < ce {
        if digit(at(b, t)) && !digit(before(b, t)) {
            if want_ip {
                ipv4(b, t, sink);
            }
            if want_ssn {
                ssn(b, t, sink);
            }
            if want_phone {
                phones(s, t, phone, sink);
            }
        }
        t += 1;
    }
}

fn count_dots(b: &[u8], start: usize, end: usize) -> usize {
    b.get(start..end)
        .map_or(0, |s| s.iter().filter(|&&c| c == b'.').count())
}

/// Luhn checksum over ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Maximal card runs `digit ([ -]? digit)*` inside the cluster, and the card a neighbouring
/// digit group may hide in one (see [`card_in_run`]).
// Not inlined: its buffer would make every call of `cluster` (every number in a text) pay for a
// large stack frame, while this runs only for clusters of 13+ digits.
#[inline(never)]
fn cards(b: &[u8], cs: usize, ce: usize, sink: &mut Sink<'_>) {
    /// Groups kept on the stack; a longer run spills into a `Vec`.
    const FIXED: usize = 32;
    let mut t = cs;
    // Digit groups of the current run: (start, end).
    let mut fixed = [(0usize, 0usize); FIXED];
    let mut spilled: Vec<(usize, usize)> = Vec::new();
    while t < ce {
        let c = at(b, t);
        let p = before(b, t);
        let continues =
            digit(p) || (matches!(p, b' ' | b'-') && digit(before(b, t.saturating_sub(1))));
        if !digit(c) || continues {
            t += 1;
            continue;
        }
        spilled.clear();
        let mut n = 0usize;
        let mut digits = 0usize;
        let mut j = t;
        loop {
            let g = j;
            while digit(at(b, j)) {
                j += 1;
            }
            digits += j - g;
            if let Some(slot) = fixed.get_mut(n) {
                *slot = (g, j);
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&fixed);
                }
                spilled.push((g, j));
            }
            n += 1;
            if matches!(at(b, j), b' ' | b'-') && digit(at(b, j + 1)) {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 13 {
            let groups = if n <= FIXED {
                fixed.get(..n).unwrap_or(&[])
            } else {
                &spilled
            };
            card_in_run(b, groups, sink);
        }
        t = j.max(t + 1);
    }
}

/// The card in one run of digit groups. The whole run is one when it has 13-19 digits, one
/// separator kind, no word character glued to it and a valid Luhn sum. Otherwise a shorter range
/// of whole groups is, when it has those properties and every group left out next to it visibly
/// belongs to something else: a group of another length (`4111 1111 1111 1111 12/27`), joined by
/// another separator, or joined onwards by another one (`123-45-6789 4111 1111 1111 1111`). So
/// `4111 1111 1111 1111 1111` stays a 20-digit number, not a card.
fn card_in_run(b: &[u8], groups: &[(usize, usize)], sink: &mut Sink<'_>) {
    let n = groups.len();
    let g = |k: usize| groups.get(k).copied().unwrap_or((0, 0));
    let len = |k: usize| {
        let (a, z) = g(k);
        z - a
    };
    // Separator after group `k`.
    let sep = |k: usize| at(b, g(k).1);
    let left_ok = |i: usize, kind: Option<u8>| {
        if i == 0 {
            return !word(before(b, g(0).0));
        }
        let sl = sep(i - 1);
        kind.is_some_and(|k| k != sl) || len(i - 1) != len(i) || (i >= 2 && sep(i - 2) != sl)
    };
    let right_ok = |j: usize, kind: Option<u8>| {
        if j == n {
            return !word(at(b, g(n - 1).1));
        }
        let sr = sep(j - 1);
        kind.is_some_and(|k| k != sr) || len(j) != len(j - 1) || (j + 1 < n && sep(j) != sr)
    };
    let luhn_of = |i: usize, j: usize| {
        let mut buf = [0u8; 19];
        let mut m = 0usize;
        for k in i..j {
            let (a, z) = g(k);
            for &c in b.get(a..z).unwrap_or(&[]) {
                if let Some(slot) = buf.get_mut(m) {
                    *slot = c;
                }
                m += 1;
            }
        }
        m <= 19 && luhn(buf.get(..m).unwrap_or(&[]))
    };
    let total: usize = (0..n).map(len).sum();
    let uniform = (1..n.saturating_sub(1)).all(|k| sep(k) == sep(0));
    if uniform
        && (13..=19).contains(&total)
        && left_ok(0, None)
        && right_ok(n, None)
        && luhn_of(0, n)
    {
        sink.push(Builtin::CreditCard, g(0).0, g(n - 1).1);
        return;
    }
    for i in 0..n {
        let mut digits = 0usize;
        let mut kind: Option<u8> = None;
        for j in i + 1..=n {
            digits += len(j - 1);
            if digits > 19 {
                break;
            }
            if j - i >= 2 {
                let k = sep(j - 2);
                if kind.is_some_and(|x| x != k) {
                    break;
                }
                kind = Some(k);
            }
            if digits >= 13
                && (i, j) != (0, n)
                && left_ok(i, kind)
                && right_ok(j, kind)
                && luhn_of(i, j)
            {
                sink.push(Builtin::CreditCard, g(i).0, g(j - 1).1);
            }
        }
    }
}

/// Left context shared by `us_ssn` and national phone formats: no word character before, and
/// not the continuation of a digit group (`1 234...`, `1-234...`).
fn clean_left(b: &[u8], t: usize) -> bool {
    let p = before(b, t);
    if word(p) || p == b'+' {
        return false;
    }
    !(matches!(p, b' ' | b'-' | b'.') && digit(before(b, t.saturating_sub(1))))
}

/// Right context: no word character after, and no further `-digit` / `.digit` group.
fn clean_right(b: &[u8], e: usize) -> bool {
    let x = at(b, e);
    !(word(x) || (matches!(x, b'-' | b'.') && digit(at(b, e + 1))))
}

fn num(b: &[u8], start: usize, len: usize) -> Option<u32> {
    let s = b.get(start..start + len)?;
    let mut v = 0u32;
    for &c in s {
        if !digit(c) {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// `AAA-GG-SSSS` or `AAA GG SSSS` (one separator kind), with the SSA exclusions. A digit group
/// joined by the same separator (or `-`, or `.` before) continues the number, so it is not an SSN;
/// a dashed SSN next to a space-separated group is (`123-45-6789 4111 1111 1111 1111`).
fn ssn(b: &[u8], t: usize, sink: &mut Sink<'_>) {
    let s1 = at(b, t + 3);
    if !matches!(s1, b'-' | b' ') || at(b, t + 6) != s1 {
        return;
    }
    let p = before(b, t);
    let joined = |x: u8| x == s1 || x == b'-';
    if word(p) || p == b'+' || ((joined(p) || p == b'.') && digit(before(b, t.saturating_sub(1)))) {
        return;
    }
    let (Some(area), Some(group), Some(serial)) =
        (num(b, t, 3), num(b, t + 4, 2), num(b, t + 7, 4))
    else {
        return;
    };
    let e = t + 11;
    let x = at(b, e);
    if word(x) || (joined(x) && digit(at(b, e + 1))) {
        return;
    }
    if ssn_valid(area, group, serial) {
        sink.push(Builtin::UsSsn, t, e);
    }
}

/// The SSA's rules: area not 000, 666 or 900-999, group not 00, serial not 0000.
pub(crate) fn ssn_valid(area: u32, group: u32, serial: u32) -> bool {
    !(area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
}

/// Dotted quad with octets 0-255 and no leading zeros.
fn ipv4(b: &[u8], t: usize, sink: &mut Sink<'_>) {
    let p = before(b, t);
    if word(p) || p == b'.' {
        return;
    }
    let mut j = t;
    for k in 0..4 {
        let start = j;
        let mut v = 0u32;
        while digit(at(b, j)) && j - start < 4 {
            v = v * 10 + u32::from(at(b, j) - b'0');
            j += 1;
        }
        let len = j - start;
        if len == 0 || len > 3 || v > 255 || (len > 1 && at(b, start) == b'0') {
            return;
        }
        if k < 3 {
            if at(b, j) != b'.' {
                return;
            }
            j += 1;
        }
    }
    let x = at(b, j);
    if word(x) || (x == b'.' && digit(at(b, j + 1))) {
        return;
    }
    sink.push(Builtin::Ipv4, t, j);
}

/// Phone numbers starting at token `t` (or at a `+` / `(` just before it).
fn phones(s: &str, t: usize, re: &PhoneRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    let p = before(b, t);
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |start: usize, end: usize, ok: bool| {
        if ok && clean_right(b, end) && best.is_none_or(|(bs, be)| end - start > be - bs) {
            best = Some((start, end));
        }
    };
    if p == b'+' && !alnum(before(b, t - 1)) {
        let start = t - 1;
        if let Some(m) = s.get(start..).and_then(|r| re.intl.find(r)) {
            let end = start + m.end();
            let n = count_digits(b, start, end);
            consider(start, end, (8..=15).contains(&n));
        }
    }
    if p == b'(' {
        let start = t - 1;
        if !alnum(before(b, start))
            && let Some(m) = s.get(start..).and_then(|r| re.nanp.find(r))
        {
            consider(start, start + m.end(), true);
        }
    } else if clean_left(b, t) {
        if let Some(m) = s.get(t..).and_then(|r| re.nanp.find(r)) {
            consider(t, t + m.end(), true);
        }
        if at(b, t) == b'0'
            && let Some(m) = s.get(t..).and_then(|r| re.trunk.find(r))
        {
            let end = t + m.end();
            let n = count_digits(b, t, end);
            consider(t, end, (10..=11).contains(&n));
        }
    }
    if let Some((start, end)) = best {
        sink.push(Builtin::Phone, start, end);
    }
}

/// IBAN lengths by country (SWIFT IBAN registry).
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    let n = match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" | b"SD" | b"FK" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" | b"MN" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"DJ" | b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HN" | b"HU" | b"LB" | b"NI" | b"PL"
        | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    };
    Some(n)
}

/// ISO 13616 mod-97 check over an uppercase IBAN.
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    let (head, tail) = iban.split_at(iban.len().min(4));
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// IBAN whose check digits start the cluster at `cs`: country code just before, the country's
/// exact length, compact or in groups of four separated by single spaces, mod-97.
fn iban(b: &[u8], cs: usize, sink: &mut Sink<'_>) {
    if cs < 2 {
        return;
    }
    let start = cs - 2;
    let (c1, c2) = (at(b, start), at(b, start + 1));
    if !c1.is_ascii_alphabetic() || !c2.is_ascii_alphabetic() || alnum(before(b, start)) {
        return;
    }
    if !digit(at(b, cs + 1)) {
        return;
    }
    let Some(len) = iban_len([c1.to_ascii_uppercase(), c2.to_ascii_uppercase()]) else {
        return;
    };
    let grouped = at(b, cs + 2) == b' ';
    let mut buf = [0u8; 34];
    let mut n = 0usize;
    let mut j = start;
    while n < len {
        if grouped && n > 0 && n.is_multiple_of(4) {
            if at(b, j) != b' ' {
                return;
            }
            j += 1;
        }
        let c = at(b, j);
        if !alnum(c) {
            return;
        }
        if let Some(slot) = buf.get_mut(n) {
            *slot = c.to_ascii_uppercase();
        }
        n += 1;
        j += 1;
    }
    if alnum(at(b, j)) {
        return;
    }
    if iban_mod97(buf.get(..n).unwrap_or(&[])) {
        sink.push(Builtin::Iban, start, j);
    }
}
