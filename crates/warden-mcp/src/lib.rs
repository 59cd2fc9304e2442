//! Warden's MCP proxy: enforces a policy on the Model Context Protocol traffic between an agent
//! (the MCP client) and MCP servers. See `README.md` in this crate for the protocol decisions.
//!
//! The enforcement core ([`Enforcer`]) is transport-independent and does no I/O of its own:
//! transports hand it each message's bytes and act on the [`Outcome`]. The `stdio` and `http`
//! features add the two transports.

#![forbid(unsafe_code)]

pub mod enforce;
pub mod message;
/// Tool pins live with the rest of the shared state in the core; re-exported here, where the
/// proxy uses them.
pub use warden_core::pins;
pub mod reach;
pub mod sse;

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "stdio")]
pub mod stdio;
#[cfg(feature = "http")]
pub mod upstream_tls;

pub use enforce::{
    Caller, Counters, Decider, DecisionObserver, Enforcer, Exchange, Outcome,
    routing_header_mismatch,
};
pub use message::{Id, Message, MessageKind, Refusal};
pub use pins::{
    MemoryPinStore, Pin, PinError, PinStatus, PinStore, definition_hash, definition_subset,
    subset_hash,
};
pub use reach::never_callable;
