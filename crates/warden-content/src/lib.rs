//! Content inspection for Warden: PII and secret detectors, redaction and prompt-injection
//! heuristics (policy format v1, sections 5 and 9).
//!
//! A [`ContentPolicy`] is compiled once per policy load from a [`ContentSpec`] and is immutable,
//! `Send` and `Sync`. [`ContentPolicy::scan`] takes the parts of one request (built by the core
//! from the request kind) and returns findings (positions only, never matched text), the deny
//! rule and warnings the actions imply, and the redacted value.
//!
//! ```
//! use warden_content::{Action, ContentPolicy, ContentSpec, Part, ScanRequest};
//! let spec = ContentSpec {
//!     detectors: vec!["email".into()],
//!     input: Some(Action::Redact),
//!     ..ContentSpec::default()
//! };
//! let policy = ContentPolicy::compile(&spec).unwrap();
//! let args = serde_json::json!({"to": "alice@example.com"});
//! let out = policy.scan(&ScanRequest {
//!     input: vec![("/args", Part::Value(&args))],
//!     redact_target: Some("/args"),
//!     ..ScanRequest::default()
//! });
//! assert_eq!(out.findings[0].path, "/args/to");
//! assert_eq!(out.redacted, Some(serde_json::json!({"to": "[REDACTED:email]"})));
//! ```

mod builtin;
mod bytes;
mod context;
mod digits;
mod injection;
mod json;
mod net;
mod scan;
mod secrets;
mod spec;
mod tokens;
mod view;

pub use injection::FAMILIES as INJECTION_FAMILIES;
pub use scan::{ContentPolicy, Finding, Part, ScanOutcome, ScanRequest};
pub use spec::{
    Action, CUSTOM_PATTERN_SIZE_LIMIT, ContentError, ContentSpec, CustomDetectorSpec,
    InjectionAction,
};

/// Ids of the built-in detectors, as accepted in `content.detectors`.
pub const KNOWN_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "credit_card",
    "us_ssn",
    "iban",
    "ipv4",
    "ipv6",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "slack_token",
    "openai_key",
    "anthropic_key",
    "google_api_key",
    "stripe_key",
    "jwt",
    "private_key",
    "slack_webhook",
    "npm_token",
    "pypi_token",
    "gitlab_token",
    "azure_storage_key",
    "gcp_service_account",
    "generic_secret",
    "database_url",
];

/// Injection score at or above which a string yields findings when the policy sets no
/// `threshold`: one strong phrase (0.8), or two medium signals together (e.g. "earlier
/// instructions are void" with "from now on"), reach it; one medium signal alone does not.
pub const DEFAULT_INJECTION_THRESHOLD: f64 = 0.5;

/// Detector id reported for prompt-injection findings (and in `content:injection`).
pub const INJECTION_DETECTOR: &str = "injection";
