//! The package's exceptions: one base class, one class per kind of mistake, each naming the
//! field or the place (file, line, column) and never the offending value (it may be a secret).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

create_exception!(
    warden,
    WardenError,
    PyException,
    "Base class of every error the warden package raises."
);
create_exception!(
    warden,
    PolicyError,
    WardenError,
    "The policy could not be loaded: unreadable, or invalid (`diagnostics` holds one \
     `(line, column, message)` per problem; `origin` names the file)."
);
create_exception!(
    warden,
    RequestError,
    WardenError,
    "The request is malformed; `field` names the offending field (`None` when the request \
     as a whole is wrong, e.g. not a JSON object)."
);
create_exception!(
    warden,
    StoreError,
    WardenError,
    "The shared session store (Redis) could not be reached when the engine was built."
);
create_exception!(
    warden,
    DecideError,
    WardenError,
    "No decision could be made (e.g. the session store failed). Treat it as deny."
);

/// A `RequestError` with `field` set (a JSON path such as `args` or `session`).
pub(crate) fn request_error(py: Python<'_>, field: Option<&str>, message: &str) -> PyErr {
    let err = RequestError::new_err(message.to_owned());
    // Setting an attribute on a fresh exception instance cannot fail short of memory
    // exhaustion; the exception is still raised (without `field`) if it does.
    let _ = err.value(py).setattr("field", field);
    err
}

/// A `RequestError` from the core's parse error.
pub(crate) fn from_request_error(py: Python<'_>, e: &warden::RequestError) -> PyErr {
    request_error(py, e.field.as_deref(), &e.to_string())
}

/// A `PolicyError` from a load error, with `origin` and `diagnostics`.
pub(crate) fn from_load_error(py: Python<'_>, e: &warden::LoadError) -> PyErr {
    let err = PolicyError::new_err(e.to_string());
    let value = err.value(py);
    match e {
        warden::LoadError::Io { path, .. } => {
            let _ = value.setattr("origin", path.as_str());
            let _ = value.setattr("diagnostics", PyTuple::empty(py));
        }
        warden::LoadError::Policy(policy) => {
            let _ = value.setattr("origin", policy.origin.as_str());
            let diagnostics: Vec<(u64, u64, String)> = policy
                .diagnostics
                .iter()
                .map(|d| (d.line, d.column, d.message.clone()))
                .collect();
            let _ = value.setattr("diagnostics", diagnostics);
        }
    }
    err
}
