//! Warden's tamper-evident audit log: one canonical JSON line per decision, hash-chained
//! (`prev` / `hash`), optionally MACed, rotated by size, written by one thread behind a bounded
//! queue with an explicit full-queue policy and `fsync: always | batch | never`.
//!
//! See `README.md` for the entry format, the durability contract and the recovery procedure.

#![forbid(unsafe_code)]

mod checkpoint;
mod entry;
mod files;
mod verify;
mod writer;

pub use checkpoint::{CHECKPOINT_FILE, Checkpoint};
pub use entry::{Anchor, AuditRecord, GENESIS_HASH, KEYED_ARGS_HASH_PREFIX, keyed_args_hash};
pub use verify::{
    ReadError, Recovery, Report, expand_paths, recover_truncated_tail, verify, verify_checkpoint,
    verify_from,
};
pub use writer::{AckFn, AuditConfig, AuditLog, FsyncPolicy, FullPolicy, LOCK_FILE, recover_tail};

/// An audit operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The queue is full and the policy is `deny`.
    #[error("audit queue is full")]
    QueueFull,
    /// The log has been closed.
    #[error("audit log is closed")]
    Closed,
    /// File I/O failed.
    #[error("audit i/o: {0}")]
    Io(String),
    /// The writer stopped after an error; later appends fail with it.
    #[error("audit writer failed: {0}")]
    Writer(String),
    /// An entry could not be encoded.
    #[error("audit entry encoding: {0}")]
    Encode(String),
    /// Another writer holds the directory's lock file ([`LOCK_FILE`]).
    #[error(
        "audit directory `{0}` is in use by another writer (its lock file `{LOCK_FILE}` is held); \
         two writers on one log would break its chain"
    )]
    Locked(String),
    /// The checkpoint file cannot be read or does not verify.
    #[error("audit checkpoint: {0}")]
    Checkpoint(String),
    /// The log does not hold the entry its checkpoint records (entries were removed or
    /// rewritten); the writer refuses to continue it.
    #[error(
        "audit log is shorter than its checkpoint: {0}; restore the removed files, or move \
         `{CHECKPOINT_FILE}` away to start a new chain knowingly"
    )]
    Truncated(String),
    /// The MAC key failed.
    #[error("audit key: {0}")]
    Key(String),
}

impl AuditError {
    pub(crate) fn io(e: std::io::Error) -> Self {
        AuditError::Io(e.to_string())
    }
}
