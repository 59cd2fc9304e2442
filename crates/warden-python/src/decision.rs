//! The typed decision Python sees: `Decision`, `Finding`, `PolicyInfo`. Each wraps the core's
//! own type and converts a field only when it is read, so a decision nobody inspects beyond its
//! verdict costs one allocation.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert;
use crate::errors::WardenError;

/// The outcome of one request: the verdict, the rule that decided, its reasons, the warnings,
/// the session's taints, the content findings and the redacted value.
#[pyclass(module = "warden", frozen)]
pub struct Decision {
    pub(crate) inner: warden::Decision,
}

/// Where content was found (never what: the matched text is not carried).
#[pyclass(module = "warden", frozen)]
pub struct Finding {
    inner: warden::Finding,
}

/// Which policy decided: its name, version and digest.
#[pyclass(module = "warden", frozen)]
pub struct PolicyInfo {
    inner: warden::PolicyInfo,
}

/// `None` or the string quoted, as Python's `repr` shows an optional string.
pub(crate) fn py_opt(value: Option<&str>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("{v:?}"))
}

fn strings(items: &[std::sync::Arc<str>]) -> Vec<&str> {
    items.iter().map(AsRef::as_ref).collect()
}

impl Finding {
    pub(crate) fn new(inner: warden::Finding) -> Self {
        Self { inner }
    }
}

impl PolicyInfo {
    pub(crate) fn new(inner: warden::PolicyInfo) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl Decision {
    /// `"allow"` or `"deny"`: the enforced decision (always `"allow"` in dry-run mode).
    #[getter]
    fn verdict(&self) -> &'static str {
        self.inner.verdict.as_str()
    }

    /// Whether the call may go through.
    #[getter]
    fn allowed(&self) -> bool {
        self.inner.verdict == warden::Verdict::Allow
    }

    /// The first matching deny rule's id (or `content:<detector>`), `None` otherwise.
    #[getter]
    fn rule(&self) -> Option<&str> {
        self.inner.rule.as_deref()
    }

    /// The reasons of every matching deny rule that has one, in document order.
    #[getter]
    fn reasons(&self) -> Vec<&str> {
        strings(&self.inner.reasons)
    }

    /// Ids of matching warn rules (and `content:<id>` for warn-action findings).
    #[getter]
    fn warnings(&self) -> Vec<&str> {
        strings(&self.inner.warnings)
    }

    /// The session's sorted taint set after the decision.
    #[getter]
    fn taints(&self) -> Vec<&str> {
        strings(&self.inner.taints)
    }

    /// Content findings, in request order.
    #[getter]
    fn findings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for f in &self.inner.findings {
            list.append(Finding::new(f.clone()))?;
        }
        Ok(list)
    }

    /// The rewritten `args` / `result` / `text` when something was redacted, else `None`.
    #[getter]
    fn redacted<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner.redacted {
            Some(value) => convert::to_python(py, value),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// In dry-run mode: the decision that would have been enforced.
    #[getter]
    fn dry_run_decision(&self) -> Option<&'static str> {
        self.inner.dry_run_decision.map(warden::Verdict::as_str)
    }

    /// The policy that decided.
    #[getter]
    fn policy(&self) -> PolicyInfo {
        PolicyInfo::new(self.inner.policy.clone())
    }

    /// The decision as the daemon's JSON answer (a dict).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.inner)
            .map_err(|e| WardenError::new_err(format!("cannot convert the decision: {e}")))?;
        convert::to_python(py, &value)
    }

    /// Builds a decision from the daemon's JSON answer (what `Client.decide` receives).
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        let json = convert::to_json(value, &mut String::new()).map_err(|e| {
            WardenError::new_err(format!(
                "not a decision: {}{}",
                e.field
                    .map(|f| format!("field `{f}`: "))
                    .unwrap_or_default(),
                e.message
            ))
        })?;
        let inner = serde_json::from_value(json)
            .map_err(|e| WardenError::new_err(format!("not a decision: {e}")))?;
        Ok(Self { inner })
    }

    fn __bool__(&self) -> bool {
        self.allowed()
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(verdict={:?}, rule={}, reasons={:?}, taints={:?}, findings={}, redacted={})",
            self.inner.verdict.as_str(),
            py_opt(self.inner.rule.as_deref()),
            strings(&self.inner.reasons),
            strings(&self.inner.taints),
            self.inner.findings.len(),
            if self.inner.redacted.is_some() {
                "..."
            } else {
                "None"
            },
        )
    }
}

#[pymethods]
impl Finding {
    /// The detector id (`email`, `credit_card`, `injection`, a custom id, ...).
    #[getter]
    fn detector(&self) -> &str {
        &self.inner.detector
    }

    /// JSON Pointer of the string in the request (`/args/to`, `/text`).
    #[getter]
    fn path(&self) -> &str {
        &self.inner.path
    }

    /// Start offset in characters.
    #[getter]
    fn start(&self) -> usize {
        self.inner.start
    }

    /// End offset in characters, exclusive.
    #[getter]
    fn end(&self) -> usize {
        self.inner.end
    }

    /// The finding is in an object key, not in a value.
    #[getter]
    fn key(&self) -> bool {
        self.inner.key
    }

    /// For injection findings: the heuristic family that fired.
    #[getter]
    fn family(&self) -> Option<&str> {
        self.inner.family.as_deref()
    }

    /// For injection findings: the string's score, 0 to 1.
    #[getter]
    fn score(&self) -> Option<f64> {
        self.inner.score
    }

    /// For injection findings: every family that fired in the string.
    #[getter]
    fn families(&self) -> Vec<String> {
        self.inner.families.clone()
    }

    /// The finding as a dict (the daemon's JSON shape).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.inner)
            .map_err(|e| WardenError::new_err(format!("cannot convert the finding: {e}")))?;
        convert::to_python(py, &value)
    }

    fn __repr__(&self) -> String {
        format!(
            "Finding(detector={:?}, path={:?}, start={}, end={})",
            self.inner.detector, self.inner.path, self.inner.start, self.inner.end
        )
    }
}

#[pymethods]
impl PolicyInfo {
    /// The policy's `name`.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// The policy's `version`, `None` when omitted.
    #[getter]
    fn version(&self) -> Option<&str> {
        self.inner.version.as_deref()
    }

    /// `sha256:` + the hex SHA-256 of the policy's canonical JSON form.
    #[getter]
    fn digest(&self) -> &str {
        &self.inner.digest
    }

    fn __repr__(&self) -> String {
        format!(
            "PolicyInfo(name={:?}, version={}, digest={:?})",
            &*self.inner.name,
            py_opt(self.inner.version.as_deref()),
            &*self.inner.digest
        )
    }
}
