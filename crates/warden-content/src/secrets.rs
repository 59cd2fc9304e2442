//! Secrets recognised by their context rather than a fixed token prefix alone: Azure storage
//! account keys and SAS signatures in connection strings, Google Cloud service-account keys
//! (JSON text or a JSON object), database URLs with a password, and `generic_secret` (a
//! random-looking value after a secret-like name). The anchors that lead here are in `tokens`;
//! every check below runs only at such an anchor, or on an object value whose key names one.

use regex::Regex;

use crate::builtin::{Builtin, Sink};
use crate::bytes::{at, before};
use crate::context::words;

/// Compiled patterns of this module (part of `tokens::TokenRegexes`).
pub(crate) struct SecretRegexes {
    azure: Regex,
    azure_sas: Regex,
    gcp_field: Regex,
    gcp_type: Regex,
    generic: Regex,
    database_url: Regex,
}

impl SecretRegexes {
    /// Compile the patterns.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        Ok(SecretRegexes {
            // A storage account key is 64 random bytes: 86 base64 characters and `==`.
            azure: Regex::new(
                r#"^(?:(?i-u:accountkey)|AZURE_STORAGE_(?:ACCOUNT_|ACCESS_)?KEY)["']?[ \t]*[=:][ \t]*["']?(?P<value>[A-Za-z0-9+/]{86}==)"#,
            )?,
            azure_sas: Regex::new(r"^SharedAccessSignature[ \t]*=[ \t]*")?,
            // `private_key` / `private_key_id` as a JSON member name (quotes possibly escaped,
            // when the JSON is itself a string inside JSON), up to the value's opening quote.
            gcp_field: Regex::new(r#"^private_key(?P<id>_id)?\\?"\s*:\s*\\?""#)?,
            gcp_type: Regex::new(r#"\\?"type\\?"\s*:\s*\\?"service_account\\?""#)?,
            // From the secret word: the rest of the name, an optional closing quote, the
            // separator (`=`, `:`, `:=`, `=>`) and an optional opening quote. Bounded, like
            // every run below, so a long run of name characters is not read again at each
            // anchor inside it.
            generic: Regex::new(
                r#"^(?i-u:password|passwd|passphrase|secret|token|api[_\-]?key)[A-Za-z0-9_.\-]{0,64}(?:["'])?[ \t]*(?:=>|:=|=|:)[ \t]*(?P<quote>["']?)"#,
            )?,
            // The password is everything between the user's `:` and the last `@` of the
            // authority (an unencoded `@` in a password must not end it early).
            database_url: Regex::new(
                r"^(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|rediss?|amqps?)://[^\s:@/?#]{0,128}:(?P<pw>[^\s/?#]{0,256})@[A-Za-z0-9\[]",
            )?,
        })
    }
}

/// An Azure storage account key after `AccountKey=` (any case, as in a connection string) or an
/// `AZURE_STORAGE_KEY`-style variable, at anchor `p`; or a SAS token after
/// `SharedAccessSignature=`. Only the value is the finding, so redaction keeps the field name.
pub(crate) fn azure(s: &str, p: usize, re: &SecretRegexes, sink: &mut Sink<'_>) {
    let Some(rest) = s.get(p..) else {
        return;
    };
    if let Some(v) = re.azure.captures(rest).and_then(|c| c.name("value")) {
        let b = s.as_bytes();
        let end = p + v.end();
        // The last character before `==` carries 2 bits of the 64th byte and 4 zero bits:
        // anything else is not the encoding of 64 bytes.
        let last = at(b, end - 3);
        let next = at(b, end);
        if matches!(last, b'A' | b'Q' | b'g' | b'w')
            && !(next.is_ascii_alphanumeric() || matches!(next, b'+' | b'/' | b'='))
        {
            sink.push(Builtin::AzureStorageKey, p + v.start(), end);
        }
        return;
    }
    if let Some(m) = re.azure_sas.find(rest) {
        // The value runs to the `;` ending the connection string's field.
        let start = p + m.end();
        let b = s.as_bytes();
        let mut end = start;
        while end - start < 2048 && field_char(at(b, end)) {
            end += 1;
        }
        if s.get(start..end).is_some_and(|v| v.contains("sig=")) {
            sink.push(Builtin::AzureStorageKey, start, end);
        }
    }
}

/// A character of a connection-string field: not `;`, whitespace, a quote or the end.
pub(crate) fn field_char(c: u8) -> bool {
    !(matches!(c, 0 | b';' | b'"' | b'\'') || c.is_ascii_whitespace())
}

