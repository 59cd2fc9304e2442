//! The decision: the output of one evaluation (spec section 7).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Allow, deny, or pending a person's approval.
///
/// Only [`Verdict::Allow`] lets a call through: every front door that answers yes or no (OPA,
/// AuthZEN, gRPC's `allowed`, a token) treats `Pending` as no, so it fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The call may go through.
    Allow,
    /// The call must not go through.
    Deny,
    /// The call must not go through yet: an `ask` rule matched and no approval covers it; the
    /// decision's `approval` names the approval a person may grant.
    Pending,
}

impl Verdict {
    /// `allow`, `deny` or `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Pending => "pending",
        }
    }

    /// True only for [`Verdict::Allow`]: the one verdict that lets a call through.
    pub fn is_allow(self) -> bool {
        self == Verdict::Allow
    }
}

/// The approval a decision is about: the one it asks for (`pending`) or the one whose answer it
/// carries (an approved call's `allow`, a denied or expired approval's `deny`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    /// The approval's id (for `GET /v1/approvals/{id}` and `warden approvals`).
    pub id: String,
    /// Its status after this decision (`pending`, `consumed`, `denied`, `expired`).
    pub status: crate::state::ApprovalStatus,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// Content found in the request: where, never what (the matched text is never carried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Detector id (`email`, `credit_card`, `injection`, a custom id, ...).
    pub detector: String,
    /// JSON Pointer into the request (`/args/to`, `/text`, `/http/query/q`).
    pub path: String,
    /// Start offset in chars (Unicode scalar values).
    pub start: usize,
    /// End offset in chars, exclusive.
    pub end: usize,
    /// The finding is in the object key of the member `path` names (offsets into the key), not
    /// in its value. A key holding a finding appears in every path in its redacted form.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    /// For injection findings: the heuristic family that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// For injection findings: the string's injection score, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// For injection findings: every family that fired in the string.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
}

/// How an allowed LLM request is changed before it goes on (rules' `rewrite`): the model it is
/// sent to and the most tokens its answer may have. The LLM proxy applies it; a caller of the
/// decision API applies it itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rewrite {
    /// The model to use instead of the requested one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Arc<str>>,
    /// The cap on the answer's tokens (`max_tokens`); a lower value the client asked for stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// Which policy made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// The policy's `name`.
    pub name: Arc<str>,
    /// The policy's `version`, null when omitted.
    pub version: Option<Arc<str>>,
    /// `sha256:` + hex SHA-256 of the policy's RFC 8785 canonical JSON form.
    pub digest: Arc<str>,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The enforced decision (always `allow` in `dry_run`).
    #[serde(rename = "decision")]
    pub verdict: Verdict,
    /// The first matching deny rule (or `content:<id>`) when the computed decision is deny.
    pub rule: Option<Arc<str>>,
    /// Reasons of all matching deny rules that have one, in document order.
    pub reasons: Vec<Arc<str>>,
    /// Ids of matching warn rules (and `content:<id>` for warn-action findings); empty on deny.
    pub warnings: Vec<Arc<str>>,
    /// The session's sorted taint set after the decision.
    pub taints: Vec<Arc<str>>,
    /// Content findings, in request order.
    pub findings: Vec<Finding>,
    /// The rewritten `args` / `result` / `text` when something was redacted; for `http`, the
    /// rewritten `http` object (method, path, headers, query, body).
    pub redacted: Option<Value>,
    /// In `dry_run`: the decision that would have been enforced.
    pub dry_run_decision: Option<Verdict>,
    /// The policy that decided.
    pub policy: PolicyInfo,
    /// A signed token (EdDSA JWT bound to the tool and the hash of its arguments) for allowed
    /// tool calls, when the front door has a signing key. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The approval this decision asks for or used (`effect: ask` rules). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    /// Ids of the matching `audit` rules, in document order (they change nothing else).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audited: Vec<Arc<str>>,
    /// The change the allowing rules make to an LLM request (`rewrite`); only on an enforced
    /// allow of a `prompt`. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

impl Decision {
    /// The computed decision: `dry_run_decision` when set, else the enforced one.
    pub fn computed(&self) -> Verdict {
        self.dry_run_decision.unwrap_or(self.verdict)
    }
}
