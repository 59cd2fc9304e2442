//! One audit entry: what a decision leaves behind, hashed and chained.

use serde::{Deserialize, Serialize};
use warden_core::{Decision, Request};
use warden_proof::{KeyProvider, args_hash, canonicalize_serialize, sha256_prefixed};

use crate::AuditError;

/// The `prev` of the very first entry of a log: `sha256:` and 64 zeros.
pub const GENESIS_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Where a chain is expected to start: the genesis by default, or a known entry after old
/// files were deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The sequence number of the entry before the first one given.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
}

impl Default for Anchor {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| is_lower_hex(h, 64))
}

/// Exactly `len` lowercase hex digits.
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the caller records about one decision. Arguments and text are never recorded, only
/// `args_hash`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the decision was made, unix milliseconds (rendered as RFC 3339 UTC).
    pub time_ms: u64,
    /// The tenant (API key's customer), if any.
    pub tenant: Option<String>,
    /// The principal.
    pub principal: Option<String>,
    /// The session.
    pub session: Option<String>,
    /// Request kind (`tool_call`, `prompt`, ...).
    pub kind: String,
    /// The tool, for tool calls and results.
    pub tool: Option<String>,
    /// `sha256:` + hex SHA-256 of the RFC 8785 form of `args`, when the request had arguments.
    /// A log with an audit key writes it keyed ([`keyed_args_hash`]).
    pub args_hash: Option<String>,
    /// `allow` or `deny` (the enforced decision).
    pub decision: String,
    /// The deciding rule, if any.
    pub rule: Option<String>,
    /// Detector ids of content findings (never the matched text).
    pub findings: Vec<String>,
    /// The policy digest.
    pub policy: String,
    /// Decision latency in microseconds.
    pub latency_us: u64,
    /// The model a prompt, answer or proposed tool call is for (the request's
    /// `context.model`, as the LLM front door sets it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The `audit` rules that matched (a Warden extension: they record a match and change
    /// nothing else).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audited: Vec<String>,
    /// An answer's prompt tokens, as the upstream reported them (the request's
    /// `context.input_tokens`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// An answer's tokens, as the upstream reported them (`context.output_tokens`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// An answer's cost in micro-dollars (`context.cost_usd`, rounded up), if priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
}

impl AuditRecord {
    /// The record of `decision` for `request`, with `args` hashed. Arguments that cannot be
    /// canonicalised are an error (the caller fails closed), never a record without its hash.
    pub fn from_decision(
        tenant: Option<&str>,
        request: &Request,
        decision: &Decision,
        time_ms: u64,
        latency_us: u64,
    ) -> Result<Self, AuditError> {
        let args_hash = match &request.args {
            Some(args) => Some(args_hash(args).map_err(|e| AuditError::Encode(e.to_string()))?),
            None => None,
        };
        let context = |key: &str| request.context.as_ref().and_then(|c| c.get(key));
        Ok(Self {
            time_ms,
            tenant: tenant.map(str::to_owned),
            principal: request.principal.clone(),
            session: request.session.clone(),
            kind: request.kind.as_str().to_owned(),
            tool: request.tool.clone(),
            args_hash,
            decision: decision.verdict.as_str().to_owned(),
            rule: decision.rule.as_deref().map(str::to_owned),
            findings: decision
                .findings
                .iter()
                .map(|f| f.detector.clone())
                .collect(),
            policy: decision.policy.digest.to_string(),
            latency_us,
            model: context("model")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            audited: decision.audited.iter().map(|r| r.to_string()).collect(),
            input_tokens: context("input_tokens").and_then(serde_json::Value::as_u64),
            output_tokens: context("output_tokens").and_then(serde_json::Value::as_u64),
            cost_micro_usd: context("cost_usd")
                .and_then(serde_json::Value::as_f64)
                .filter(|usd| usd.is_finite() && *usd >= 0.0)
                .map(|usd| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let micro = (usd * 1_000_000.0).ceil().min(9.0e15) as u64;
                    micro
                }),
        })
    }
}

/// Largest integer RFC 8785 writes exactly (2^53); above it a number is a double.
const MAX_EXACT_INT: u64 = 1 << 53;

/// The entry as written. Fields are declared in RFC 8785 order (UTF-16 code-unit order of the
/// ASCII keys), so `serde_json` writes the canonical form directly: it escapes strings exactly as
/// RFC 8785 does (`\"`, `\\`, `\b \t \n \f \r`, other controls as lowercase `\u00xx`, nothing
/// else) and writes integers up to 2^53 as RFC 8785 does. Larger integers take the general
/// canonicaliser. `tests/props.rs` checks every line against `canonicalize`.
#[derive(Serialize)]
pub(crate) struct Sealed<'a, F: Serialize + ?Sized, A: Serialize> {
    pub(crate) args_hash: Option<&'a str>,
    /// Absent when no audit rule matched (as the optional members below: entries written
    /// before they existed verify).
    #[serde(skip_serializing_if = "no_items")]
    pub(crate) audited: &'a [A],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_micro_usd: Option<u64>,
    pub(crate) decision: &'a str,
    pub(crate) findings: &'a F,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input_tokens: Option<u64>,
    pub(crate) kind: &'a str,
    pub(crate) latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<&'a str>,
    /// Absent when the decision names no model, so entries written before it existed verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_tokens: Option<u64>,
    pub(crate) policy: &'a str,
    pub(crate) prev: &'a str,
    pub(crate) principal: Option<&'a str>,
    pub(crate) rule: Option<&'a str>,
    pub(crate) seq: u64,
    pub(crate) session: Option<&'a str>,
    pub(crate) tenant: Option<&'a str>,
    pub(crate) time: &'a str,
    pub(crate) tool: Option<&'a str>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn no_items<A>(list: &&[A]) -> bool {
    list.is_empty()
}

