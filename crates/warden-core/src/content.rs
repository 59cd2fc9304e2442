//! Content inspection in a decision (spec sections 5 and 9): which parts of a request are input,
//! output and injection surfaces, by kind. The scanning itself is `warden-content`'s.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use warden_content::{ContentPolicy, Part, ScanOutcome, ScanRequest};

use crate::decision::Finding;
use crate::request::{HttpRequest, Kind, Request};

/// Scans the request's parts according to its kind.
pub fn scan(content: &ContentPolicy, request: &Request) -> ScanOutcome {
    // The http request as one JSON value: its path, query, header names and values and body are
    // all input, and its rewritten form is what a redacting front door forwards.
    let http = match (&request.kind, &request.http) {
        (Kind::Http, Some(http)) => Some(http_value(http)),
        _ => None,
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
            if let (Some(value), Some(http)) = (&http, &request.http) {
                scan.input.push(("/http", Part::Value(value)));
                if let Some(body) = &http.body {
                    scan.injection.push(("/http/body", Part::Text(body)));
                }
                scan.redact_target = Some("/http");
            }
        }
    }
    content.scan(&scan)
}

/// The `http` member of a request as JSON, as the request writes it (absent and empty fields
/// left out, members in the same order).
fn http_value(http: &HttpRequest) -> Value {
    let mut m = Map::new();
    if let Some(method) = &http.method {
        m.insert("method".to_owned(), Value::String(method.clone()));
    }
    if let Some(path) = &http.path {
        m.insert("path".to_owned(), Value::String(path.clone()));
    }
    let strings = |map: &BTreeMap<String, String>| {
        Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    if !http.headers.is_empty() {
        m.insert("headers".to_owned(), strings(&http.headers));
    }
    if !http.query.is_empty() {
        m.insert("query".to_owned(), strings(&http.query));
    }
    if let Some(body) = &http.body {
        m.insert("body".to_owned(), Value::String(body.clone()));
    }
    Value::Object(m)
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
            key: f.key,
            family: f.family,
            score: f.score,
            families: f.families,
        })
        .collect()
}
