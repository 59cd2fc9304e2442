//! `warden.Engine`: a compiled policy and its in-memory sessions, deciding in-process.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use crate::content::{json_arg, redact_value, scan_text};
use crate::convert;
use crate::decision::{Decision, Finding, PolicyInfo};
use crate::errors::{DecideError, StoreError, from_load_error, from_request_error, request_error};
use crate::store::RedisSettings;

/// A compiled policy deciding requests in-process, with sessions in memory or in a shared Redis.
/// Thread-safe: share one engine across threads; a session's read-decide-update is atomic, and
/// the GIL is released while deciding.
#[pyclass(module = "warden", frozen)]
pub struct Engine {
    inner: warden::Engine,
    /// With a shared store: the process that connected. Its connections live on threads a
    /// forked child does not have, so a child must build its own engine.
    connected_in: Option<u32>,
}

/// Longest tenant name accepted (the daemon's tenants are key identities, far shorter).
const MAX_TENANT: usize = 256;

/// Where an engine keeps its sessions and whose they are (`from_file`'s keyword arguments).
struct Sessions {
    redis: Option<RedisSettings>,
    tenant: Option<String>,
}

impl Sessions {
    fn new(
        redis_url: Option<String>,
        redis_prefix: String,
        session_ttl: Option<f64>,
        tenant: Option<String>,
    ) -> PyResult<Self> {
        let redis = match redis_url {
            Some(url) => Some(
                RedisSettings::new(url, redis_prefix, session_ttl)
                    .map_err(PyValueError::new_err)?,
            ),
            None if session_ttl.is_some() => {
                return Err(PyValueError::new_err(
                    "session_ttl: only with redis_url (in-memory sessions live as long as the engine)",
                ));
            }
            None => None,
        };
        if let Some(tenant) = &tenant
            && (tenant.is_empty()
                || tenant.len() > MAX_TENANT
                || tenant.chars().any(char::is_control))
        {
            // A control character could forge the separator of the tenant's namespace.
            return Err(PyValueError::new_err(format!(
                "tenant: expected 1 to {MAX_TENANT} bytes, no control characters"
            )));
        }
        Ok(Self { redis, tenant })
    }

    /// The engine over `policy`, connected to the shared store if one is configured.
    fn engine(self, py: Python<'_>, policy: warden::CompiledPolicy) -> PyResult<Engine> {
        let (inner, connected_in) = match &self.redis {
            Some(redis) => {
                let store = py.detach(|| redis.connect()).map_err(StoreError::new_err)?;
                (
                    warden::Engine::with_store(policy, store),
                    Some(std::process::id()),
                )
            }
            None => (warden::Engine::new(policy), None),
        };
        let inner = match self.tenant {
            Some(tenant) => inner.with_tenant(tenant),
            None => inner,
        };
        Ok(Engine {
            inner,
            connected_in,
        })
    }
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

impl Engine {
    /// Refuses to decide in a forked child of the process that connected to the shared store:
    /// the connections' threads did not survive the fork, and a decision would wait forever.
    fn check_process(&self) -> PyResult<()> {
        match self.connected_in {
            Some(pid) if pid != std::process::id() => Err(DecideError::new_err(
                "this engine's shared store was connected in the parent process: build the engine again after fork",
            )),
            _ => Ok(()),
        }
    }
}

#[pymethods]
impl Engine {
    /// Loads and compiles a policy file (YAML or JSON); Rego module files it names are read
    /// relative to it. Raises `PolicyError` with the file, line, column and field.
    ///
    /// Sessions live in memory unless `redis_url` names a Redis: then they are the daemon's
    /// shared sessions (same keys under `redis_prefix`; idle ones forgotten after
    /// `session_ttl` seconds), and `tenant` makes them that tenant's, as `warden serve` keys
    /// the sessions of an API key's tenant. Raises `StoreError` when Redis cannot be reached.
    #[staticmethod]
    #[pyo3(signature = (path, *, redis_url = None, redis_prefix = "warden".to_owned(), session_ttl = None, tenant = None))]
    fn from_file(
        py: Python<'_>,
        path: PathBuf,
        redis_url: Option<String>,
        redis_prefix: String,
        session_ttl: Option<f64>,
        tenant: Option<String>,
    ) -> PyResult<Self> {
        let sessions = Sessions::new(redis_url, redis_prefix, session_ttl, tenant)?;
        let policy = py
            .detach(|| warden::load_policy_file(&path))
            .map_err(|e| from_load_error(py, &e))?;
        sessions.engine(py, policy)
    }

    /// Compiles a policy from its text (YAML or JSON); `origin` names it in errors. The
    /// keyword arguments are `from_file`'s.
    #[staticmethod]
    #[pyo3(signature = (text, origin = "<string>", *, redis_url = None, redis_prefix = "warden".to_owned(), session_ttl = None, tenant = None))]
    fn from_str(
        py: Python<'_>,
        text: &str,
        origin: &str,
        redis_url: Option<String>,
        redis_prefix: String,
        session_ttl: Option<f64>,
        tenant: Option<String>,
    ) -> PyResult<Self> {
        let sessions = Sessions::new(redis_url, redis_prefix, session_ttl, tenant)?;
        let policy = py
            .detach(|| warden::load_policy_str(origin, text))
            .map_err(|e| from_load_error(py, &e))?;
        sessions.engine(py, policy)
    }

    /// Decides one request: a dict (`{"tool": ..., "args": {...}, "session": ...}`), or its
    /// JSON text. Raises `RequestError` naming the field of a malformed request, and
    /// `DecideError` when no decision can be made (treat it as deny).
    fn decide(&self, request: &Bound<'_, PyAny>) -> PyResult<Decision> {
        let py = request.py();
        self.check_process()?;
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
        self.check_process()?;
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
