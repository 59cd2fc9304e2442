//! Authentication events in PostgreSQL (`database_url`): every failure and lockout, and a
//! success at most once a minute per key, address and user agent (a success per request would
//! be a database write per request). Events are queued (bounded) and written in batches by a
//! task of their own, so authentication never waits on the database; what cannot be queued or
//! written is counted in `warden_auth_events_dropped_total` and logged.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use warden_store::{AuthEvent, Database};

/// Events queued for the writer at most.
const QUEUE: usize = 10_000;
/// Events written in one statement at most.
const BATCH: usize = 1_000;
/// Longest `User-Agent` stored, in bytes.
const MAX_USER_AGENT: usize = 256;
/// A success is stored once per key, address and user agent in this period.
const SUCCESS_EVERY: Duration = Duration::from_secs(60);

/// The queue to the writer, and the successes recently stored.
pub(crate) struct AuthEvents {
    queue: mpsc::Sender<AuthEvent>,
    recent: moka::sync::Cache<u64, ()>,
    dropped: Counter,
}

impl AuthEvents {
    /// Starts the writer on the current runtime.
    pub(crate) fn start(database: Arc<Database>, dropped: Counter) -> Self {
        let (queue, mut events) = mpsc::channel(QUEUE);
        let lost = dropped.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while events.recv_many(&mut batch, BATCH).await > 0 {
                let n = batch.len() as u64;
                if let Err(e) = database
                    .record_auth_events(std::mem::take(&mut batch))
                    .await
                {
                    lost.inc_by(n);
                    tracing::warn!(error = %e, events = n, "authentication events not stored");
                }
            }
        });
        Self {
            queue,
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SUCCESS_EVERY)
                .build(),
            dropped,
        }
    }

    /// A success of key `key_id` (tenant `tenant`), stored when not stored in the last minute.
    pub(crate) fn success(
        &self,
        key_id: &str,
        tenant: &str,
        addr: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (key_id, addr, user_agent).hash(&mut hasher);
        let seen = hasher.finish();
        if self.recent.contains_key(&seen) {
            return;
        }
        self.recent.insert(seen, ());
        self.push(AuthEvent {
            at_ms: now_ms(),
            outcome: "success",
            key_id: Some(key_id.to_owned()),
            tenant: Some(tenant.to_owned()),
            remote_addr: addr.map(|a| a.to_string()),
            user_agent: user_agent.map(truncate),
        });
    }

    /// A failure (`failure`) or a refusal of a locked-out address (`locked_out`).
    pub(crate) fn refused(
        &self,
        outcome: &'static str,
        addr: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.push(AuthEvent {
            at_ms: now_ms(),
            outcome,
            key_id: None,
            tenant: None,
            remote_addr: addr.map(|a| a.to_string()),
            user_agent: user_agent.map(truncate),
        });
    }

    fn push(&self, event: AuthEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_USER_AGENT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}
