//! The policy-facing types: what the core parses from `content:` and the load-time error.

use serde::{Deserialize, Serialize};

/// What to do with detector findings of a direction (input or output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report findings only.
    Allow,
    /// Report findings and add `content:<id>` to the decision's warnings.
    Warn,
    /// Replace each finding with `[REDACTED:<id>]` in the redact target.
    Redact,
    /// Turn an allow decision into deny with rule `content:<id>`.
    Deny,
}

/// Action for prompt-injection heuristics (there is nothing to redact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionAction {
    /// Report findings only.
    Allow,
    /// Report findings and add `content:injection` to the warnings.
    Warn,
    /// Turn an allow decision into deny with rule `content:injection`.
    Deny,
}

/// A custom regex detector declared in the policy (`content.custom[]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct CustomDetectorSpec {
    /// Detector id reported in findings and rule names.
    pub id: String,
    /// Rust `regex` syntax; searched (not anchored) in every scanned string.
    pub pattern: String,
}

/// The policy's `content:` section, already parsed by the core.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ContentSpec {
    /// Built-in detector ids, in priority order (the first listed wins overlap ties).
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Custom regex detectors; they rank after the built-ins, in list order.
    #[serde(default)]
    pub custom: Vec<CustomDetectorSpec>,
    /// Action for findings in the input (tool_call args, prompt text, the http request).
    /// `None` means allow (findings are still reported).
    #[serde(default)]
    pub input: Option<Action>,
    /// Action for findings in the output (tool_result result, completion text).
    #[serde(default)]
    pub output: Option<Action>,
    /// Action for prompt-injection findings; `None` means the heuristics do not run.
    #[serde(default)]
    pub injection: Option<InjectionAction>,
    /// Minimum injection score (0 to 1) for a string to yield findings; `None` means
    /// [`crate::DEFAULT_INJECTION_THRESHOLD`]. Checked by [`crate::ContentPolicy::compile`].
    #[serde(default)]
    pub injection_threshold: Option<f64>,
}

/// Size limit for one compiled custom pattern (bytes of compiled program).
pub const CUSTOM_PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Load-time error for a `content:` section. Each variant names the offending item by its index
/// in the spec's list so the caller can attach a file, line and column.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ContentError {
    /// `detectors[index]` is not a built-in detector id.
    #[error("unknown detector `{id}`; known detectors: {known}", known = crate::KNOWN_DETECTORS.join(", "))]
    UnknownDetector {
        /// Index into `detectors`.
        index: usize,
        /// The id as written.
        id: String,
    },
    /// `detectors[index]` repeats an id listed earlier in `detectors`.
    #[error("detector `{id}` is listed more than once")]
    RepeatedDetector {
        /// Index into `detectors` of the repetition.
        index: usize,
        /// The repeated id.
        id: String,
    },
    /// `custom[index].pattern` does not compile or exceeds the size limit.
    #[error("custom detector pattern does not compile: {message}")]
    InvalidPattern {
        /// Index into `custom`.
        index: usize,
        /// The regex compiler's message.
        message: String,
    },
    /// `custom[index].id` equals a built-in id, `injection`, or another custom id.
    #[error("custom detector id `{id}` is already a built-in, reserved or custom detector id")]
    DuplicateDetector {
        /// Index into `custom`.
        index: usize,
        /// The duplicated id.
        id: String,
    },
    /// `custom[index].id` is empty or holds characters other than ASCII letters, digits, `_`, `-`, `.`.
    #[error("custom detector id `{id}` must be 1-64 ASCII letters, digits, `_`, `-` or `.`")]
    InvalidId {
        /// Index into `custom`.
        index: usize,
        /// The id as written.
        id: String,
    },
    /// `injection.threshold` is not a number from 0 to 1.
    #[error("`injection.threshold` must be a number from 0 to 1, got {value}")]
    InvalidInjectionThreshold {
        /// The value as given.
        value: String,
    },
    /// A built-in pattern failed to compile (a bug in this crate, never caused by the policy).
    #[error("internal error: built-in content patterns failed to compile: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}
