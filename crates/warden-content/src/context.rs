//! Values only their object key identifies: an SSN or a phone number written as bare digits (a
//! JSON number such as `{"ssn": 123456789}`, or a string of digits) under a key that names one.
//! Bare digit strings are ids, amounts and timestamps far more often, so without such a key
//! they are not findings. (The AWS secret key by its key is in `tokens`.)

use crate::builtin::{Builtin, Sink};
use crate::digits::ssn_valid;

/// What a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Ssn,
    Phone,
}

/// Words of a phone-number key (`phone`, `home_phone`, `mobileNumber`, `tel`, `fax`).
const PHONE_WORDS: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "mobile",
    "cellphone",
    "msisdn",
    "fax",
];

/// Words that may follow the word naming the value (`phone_number`, `ssn_no`).
const NUMBER_WORDS: &[&str] = &["number", "no", "num", "nr"];

/// The words of a key, lower case: split at non-alphanumerics and lower-to-upper case changes
/// (`homePhone_number` -> `home`, `phone`, `number`).
pub(crate) fn words(key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What `key` names, judged by its last word (or the word before a trailing `number`).
fn named(key: &str) -> Option<Named> {
    if key.len() > 64 {
        return None;
    }
    let w = words(key);
    let mut last = w.len().checked_sub(1)?;
    let mut word = w.get(last)?.as_str();
    let suffixed = NUMBER_WORDS.contains(&word) && last > 0;
    if suffixed {
        last -= 1;
        word = w.get(last)?.as_str();
    }
    let word = word.strip_suffix("number").unwrap_or(word);
    let before = last
        .checked_sub(1)
        .and_then(|i| w.get(i))
        .map(String::as_str);
    if word == "ssn" || word == "socialsecurity" || (word == "security" && before == Some("social"))
    {
        return Some(Named::Ssn);
    }
    if PHONE_WORDS.contains(&word) || word.ends_with("phone") || (suffixed && word == "cell") {
        return Some(Named::Phone);
    }
    None
}

/// An SSN or a phone number as bare digits in `value` (the text of a number when `number`) under
/// the object key `key`. The finding is the digits.
pub(crate) fn digits_by_key(key: &str, value: &str, number: bool, sink: &mut Sink<'_>) {
    if !sink.on(Builtin::UsSsn) && !sink.on(Builtin::Phone) {
        return;
    }
    let trimmed = value.trim_start();
    let start = value.len() - trimmed.len();
    let trimmed = trimmed.trim_end();
    let plus = !number && trimmed.starts_with('+');
    let digits = if plus {
        trimmed.get(1..).unwrap_or("")
    } else {
        trimmed
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return;
    }
    let n = digits.len();
    let end = start + trimmed.len();
    match named(key) {
        Some(Named::Ssn) if !plus => {
            // A number loses an SSN's leading zeros (`012-34-5678` is 12345678).
            let ok = if number { (7..=9).contains(&n) } else { n == 9 };
            if ok && let Ok(v) = digits.parse::<u32>() {
                let (area, group, serial) = (v / 1_000_000, v / 10_000 % 100, v % 10_000);
                if ssn_valid(area, group, serial) {
                    sink.push(Builtin::UsSsn, start, end);
                }
            }
        }
        Some(Named::Phone) if (7..=15).contains(&n) => sink.push(Builtin::Phone, start, end),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        for k in [
            "ssn",
            "SSN",
            "customer_ssn",
            "ssnNumber",
            "social_security_number",
            "SocialSecurityNumber",
            "socialSecurity",
        ] {
            assert_eq!(named(k), Some(Named::Ssn), "{k}");
        }
        for k in [
            "phone",
            "Phone",
            "phone_number",
            "phoneNumber",
            "homePhone",
            "mobile",
            "mobile_no",
            "tel",
            "fax",
            "cellphone",
            "cell_number",
            "telephoneNumber",
            "contact-phone",
        ] {
            assert_eq!(named(k), Some(Named::Phone), "{k}");
        }
        for k in [
            "hotel",
            "cell",
            "phone_count",
            "mobile_build",
            "phone_verified",
            "ssn_last4_hash",
            "count",
            "id",
            "security_level",
            "number",
            "",
        ] {
            assert_eq!(named(k), None, "{k}");
        }
    }
}