/// An Azure storage key as an object value: a key naming an account or storage key
/// (`AccountKey`, `account_key`, `azure_storage_key`, `storageAccountKey`) and a value (quotes
/// and whitespace aside) of the key's exact shape.
pub(crate) fn azure_pair(key: &str, value: &str) -> Option<(usize, usize)> {
    if key.len() > 64 {
        return None;
    }
    let w = words(key);
    let named = matches!(
        w.as_slice(),
        [.., a, k] if k == "key" && (a == "account" || a == "storage")
    ) || w.last().is_some_and(|x| x == "accountkey");
    if !named {
        return None;
    }
    let t = value.trim();
    let b = t.as_bytes();
    let ok = b.len() == 88
        && b.ends_with(b"==")
        && b.iter()
            .take(86)
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'))
        && matches!(at(b, 85), b'A' | b'Q' | b'g' | b'w');
    let start = value.len() - value.trim_start().len();
    ok.then_some((start, start + t.len()))
}

/// The `private_key` / `private_key_id` member at anchor `p` of a service-account key written
/// as JSON text. `sa` caches whether `s` declares `"type": "service_account"` (looked up once,
/// at the first anchor). The finding is the member's value: the whole PEM string of
/// `private_key` (with its escaped newlines, up to the closing quote, or to the end of the text
/// when it is cut), the 40 hex digits of `private_key_id`. Returns where the private key ends
/// (else `p`), so anchors inside it are skipped.
pub(crate) fn gcp(
    s: &str,
    p: usize,
    re: &SecretRegexes,
    sa: &mut Option<bool>,
    sink: &mut Sink<'_>,
) -> usize {
    let Some(c) = s.get(p..).and_then(|r| re.gcp_field.captures(r)) else {
        return p;
    };
    let b = s.as_bytes();
    // A member name: a quote (maybe escaped) before it, not `my_private_key`.
    if before(b, p) != b'"' {
        return p;
    }
    if !*sa.get_or_insert_with(|| re.gcp_type.is_match(s)) {
        return p;
    }
    let Some(m) = c.get(0) else {
        return p;
    };
    let start = p + m.end();
    if c.name("id").is_some() {
        let n = b.get(start..).map_or(0, |r| {
            r.iter().take_while(|c| c.is_ascii_hexdigit()).count()
        });
        if n == 40 && matches!(at(b, start + 40), b'"' | b'\\') {
            sink.push(Builtin::GcpServiceAccount, start, start + 40);
        }
        return p;
    }
    if !s.get(start..).is_some_and(|r| r.starts_with("-----BEGIN")) {
        return p;
    }
    // The PEM body holds no quote, so the first one closes the value (`\"` when escaped).
    let end = match memchr::memchr(b'"', b.get(start..).unwrap_or(&[])) {
        Some(off) if before(b, start + off) == b'\\' => start + off - 1,
        Some(off) => start + off,
        None => s.len(),
    };
    sink.push(Builtin::GcpServiceAccount, start, end);
    end
}

/// The span of a service-account secret in `value`, the string under `key` in an object whose
/// `type` is `service_account`: the whole value, when it holds a PEM block (`private_key`) or
/// is 40 hex digits (`private_key_id`).
pub(crate) fn gcp_pair(key: &str, value: &str) -> Option<(usize, usize)> {
    // The whole value, trailing newline included: it is all key material.
    let ok = match key {
        "private_key" => value.contains("-----BEGIN"),
        "private_key_id" => {
            let t = value.trim();
            t.len() == 40 && t.bytes().all(|c| c.is_ascii_hexdigit())
        }
        _ => false,
    };
    ok.then_some((0, value.len()))
}

