//! Warden: policy decisions for AI agents and LLM traffic.
//!
//! Load a policy, build an [`Engine`], and ask it about each request:
//!
//! ```
//! use warden::{Engine, Request, Verdict};
//!
//! let policy = warden::load_policy_str("inline", r#"
//! warden: 1
//! name: demo
//! tools: { send_email: [external_write], "crm.read_*": [sensitive_read] }
//! rules:
//!   - { id: reads, effect: allow, classes: [sensitive_read], add_taints: [pii] }
//!   - { id: writes, effect: allow, classes: [external_write] }
//!   - { id: no-exfil, effect: deny, classes: [external_write], if: "taint:pii" }
//! "#)?;
//! let engine = Engine::new(policy);
//! let read = Request::from_json(br#"{"session":"s1","tool":"crm.read_customer"}"#)?;
//! assert_eq!(engine.decide(&read)?.verdict, Verdict::Allow);
//! let send = Request::from_json(br#"{"session":"s1","tool":"send_email"}"#)?;
//! let decision = engine.decide(&send)?;
//! assert_eq!(decision.verdict, Verdict::Deny);
//! assert_eq!(decision.rule.as_deref(), Some("no-exfil"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod load;
pub mod scenario;

/// Rego through regorus, for policies written in Rego alone (OPA users' `*.rego` files).
pub mod rego {
    pub use warden_rego::*;
}

/// The content scanners (PII, secrets, prompt injection), usable on their own.
pub mod content {
    pub use warden_content::*;
}

pub use load::{LoadError, load_policy_file, load_policy_file_with_text, load_policy_str};
/// Static analysis and flow proofs (`warden analyze`).
pub use warden_core::analysis;
/// Policy coverage over decided requests (`warden test --coverage`).
pub use warden_core::coverage;
/// The decision pipeline's parts: callers, effects, audit receipts.
pub use warden_core::pipeline;
pub use warden_core::policy::schema as policy_schema;
/// The state layer: the traits every store implements and the in-memory stores.
pub use warden_core::state;
pub use warden_core::unique_keys::reject_duplicate_keys;
pub use warden_core::{
    CompileOptions, CompiledPolicy, DecideError, Decision, Diagnostic, Engine, EngineStats,
    Finding, HttpRequest, Kind, MemorySessionStore, OnStoreFailure, Pipeline, PipelineError,
    PolicyError, PolicyInfo, PolicySet, Request, RequestError, SessionState, SessionStore,
    StateChange, StoreCall, StoreError, Verdict,
};
