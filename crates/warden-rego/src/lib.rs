//! Rego rules for Warden, evaluated with [regorus](https://github.com/microsoft/regorus).
//!
//! A [`RegoPolicy`] is compiled once per policy snapshot from [`RegoModule`]s, an optional base
//! `data` document and the queries the policy's rules name (`data.pkg.rule`). Load errors
//! ([`RegoError`]) carry the module, line and column; a query that names nothing, a call to an
//! undefined function and recursion between rules are load errors, not a silent `false` or a
//! failure at decision time.
//!
//! Evaluation takes no lock: regorus evaluates through `&mut Engine`, so every thread keeps
//! its own engine cloned from the policy's prepared prototype, keyed by the policy's unique id
//! (a few per thread, least recently used dropped first). A reloaded policy is a new
//! [`RegoPolicy`] with a new id, so the next evaluation on every thread uses the new snapshot.
//!
//! Each evaluation runs under [`RegoLimits`] (time budget, input depth); exceeding one is
//! [`RegoEvalError::LimitExceeded`] (`rego: limit exceeded`).
//!
//! ```
//! use warden_rego::{RegoLimits, RegoModule, RegoPolicy};
//!
//! let module = RegoModule::new(
//!     "payments.rego",
//!     "package payments\nimport rego.v1\ntoo_large if input.args.amount > input.context.limit\n",
//! );
//! let (policy, ids) =
//!     RegoPolicy::compile(vec![module], None, &["data.payments.too_large"], RegoLimits::default())?;
//! let input = serde_json::json!({"args": {"amount": 500}, "context": {"limit": 100}});
//! assert!(policy.eval_truthy(ids[0], &input)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod check;
mod engines;
mod error;
mod outline;
mod policy;
mod query;
mod value;

pub use error::{RegoError, RegoEvalError};
pub use outline::ModuleOutline;
pub use policy::{QueryId, RegoInput, RegoLimits, RegoModule, RegoPolicy};
pub use value::InputField;

/// The regorus version this crate is built against (for `warden version` style reports).
pub const REGORUS_VERSION: &str = "0.14";

// RegoPolicy is shared across threads (e.g. behind an `ArcSwap`).
const _: fn() = || {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<RegoPolicy>();
};
