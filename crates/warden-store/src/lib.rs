//! Warden's embedded stores, for `warden serve` on one machine with no other server:
//!
//! - [`EmbeddedSessionStore`]: sessions in memory (a sharded map, the hot path) with write-behind
//!   persistence to a [`redb`] file and an idle-session TTL.
//! - [`RedbPinStore`]: MCP tool pins in a redb file of their own, shared by the proxy and
//!   `warden mcp approve` across processes (see [`pins`]).
//! - [`keys`]: API keys stored only as SHA-256 hashes, each mapped to a tenant and its policy,
//!   verified in constant time.
//!
//! And the shared stores, for many instances: [`RedisState`] (sessions, token nonces, counters
//! in Redis; see [`redis_state`]) and [`Database`] (tenants, API keys and policies in PostgreSQL; see
//! [`database`]).

#![forbid(unsafe_code)]

pub mod database;
pub mod keys;
pub mod pins;
pub mod redis_state;
mod sessions;

pub use database::{AuthEvent, Database, PolicyFormat, StoredPolicy, Tenant};
pub use keys::{FileKeyStore, KeyError, KeyIndex, KeyRecord};
pub use pins::RedbPinStore;
pub use redis_state::{RedisOptions, RedisState};
pub use sessions::{EmbeddedSessionStore, Flusher, SessionDbError};
