//! Content inspection in a decision (spec sections 5 and 9): which parts of a request are input,
//! output and injection surfaces, by kind. The scanning itself is `warden-content`'s.

use std::borrow::Cow;

use warden_content::{ContentPolicy, Part, ScanOutcome, ScanRequest};

use crate::decision::Finding;
use crate::request::{Kind, Request};

/// Escapes a JSON Pointer reference token (RFC 6901).
fn escape(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Scans the request's parts according to its kind.
pub fn scan(content: &ContentPolicy, request: &Request) -> ScanOutcome {
    // Pointers of http header values are built here and must outlive the scan request.
    let header_paths: Vec<String> = match (&request.kind, &request.http) {
        (Kind::Http, Some(http)) => http
            .headers
            .keys()
            .map(|name| format!("/http/headers/{}", escape(name)))
            .collect(),
        _ => Vec::new(),
    };
    let mut scan = ScanRequest::default();
    match request.kind {
        Kind::ToolCall => {
            if let Some(args) = &request.args {
                scan.input.push(("/args", Part::Value(args)));
                scan.redact_target = Some("/args");
            }
        }
        Kind::Prompt => {
            if let Some(text) = &request.text {
                scan.input.push(("/text", Part::Text(text)));
                scan.injection.push(("/text", Part::Text(text)));
                scan.redact_target = Some("/text");
            }
        }
        Kind::ToolResult => {
            if let Some(result) = &request.result {
                scan.output.push(("/result", Part::Value(result)));
                scan.injection.push(("/result", Part::Value(result)));
                scan.redact_target = Some("/result");
            }
        }
        Kind::Completion => {
            if let Some(text) = &request.text {
                scan.output.push(("/text", Part::Text(text)));
                scan.redact_target = Some("/text");
            }
        }
        Kind::Http => {
            if let Some(http) = &request.http {
                if let Some(body) = &http.body {
                    scan.input.push(("/http/body", Part::Text(body)));
                    scan.injection.push(("/http/body", Part::Text(body)));
                }
                for (path, value) in header_paths.iter().zip(http.headers.values()) {
                    scan.input.push((path.as_str(), Part::Text(value)));
                }
            }
        }
    }
    content.scan(&scan)
}

/// Converts `warden-content` findings to the decision's type.
pub fn findings(outcome: &mut ScanOutcome) -> Vec<Finding> {
    std::mem::take(&mut outcome.findings)
        .into_iter()
        .map(|f| Finding {
            detector: f.detector,
            path: f.path,
            start: f.start,
            end: f.end,
            family: f.family,
        })
        .collect()
}
