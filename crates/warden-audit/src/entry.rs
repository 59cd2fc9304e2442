//! One audit entry: what a decision leaves behind, hashed and chained.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warden_core::{Decision, Request};
use warden_proof::{KeyProvider, args_hash, canonicalize, sha256_prefixed};

use crate::AuditError;

/// The `prev` of the very first entry of a log: `sha256:` and 64 zeros.
pub const GENESIS_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

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
}

impl AuditRecord {
    /// The record of `decision` for `request`. `args` are hashed; when they cannot be (never for
    /// parsed JSON) the hash is left out rather than the record refused.
    pub fn from_decision(
        tenant: Option<&str>,
        request: &Request,
        decision: &Decision,
        time_ms: u64,
        latency_us: u64,
    ) -> Self {
        Self {
            time_ms,
            tenant: tenant.map(str::to_owned),
            principal: request.principal.clone(),
            session: request.session.clone(),
            kind: request.kind.as_str().to_owned(),
            tool: request.tool.clone(),
            args_hash: request.args.as_ref().and_then(|a| args_hash(a).ok()),
            decision: decision.verdict.as_str().to_owned(),
            rule: decision.rule.as_deref().map(str::to_owned),
            findings: decision
                .findings
                .iter()
                .map(|f| f.detector.clone())
                .collect(),
            policy: decision.policy.digest.to_string(),
            latency_us,
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
    let mut m = Map::new();
    m.insert("seq".into(), Value::from(seq));
    m.insert("time".into(), Value::from(rfc3339_ms(record.time_ms)));
    m.insert("tenant".into(), opt(&record.tenant));
    m.insert("principal".into(), opt(&record.principal));
    m.insert("session".into(), opt(&record.session));
    m.insert("kind".into(), Value::from(record.kind.as_str()));
    m.insert("tool".into(), opt(&record.tool));
    m.insert("args_hash".into(), opt(&record.args_hash));
    m.insert("decision".into(), Value::from(record.decision.as_str()));
    m.insert("rule".into(), opt(&record.rule));
    m.insert(
        "findings".into(),
        Value::Array(
            record
                .findings
                .iter()
                .map(|f| Value::from(f.as_str()))
                .collect(),
        ),
    );
    m.insert("policy".into(), Value::from(record.policy.as_str()));
    m.insert("latency_us".into(), Value::from(record.latency_us));
    m.insert("prev".into(), Value::from(prev));
    // The MAC covers the entry without `mac` and `hash`; the hash covers the entry with its MAC
    // (everything but `hash`), so even a MAC altered without the key breaks the chain.
    if let Some(k) = mac {
        let body = canonicalize(&Value::Object(m.clone()))
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        let tag = k.mac(&body).map_err(|e| AuditError::Key(e.to_string()))?;
        m.insert("mac".into(), Value::from(hex::encode(tag)));
    }
    let mut value = Value::Object(m);
    let hashed = canonicalize(&value).map_err(|e| AuditError::Encode(e.to_string()))?;
    let hash = sha256_prefixed(&hashed);
    if let Value::Object(m) = &mut value {
        m.insert("hash".into(), Value::from(hash.as_str()));
    }
    let mut line = canonicalize(&value).map_err(|e| AuditError::Encode(e.to_string()))?;
    line.push(b'\n');
    Ok((line, hash))
}

fn opt(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::Null, Value::from)
}

/// `2026-11-24T06:29:12.123Z` from unix milliseconds (proleptic Gregorian, UTC).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
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