impl<F: Serialize + ?Sized, A: Serialize> Sealed<'_, F, A> {
    pub(crate) fn canonical(&self) -> Result<Vec<u8>, AuditError> {
        let exact = |n: Option<u64>| n.is_none_or(|n| n <= MAX_EXACT_INT);
        if self.seq <= MAX_EXACT_INT
            && self.latency_us <= MAX_EXACT_INT
            && exact(self.input_tokens)
            && exact(self.output_tokens)
            && exact(self.cost_micro_usd)
        {
            let mut out = Vec::with_capacity(640);
            serde_json::to_writer(&mut out, self).map_err(|e| AuditError::Encode(e.to_string()))?;
            Ok(out)
        } else {
            canonicalize_serialize(self).map_err(|e| AuditError::Encode(e.to_string()))
        }
    }
}

/// Builds the JSON line for `record` as entry `seq` after `prev`; returns the line (with a final
/// newline) and the entry's hash.
pub(crate) fn seal(
    record: &AuditRecord,
    seq: u64,
    prev: &str,
    mac: Option<&dyn KeyProvider>,
) -> Result<(Vec<u8>, String), AuditError> {
    let time = rfc3339_ms(record.time_ms);
    // With a key, the argument hash is keyed: a plain hash of low-entropy arguments (a PIN) is
    // reversed by trying every value.
    let keyed = match (record.args_hash.as_deref(), mac) {
        (Some(plain), Some(k)) => Some(keyed_args_hash(k, plain)?),
        _ => None,
    };
    let mut entry = Sealed {
        args_hash: keyed.as_deref().or(record.args_hash.as_deref()),
        audited: &record.audited,
        cost_micro_usd: record.cost_micro_usd,
        decision: &record.decision,
        findings: &record.findings,
        hash: None,
        input_tokens: record.input_tokens,
        kind: &record.kind,
        // Clamped so it stays an exact integer in RFC 8785 (2^53 µs is 285 years).
        latency_us: record.latency_us.min(MAX_EXACT_INT),
        mac: None,
        model: record.model.as_deref(),
        output_tokens: record.output_tokens,
        policy: &record.policy,
        prev,
        principal: record.principal.as_deref(),
        rule: record.rule.as_deref(),
        seq,
        session: record.session.as_deref(),
        tenant: record.tenant.as_deref(),
        time: &time,
        tool: record.tool.as_deref(),
    };
    // The MAC covers the entry without `mac` and `hash`; the hash covers the entry with its MAC
    // (everything but `hash`), so even a MAC altered without the key breaks the chain.
    let tag = match mac {
        Some(k) => {
            let body = entry.canonical()?;
            Some(hex::encode(
                k.mac(&body).map_err(|e| AuditError::Key(e.to_string()))?,
            ))
        }
        None => None,
    };
    entry.mac = tag.as_deref();
    let hash = sha256_prefixed(&entry.canonical()?);
    entry.hash = Some(&hash);
    let mut line = entry.canonical()?;
    line.push(b'\n');
    Ok((line, hash))
}

/// Prefix of the `args_hash` of an entry written with an audit key.
pub const KEYED_ARGS_HASH_PREFIX: &str = "hmac-sha256:";

/// Prefix of the bytes a keyed argument hash covers, so that it cannot be taken for an entry's
/// or a checkpoint's MAC.
const ARGS_HASH_CONTEXT: &[u8] = b"warden audit args_hash v1\n";

/// The `args_hash` an entry records when the log has an audit key: `hmac-sha256:` + lowercase
/// hex HMAC-SHA256, with the audit key, of a context string followed by the plain argument hash
/// (`sha256:` + hex, as a decision token's `args_hash` claim carries it). Whoever holds the key
/// can link a token to its entry (`keyed_args_hash(key, claims.args_hash) == entry.args_hash`);
/// nobody else can test guesses of the arguments against the log.
pub fn keyed_args_hash(key: &dyn KeyProvider, plain: &str) -> Result<String, AuditError> {
    let mut msg = ARGS_HASH_CONTEXT.to_vec();
    msg.extend_from_slice(plain.as_bytes());
    let tag = key.mac(&msg).map_err(|e| AuditError::Key(e.to_string()))?;
    Ok(format!("{KEYED_ARGS_HASH_PREFIX}{}", hex::encode(tag)))
}

/// `2026-11-24T06:29:12.123Z` from unix milliseconds (UTC). Outside chrono's range (beyond the
/// year 262,143) the Unix epoch, which no clock of this era reads.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_501_752_123), "2026-11-24T06:29:12.123Z");
    }
}
