//! Brute-force protection: an address that fails authentication `max_failures` times in one
//! window is locked out for a window (429 to every request from it, whatever key it shows).
//!
//! Failures are counted per address and window in the counter store: Redis when the instances
//! share state, so failures spread over every instance add up; this instance's memory
//! otherwise. The lockout itself is kept in each instance (a bounded cache that forgets it
//! after the window), so a locked-out address costs no round trip: an instance learns it at the
//! address's next failure there.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use warden::state::CounterStore;

use crate::config::AuthFailureLimit;
use crate::error::{ApiError, ErrorCode};

/// Addresses tracked as locked out at once, at most (a flood of addresses evicts the oldest).
const MAX_LOCKED_OUT: u64 = 100_000;

/// The lockout state of one instance (see the module documentation).
pub(crate) struct Lockout {
    counters: Arc<dyn CounterStore>,
    max_failures: u64,
    window_secs: u64,
    locked: moka::sync::Cache<IpAddr, ()>,
}

impl Lockout {
    /// The lockout `limit` asks for (none when `max_failures` is 0), counting in `counters`.
    pub(crate) fn new(limit: AuthFailureLimit, counters: Arc<dyn CounterStore>) -> Option<Self> {
        if limit.max_failures == 0 {
            return None;
        }
        let window_secs = limit.window_secs.max(1);
        Some(Self {
            counters,
            max_failures: u64::from(limit.max_failures),
            window_secs,
            locked: moka::sync::Cache::builder()
                .max_capacity(MAX_LOCKED_OUT)
                .time_to_live(Duration::from_secs(window_secs))
                .build(),
        })
    }

    /// A 429 when `addr` is locked out.
    pub(crate) fn check(&self, addr: IpAddr) -> Result<(), ApiError> {
        if self.locked.contains_key(&addr) {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Counts a failed authentication from `addr`; answers whether it is now locked out. A
    /// count the store cannot keep is logged and the address left as it was (the request has
    /// failed anyway).
    pub(crate) async fn failed(&self, addr: IpAddr) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = now / self.window_secs;
        let key = format!("authfail:{addr}");
        let expires = now.saturating_add(self.window_secs.saturating_mul(2));
        match self.counters.add(&key, window, 1, expires).await {
            Ok(total) if total >= self.max_failures => {
                if !self.locked.contains_key(&addr) {
                    tracing::warn!(
                        failures = total,
                        window_secs = self.window_secs,
                        "address locked out after failed authentications"
                    );
                }
                self.locked.insert(addr, ());
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a failed authentication");
                false
            }
        }
    }

    fn refusal(&self) -> ApiError {
        ApiError::new(
            ErrorCode::RateLimited,
            "too many failed authentications from this address; try again later",
        )
        .retry_after(self.window_secs)
    }
}
