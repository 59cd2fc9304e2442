//! `warden._warden`: the Warden engine as a CPython extension module.
//!
//! A front door on top of the facade crate `warden`, like `warden eval`: a request is parsed by
//! [`warden::Request`] and decided by [`warden::Engine`] (the library's pipeline of one policy,
//! sessions in memory, or the daemon's Redis state: `store`). Nothing here decides anything itself; it converts Python values to
//! JSON values and back, and maps errors to Python exceptions. The pure-Python half of the
//! package (`python/warden/`) adds the remote client and the framework guards.

// pyo3's macros expand without tripping `unsafe_code` (their FFI glue lives in pyo3 itself),
// so this crate forbids it like the rest of the workspace.
#![forbid(unsafe_code)]

mod content;
mod convert;
mod decision;
mod engine;
mod errors;
mod store;

use pyo3::prelude::*;

/// The extension module. `warden/__init__.py` re-exports what users import.
#[pymodule]
fn _warden(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<engine::Engine>()?;
    m.add_class::<decision::Decision>()?;
    m.add_class::<decision::Finding>()?;
    m.add_class::<decision::PolicyInfo>()?;
    m.add_class::<content::Scanner>()?;
    m.add("WardenError", py.get_type::<errors::WardenError>())?;
    m.add("PolicyError", py.get_type::<errors::PolicyError>())?;
    m.add("RequestError", py.get_type::<errors::RequestError>())?;
    m.add("DecideError", py.get_type::<errors::DecideError>())?;
    m.add("StoreError", py.get_type::<errors::StoreError>())?;
    m.add("KNOWN_DETECTORS", warden::content::KNOWN_DETECTORS.to_vec())?;
    Ok(())
}
