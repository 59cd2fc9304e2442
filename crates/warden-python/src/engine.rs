//! `warden.Engine`: a compiled policy and its in-memory sessions, deciding in-process.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::content::{json_arg, redact_value, scan_text};
use crate::convert;
use crate::decision::{Decision, Finding, PolicyInfo};
use crate::errors::{DecideError, from_load_error, from_request_error, request_error};

/// A compiled policy deciding requests in-process, with sessions in memory. Thread-safe:
/// share one engine across threads; a session's read-decide-update is atomic, and the GIL is
/// released while deciding.
#[pyclass(module = "warden", frozen)]
pub struct Engine {
    inner: warden::Engine,
}

fn parse_request(request: &Bound<'_, PyAny>) -> PyResult<warden::Request> {
    let py = request.py();
    // JSON text: the core's own parser (it also refuses repeated keys, as the daemon does).
    let bytes = if let Ok(s) = request.cast::<PyString>() {
        Some(s.to_cow()?.into_owned().into_bytes())
    } else if let Ok(b) = request.cast::<PyBytes>() {
        Some(b.as_bytes().to_vec())
    } else if let Ok(b) = request.cast::<PyByteArray>() {
        Some(b.to_vec())
    } else {
        None
    };
    if let Some(bytes) = bytes {
        return warden::Request::from_json(&bytes).map_err(|e| from_request_error(py, &e));
    }
    let value = convert::to_json(request, &mut String::new()).map_err(|e| match &e.field {
        Some(field) => request_error(py, Some(field), &format!("field `{field}`: {}", e.message)),
        None => request_error(py, None, &e.message),
    })?;
    warden::Request::from_value(value).map_err(|e| from_request_error(py, &e))
}

#[pymethods]
impl Engine {
    /// Loads and compiles a policy file (YAML or JSON); Rego module files it names are read
    /// relative to it. Raises `PolicyError` with the file, line, column and field.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let policy = py
            .detach(|| warden::load_policy_file(&path))
            .map_err(|e| from_load_error(py, &e))?;
        Ok(Self {
            inner: warden::Engine::new(policy),
        })
    }

    /// Compiles a policy from its text (YAML or JSON); `origin` names it in errors.
    #[staticmethod]
    #[pyo3(signature = (text, origin = "<string>"))]
    fn from_str(py: Python<'_>, text: &str, origin: &str) -> PyResult<Self> {
        let policy = py
            .detach(|| warden::load_policy_str(origin, text))
            .map_err(|e| from_load_error(py, &e))?;
        Ok(Self {
            inner: warden::Engine::new(policy),
        })
    }

    /// Decides one request: a dict (`{"tool": ..., "args": {...}, "session": ...}`), or its
    /// JSON text. Raises `RequestError` naming the field of a malformed request, and
    /// `DecideError` when no decision can be made (treat it as deny).
    fn decide(&self, request: &Bound<'_, PyAny>) -> PyResult<Decision> {
        let py = request.py();
        let request = parse_request(request)?;
        let decided = py.detach(|| self.inner.decide(&request));
        match decided {
            Ok(inner) => Ok(Decision { inner }),
            Err(e) => Err(DecideError::new_err(e.to_string())),
        }
    }

    /// Decides many requests in order (each as `decide` would, sessions included), with the
    /// GIL released once for all of them.
    fn decide_many(&self, requests: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Decision>> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let py = first.py();
        let parsed = requests
            .iter()
            .map(parse_request)
            .collect::<PyResult<Vec<_>>>()?;
        let decided = py.detach(|| {
            parsed
                .iter()
                .map(|r| self.inner.decide(r))
                .collect::<Result<Vec<_>, _>>()
        });
        match decided {
            Ok(all) => Ok(all.into_iter().map(|inner| Decision { inner }).collect()),
            Err(e) => Err(DecideError::new_err(e.to_string())),
        }
    }

    /// The findings of the policy's content detectors (and injection heuristics, when on) in
    /// `text`; empty when the policy has no `content:` section.
    fn scan(&self, py: Python<'_>, text: &str) -> Vec<Finding> {
        let policy = self.inner.policy();
        match &policy.content {
            Some(content) => py.detach(|| scan_text(content, text)),
            None => Vec::new(),
        }
    }

    /// `value` (a str or a JSON value) redacted as the policy redacts tool arguments
    /// (`content.input: redact`); returned unchanged when the policy redacts nothing there.
    fn redact<'py>(&self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = value.py();
        let json = json_arg(value, "value")?;
        let policy = self.inner.policy();
        let redacted = match &policy.content {
            Some(content) => py.detach(|| redact_value(content, json)),
            None => json,
        };
        convert::to_python(py, &redacted)
    }

    /// Replaces the policy with the file at `path`, atomically: sessions are kept, and every
    /// decision uses the old policy or the new one whole. Raises `PolicyError` and keeps the
    /// old policy when the new one is invalid.
    fn reload(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let policy = py
            .detach(|| warden::load_policy_file(&path))
            .map_err(|e| from_load_error(py, &e))?;
        self.inner.swap_policy(policy);
        Ok(())
    }

    /// The policy deciding now.
    #[getter]
    fn policy(&self) -> PolicyInfo {
        PolicyInfo::new(self.inner.policy().info.clone())
    }

    fn __repr__(&self) -> String {
        let policy = self.inner.policy();
        format!(
            "Engine(policy={:?}, version={})",
            &*policy.info.name,
            crate::decision::py_opt(policy.info.version.as_deref())
        )
    }
}
