//! Content inspection alone, without a decision: `Engine.scan` / `Engine.redact` with the
//! policy's `content:` section, and `Scanner` with detectors chosen in Python.

use pyo3::prelude::*;
use serde_json::Value;
use warden::content::{
    Action, ContentPolicy, ContentSpec, CustomDetectorSpec, InjectionAction, Part, ScanRequest,
};

use crate::convert;
use crate::decision::Finding;
use crate::errors::{PolicyError, request_error};

/// The findings of `text` scanned as a prompt is: every detector, and the injection
/// heuristics when they are on. Paths are `/text`.
pub(crate) fn scan_text(policy: &ContentPolicy, text: &str) -> Vec<Finding> {
    let scan = ScanRequest {
        input: vec![("/text", Part::Text(text))],
        injection: vec![("/text", Part::Text(text))],
        ..ScanRequest::default()
    };
    policy
        .scan(&scan)
        .findings
        .into_iter()
        .map(finding)
        .collect()
}

/// `value` with what the policy redacts in a tool call's arguments replaced by
/// `[REDACTED:<detector>]`; unchanged when nothing is found or the policy does not redact input.
pub(crate) fn redact_value(policy: &ContentPolicy, value: Value) -> Value {
    let outcome = match &value {
        Value::String(text) => policy.scan(&ScanRequest {
            input: vec![("", Part::Text(text))],
            redact_target: Some(""),
            ..ScanRequest::default()
        }),
        other => policy.scan(&ScanRequest {
            input: vec![("", Part::Value(other))],
            redact_target: Some(""),
            ..ScanRequest::default()
        }),
    };
    outcome.redacted.unwrap_or(value)
}

/// A Python value as JSON, or a `RequestError` naming where it is not JSON.
pub(crate) fn json_arg(value: &Bound<'_, PyAny>, name: &str) -> PyResult<Value> {
    let mut path = name.to_owned();
    convert::to_json(value, &mut path).map_err(|e| {
        let field = e.field.unwrap_or_else(|| name.to_owned());
        request_error(
            value.py(),
            Some(&field),
            &format!("field `{field}`: {}", e.message),
        )
    })
}

fn finding(f: warden::content::Finding) -> Finding {
    Finding::new(warden::Finding {
        detector: f.detector,
        path: f.path,
        start: f.start,
        end: f.end,
        key: f.key,
        family: f.family,
        score: f.score,
        families: f.families,
    })
}

/// Content detectors on their own: `scan(text)` lists what they find, `redact(value)` replaces
/// it. `detectors` are built-in ids (default: all of `KNOWN_DETECTORS`), `custom` maps an id to
/// a regex; `injection` also runs the prompt-injection heuristics in `scan`.
#[pyclass(module = "warden", frozen)]
pub struct Scanner {
    policy: ContentPolicy,
}

#[pymethods]
impl Scanner {
    #[new]
    #[pyo3(signature = (detectors=None, custom=None, injection=true, injection_threshold=None))]
    fn new(
        detectors: Option<Vec<String>>,
        custom: Option<std::collections::BTreeMap<String, String>>,
        injection: bool,
        injection_threshold: Option<f64>,
    ) -> PyResult<Self> {
        let spec = ContentSpec {
            detectors: detectors.unwrap_or_else(|| {
                warden::content::KNOWN_DETECTORS
                    .iter()
                    .map(|d| (*d).to_owned())
                    .collect()
            }),
            custom: custom
                .unwrap_or_default()
                .into_iter()
                .map(|(id, pattern)| CustomDetectorSpec { id, pattern })
                .collect(),
            input: Some(Action::Redact),
            output: Some(Action::Redact),
            injection: injection.then_some(InjectionAction::Allow),
            injection_threshold,
        };
        let policy = ContentPolicy::compile(&spec)
            .map_err(|e| PolicyError::new_err(format!("content: {e}")))?;
        Ok(Self { policy })
    }

    /// The findings in `text` (positions and detector ids, never the text found).
    fn scan(&self, py: Python<'_>, text: &str) -> Vec<Finding> {
        py.detach(|| scan_text(&self.policy, text))
    }

    /// `value` (a str, or a JSON value: dict, list, ...) with every finding replaced by
    /// `[REDACTED:<detector>]`, keeping its shape.
    fn redact<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = value.py();
        let json = json_arg(value, "value")?;
        let redacted = py.detach(|| redact_value(&self.policy, json));
        convert::to_python(py, &redacted)
    }

    fn __repr__(&self) -> String {
        format!("Scanner(detectors={:?})", self.policy.detector_ids())
    }
}