/// Whether an object key may name a secret any key-read rule knows (`pass`, `secret`, `token`,
/// `key` in any case): one pass over its bytes, before the word split.
pub(crate) fn may_name_secret(key: &str) -> bool {
    let b = key.as_bytes();
    [&b"pass"[..], b"secret", b"token", b"key"]
        .iter()
        .any(|w| b.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
}

/// Last words of a secret-like name that make it name something else: `token_type`,
/// `secret_name`, `password_file`, `token_url`, `max_tokens`.
const NOT_SECRET_LAST: &[&str] = &[
    "id",
    "ids",
    "type",
    "url",
    "uri",
    "endpoint",
    "file",
    "path",
    "dir",
    "name",
    "count",
    "len",
    "length",
    "limit",
    "size",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "format",
    "policy",
    "version",
    "header",
    "prefix",
    "field",
    "param",
    "hint",
    "provider",
    "store",
    "method",
    "mode",
    "usage",
    "required",
    "enabled",
    "rotation",
    "pattern",
    "label",
    "description",
    "strength",
    "ref",
];

/// Words that make a secret-like name a pagination cursor or a count, not a credential.
const NOT_SECRET_ANY: &[&str] = &[
    "page",
    "cursor",
    "continuation",
    "next",
    "max",
    "min",
    "num",
    "total",
];

/// Whether `name` (an object key, or the name before `=`/`:` in text) names a credential: one
/// of its words is `password`, `passwd`, `passphrase`, `secret`, `token`, `apikey` or `api`
/// followed by `key`, and no word makes it name something else (see [`NOT_SECRET_LAST`],
/// [`NOT_SECRET_ANY`]).
pub(crate) fn secret_name(name: &str) -> bool {
    if name.len() > 64 {
        return false;
    }
    let w = words(name);
    let secret = w.iter().enumerate().any(|(i, x)| {
        matches!(
            x.as_str(),
            "password" | "passwd" | "passphrase" | "secret" | "token" | "apikey"
        ) || (x == "api" && w.get(i + 1).is_some_and(|k| k == "key"))
    });
    secret
        && !w
            .last()
            .is_some_and(|x| NOT_SECRET_LAST.contains(&x.as_str()))
        && !w.iter().any(|x| NOT_SECRET_ANY.contains(&x.as_str()))
}

/// Placeholder words, found anywhere in a value (case-insensitive).
const PLACEHOLDER_PARTS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "password",
    "passwd",
    "example",
    "placeholder",
    "your",
    "redacted",
    "dummy",
    "xxxx",
    "****",
    "....",
];

/// Placeholder values, matched whole (case-insensitive).
const PLACEHOLDER_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "null",
    "none",
    "nil",
    "empty",
    "undefined",
    "true",
    "false",
    "todo",
    "tbd",
    "test",
];

