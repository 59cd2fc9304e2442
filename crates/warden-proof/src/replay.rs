//! Replay guards: a token id (`jti`) may be consumed once.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A `jti` could not be consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The token was already used.
    #[error("token already used (replay)")]
    Replayed,
    /// The guard holds its maximum number of live token ids; refuse rather than forget one.
    #[error("replay guard is full")]
    Full,
    /// The backing store failed (for shared implementations).
    #[error("replay guard unavailable: {0}")]
    Unavailable(String),
}

/// Records consumed token ids until their token expires. A shared implementation (Redis
/// `SET NX EX`) implements the same trait so that a token is single-use across instances.
pub trait ReplayGuard: Send + Sync {
    /// Marks `jti` used; `exp` is the token's expiry (unix seconds), after which the id may be
    /// forgotten. Fails with [`ReplayError::Replayed`] on a second use.
    fn consume(&self, jti: &str, exp: u64, now: u64) -> Result<(), ReplayError>;
}

/// An in-process replay guard: a map from `jti` to expiry, swept of expired ids when it grows.
#[derive(Debug)]
pub struct MemoryReplayGuard {
    seen: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl Default for MemoryReplayGuard {
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

impl MemoryReplayGuard {
    /// A guard holding at most `capacity` unexpired ids (fails closed with
    /// [`ReplayError::Full`] beyond that).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Number of ids currently remembered.
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn consume(&self, jti: &str, exp: u64, now: u64) -> Result<(), ReplayError> {
        let mut seen = self.seen.lock();
        if seen.get(jti).is_some_and(|&until| until >= now) {
            return Err(ReplayError::Replayed);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        seen.insert(jti.to_owned(), exp);
        Ok(())
    }
}
