//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use warden_content::{
    Action, ContentPolicy, ContentSpec, CustomDetectorSpec, InjectionAction, Part, ScanOutcome,
    ScanRequest,
};

/// A policy with these built-ins and the given input action.
pub fn policy(detectors: &[&str], input: Option<Action>) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
        input,
        ..ContentSpec::default()
    })
    .unwrap()
}

/// A policy with custom detectors.
pub fn policy_custom(
    detectors: &[&str],
    custom: &[(&str, &str)],
    input: Option<Action>,
) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        detectors: detectors.iter().map(|s| (*s).to_owned()).collect(),
        custom: custom
            .iter()
            .map(|(id, p)| CustomDetectorSpec {
                id: (*id).to_owned(),
                pattern: (*p).to_owned(),
            })
            .collect(),
        input,
        ..ContentSpec::default()
    })
    .unwrap()
}

/// An injection-only policy.
pub fn injection_policy(action: InjectionAction) -> ContentPolicy {
    ContentPolicy::compile(&ContentSpec {
        injection: Some(action),
        ..ContentSpec::default()
    })
    .unwrap()
}

/// Scan tool_call args (input, redact target `/args`).
pub fn scan_args(p: &ContentPolicy, args: &Value) -> ScanOutcome {
    p.scan(&ScanRequest {
        input: vec![("/args", Part::Value(args))],
        redact_target: Some("/args"),
        ..ScanRequest::default()
    })
}

/// Scan a prompt text (input + injection, redact target `/text`).
pub fn scan_prompt(p: &ContentPolicy, text: &str) -> ScanOutcome {
    p.scan(&ScanRequest {
        input: vec![("/text", Part::Text(text))],
        injection: vec![("/text", Part::Text(text))],
        redact_target: Some("/text"),
        ..ScanRequest::default()
    })
}

/// Detector ids of the findings in one text scanned with `p` (no injection part).
pub fn ids(p: &ContentPolicy, text: &str) -> Vec<String> {
    let out = p.scan(&ScanRequest {
        input: vec![("/text", Part::Text(text))],
        ..ScanRequest::default()
    });
    out.findings.into_iter().map(|f| f.detector).collect()
}

/// `(detector, start, end)` of findings in one text.
pub fn spans(p: &ContentPolicy, text: &str) -> Vec<(String, usize, usize)> {
    let out = p.scan(&ScanRequest {
        input: vec![("/text", Part::Text(text))],
        ..ScanRequest::default()
    });
    out.findings
        .into_iter()
        .map(|f| (f.detector, f.start, f.end))
        .collect()
}
