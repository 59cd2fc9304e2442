//! Warden's pure core: the request and decision model, policy compilation into an indexed
//! snapshot, evaluation, and session state. No I/O: callers hand bytes in.
//!
//! Most users import the `warden` facade crate instead, which re-exports what they need.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod args;
pub mod budget;
pub mod content;
pub mod coverage;
pub mod decision;
pub mod engine;
pub mod eval;
pub mod expr;
pub mod glob;
pub mod index;
pub mod pins;
pub mod pipeline;
pub mod policy;
pub mod request;
pub mod session;
pub mod state;
pub mod unique_keys;

pub use decision::{ApprovalRef, Decision, Finding, PolicyInfo, Rewrite, Verdict};
pub use engine::{DecideError, Engine, EngineStats, FailureHook};
pub use pipeline::{
    ApprovalEvent, ApprovalSettings, OnStoreFailure, Pipeline, PipelineError, PolicySet,
};
pub use policy::{CompileOptions, CompiledPolicy, Diagnostic, PolicyError};
pub use request::{HttpRequest, Kind, Request, RequestError};
pub use session::{SessionState, StateChange};
pub use state::{
    Approval, ApprovalStatus, ApprovalStore, CounterStore, KeyRecord, KeyRole, KeyStore,
    MemoryApprovalStore, MemoryCounterStore, MemoryKeyStore, MemoryNonceStore, MemorySessionStore,
    NonceStore, SessionStore, SessionWrite, StoreAccess, StoreCall, StoreError,
};