/// Whether `v` stands for a value rather than being one: a template or variable reference
/// (`${PASSWORD}`, `$DB_PASS`, `{{ .pw }}`, `<your-password>`, `[token]`, `%s`), a masked value
/// (`********`, `xxxx`), nothing visible, or a placeholder word (`changeme`, `null`, `your_password`).
pub(crate) fn placeholder(v: &str) -> bool {
    let b = v.as_bytes();
    let Some(&first) = b.first() else {
        return true;
    };
    // Only invisible or space-like characters: an empty value in disguise.
    if !v
        .chars()
        .any(|c| c.is_alphanumeric() || c.is_ascii_punctuation())
    {
        return true;
    }
    if matches!(first, b'$' | b'<' | b'{' | b'[' | b'%' | b'(')
        || matches!(b.last(), Some(b'>' | b'}' | b']'))
        || b.iter().all(|&c| c == first)
    {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    PLACEHOLDER_WORDS.contains(&lower.as_str())
        || PLACEHOLDER_PARTS.iter().any(|p| lower.contains(p))
}

/// Shannon entropy of `b` in bits per byte.
fn entropy(b: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in b {
        if let Some(n) = counts.get_mut(usize::from(c)) {
            *n += 1;
        }
    }
    let n = f64::from(u32::try_from(b.len()).unwrap_or(u32::MAX));
    counts
        .iter()
        .filter(|&&k| k > 0)
        .map(|&k| {
            let q = f64::from(k) / n;
            -q * q.log2()
        })
        .sum()
}

/// The longest value [`secret_value`] takes: the value scan stops one byte after it.
const MAX_VALUE: usize = 256;

/// Whether `v` looks like a secret value: 8 to 256 bytes; not a placeholder, a path or a URL;
/// letters with digits, or upper and lower case letters with a symbol (ordinary words,
/// `snake_case` and `kebab-case` names have neither); and at least 3 bits of entropy per byte
/// (8 distinct characters in 8), which rejects `aaaa1111`-style fillers.
pub(crate) fn secret_value(v: &str) -> bool {
    let b = v.as_bytes();
    if !(8..=MAX_VALUE).contains(&b.len())
        || placeholder(v)
        || matches!(b.first(), Some(b'/' | b'.' | b'~'))
        || v.contains("://")
    {
        return false;
    }
    let digit = b.iter().any(u8::is_ascii_digit);
    let lower = b.iter().any(u8::is_ascii_lowercase);
    let upper = b.iter().any(u8::is_ascii_uppercase);
    let symbol = b
        .iter()
        .any(|c| c.is_ascii_punctuation() && !matches!(c, b'-' | b'_' | b'.'));
    ((digit && (lower || upper)) || (lower && upper && symbol)) && entropy(b) >= 3.0
}

/// A secret after a credential-like name at anchor `p` (the secret word: `password`, `secret`,
/// `token`, `api_key`...), in `name=value`, `name: value`, `"name": "value"`, `name => value`
/// and URL query (`?api_key=...&`) form. The whole name (the word with what is glued to it)
/// must pass [`secret_name`] and the value [`secret_value`]. Only the value is the finding.
pub(crate) fn generic(s: &str, p: usize, re: &SecretRegexes, sink: &mut Sink<'_>) {
    let b = s.as_bytes();
    let Some(c) = s.get(p..).and_then(|r| re.generic.captures(r)) else {
        return;
    };
    let Some(m) = c.get(0) else {
        return;
    };
    let name_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
    let mut a = p;
    while a > 0 && p - a < 64 && name_char(at(b, a - 1)) {
        a -= 1;
    }
    let mut z = p;
    while z - p < 128 && name_char(at(b, z)) {
        z += 1;
    }
    if !s.get(a..z).is_some_and(secret_name) {
        return;
    }
    let start = p + m.end();
    let quote = c
        .name("quote")
        .filter(|q| !q.as_str().is_empty())
        .map_or(0, |q| at(b, p + q.start()));
    let mut end = start;
    if quote != 0 {
        while end - start <= MAX_VALUE
            && !matches!(at(b, end), 0 | b'\n' | b'\r')
            && at(b, end) != quote
        {
            end += 1;
        }
    } else {
        while end - start <= MAX_VALUE
            && !matches!(
                at(b, end),
                0 | b' '
                    | b'\t'
                    | b'\n'
                    | b'\r'
                    | b'"'
                    | b'\''
                    | b'`'
                    | b','
                    | b';'
                    | b'&'
                    | b'<'
                    | b'>'
            )
        {
            end += 1;
        }
        // Punctuation closing the sentence or the structure around an unquoted value.
        while end > start && matches!(at(b, end - 1), b'.' | b')' | b']' | b'}') {
            end -= 1;
        }
    }
    if s.get(start..end).is_some_and(secret_value) {
        sink.push(Builtin::GenericSecret, start, end);
    }
}

/// The span of a generic secret in `value`, the string under the object key `key`: the key
/// names a credential ([`secret_name`]) and the whole value (whitespace aside) looks like one
/// ([`secret_value`]).
pub(crate) fn generic_pair(key: &str, value: &str) -> Option<(usize, usize)> {
    if !secret_name(key) {
        return None;
    }
    let t = value.trim();
    let start = value.len() - value.trim_start().len();
    secret_value(t).then_some((start, start + t.len()))
}

/// The schemes [`database_url`] knows, each with the `://` after it in the pattern: the anchor
/// is the `://`, and the scheme ending there is where the URL is read from.
pub(crate) const DATABASE_SCHEMES: &[&str] = &[
    "postgresql",
    "postgres",
    "mysql",
    "mongodb+srv",
    "mongodb",
    "rediss",
    "redis",
    "amqps",
    "amqp",
];

/// The password of a database or broker URL at anchor `p` (the scheme: `postgres`,
/// `postgresql`, `mysql`, `mongodb`, `mongodb+srv`, `redis`, `rediss`, `amqp`, `amqps`). Only
/// the password is the finding, so redaction keeps the user, host and database; none without a
/// password or with a placeholder one (`${DB_PASSWORD}`, `<password>`, `changeme`, `****`).
pub(crate) fn database_url(s: &str, p: usize, re: &SecretRegexes, sink: &mut Sink<'_>) {
    // `xpostgres://` is not a scheme, but `jdbc:postgresql://` is.
    if before(s.as_bytes(), p).is_ascii_alphanumeric() {
        return;
    }
    let Some(pw) = s
        .get(p..)
        .and_then(|r| re.database_url.captures(r))
        .and_then(|c| c.name("pw"))
    else {
        return;
    };
    if !placeholder(pw.as_str()) {
        sink.push(Builtin::DatabaseUrl, p + pw.start(), p + pw.end());
    }
}
