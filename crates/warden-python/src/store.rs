//! Sessions in a shared store: the daemon's Redis state, reached from Python threads.
//!
//! The Redis client runs its connections on a Tokio runtime; the extension starts one for the
//! process the first time an engine asks for Redis (one worker thread: it only moves bytes).
//! Deciding stays synchronous: the Python thread (GIL released) parks until the store answers,
//! as the daemon's MCP enforcer does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warden_store::{RedisOptions, RedisState};

/// The runtime for shared stores and the process that started it. A forked child has the
/// memory of its parent's runtime but none of its threads: it starts its own.
static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    // The guarded value is replaced whole or not at all: a poisoned lock still holds a valid one.
    let mut current = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((started_in, runtime)) = *current
        && started_in == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("warden-store")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the store runtime: {e}"))?;
    // Kept for the life of the process (engines hold connections that run on it); a parent's
    // runtime inherited by a fork is left as it is, since shutting it down would wait for
    // threads that do not exist here.
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
    *current = Some((pid, runtime));
    Ok(runtime)
}

/// Longest key prefix accepted (a prefix names a deployment, not data).
const MAX_PREFIX: usize = 128;

/// How an engine reaches Redis: what `from_file(..., redis_url=...)` was given.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub session_ttl: Option<Duration>,
}

impl RedisSettings {
    /// Checks the settings, naming the argument at fault (never the URL: it may hold a
    /// password).
    pub fn new(url: String, prefix: String, session_ttl: Option<f64>) -> Result<Self, String> {
        // `rediss://` is refused: TLS to Redis is not built in, and a URL asking for it must
        // not quietly connect in the clear.
        if !["redis://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err("redis_url: expected a redis://, redis+unix:// or unix:// URL".to_owned());
        }
        if prefix.is_empty() || prefix.len() > MAX_PREFIX || prefix.chars().any(char::is_control) {
            return Err(format!(
                "redis_prefix: expected 1 to {MAX_PREFIX} characters, no control characters"
            ));
        }
        let session_ttl = match session_ttl {
            None => None,
            Some(seconds) => Some(
                Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("session_ttl: expected a positive number of seconds")?,
            ),
        };
        Ok(Self {
            url,
            prefix,
            session_ttl,
        })
    }

    /// Connects (blocking this thread; call it with the GIL released).
    pub fn connect(&self) -> Result<Arc<RedisState>, String> {
        let runtime = runtime()?;
        let options = RedisOptions {
            prefix: self.prefix.clone(),
            session_ttl: self.session_ttl,
            ..RedisOptions::default()
        };
        runtime
            .block_on(RedisState::connect(&self.url, options))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}
