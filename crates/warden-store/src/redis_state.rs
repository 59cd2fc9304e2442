//! Shared state in Redis, for many `warden serve` instances behind one load balancer: sessions,
//! single-use token nonces, counters (rate limits, usage) and approvals, one truth for all of
//! them.
//!
//! Sessions are read-decide-committed optimistically, with no lock held while deciding: a
//! decision runs on the state and version this instance last saw of the session (a bounded
//! local cache; a session it never saw is taken as new, at version 0), then one server-side
//! script commits the new state, or only checks the version for a decision that changed
//! nothing, if the version is unchanged. On a conflict the script answers the current state and
//! version in the same round trip, and the decision runs again on them. So a decision costs one
//! round trip when this instance saw the session last (or it is new) and two when another
//! instance changed it meanwhile; no decision stands on a state it did not see. `load` and the
//! multi-session `commit` (batches) read and check the same way. A version is the Redis
//! server's clock in microseconds (or the last version plus one, if larger), so it is never
//! reused, also after a session was removed or expired. Every access renews a session's idle
//! TTL.
//!
//! Keys are `PREFIX:s:{SESSION}` (and `:n:`, `:c:`), the session key holding its tenant; the
//! braces are a Redis Cluster hash tag, so one session lives on one slot. (A batch spanning
//! sessions on different slots is refused by a cluster: such batches need a single Redis.)
//!
//! Each call runs as a task on the runtime the state was connected on, so a caller may await it
//! from any thread or park on it ([`StoreCall::wait`]); the connections are a small pool of
//! multiplexed, reconnecting connections ([`redis::aio::ConnectionManager`]), each command
//! bounded by a response timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use warden_core::session::Versioned;
use warden_core::state::{
    APPROVAL_RETENTION_MS, Approval, ApprovalStatus, ApprovalStore, Ask, Asked, CounterId,
    CounterStore, Decide, NonceStore, Reserve, Resolution, Resolved, StoreAccess, StoreCall,
    TRANSACT_ATTEMPTS, ask_transition, resolve_transition,
};
use warden_core::{SessionState, SessionStore, SessionWrite, StoreError};

use crate::sessions::{decode_state, encode_state};

/// Checks every session's version, then writes every new state (all or nothing).
/// KEYS: the sessions. ARGV[1]: idle TTL in ms (0: none); then per session its expected version
/// and its new state ("" = only checked).
const COMMIT: &str = r"
local ttl = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  local v = redis.call('HGET', k, 'v') or '0'
  if v ~= ARGV[2 * i] then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, k in ipairs(KEYS) do
  local s = ARGV[2 * i + 1]
  if s ~= '' then
    local v = tonumber(redis.call('HGET', k, 'v') or '0')
    redis.call('HSET', k, 'v', string.format('%.0f', math.max(v + 1, now)), 's', s)
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  elseif ttl > 0 then
    redis.call('PEXPIRE', k, ttl)
  end
end
return 1
";

/// One session's read-decide-commit, second half: if the version is still ARGV[2], write the
/// new state ARGV[3] ("" = only check) and answer {1, new version}; otherwise answer
/// {0, current version, current state} so the caller decides again without another read.
/// ARGV[1]: idle TTL in ms (0: none).
const TRANSACT: &str = r"
local ttl = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'v', 's')
local v = r[1] or '0'
if v ~= ARGV[2] or ARGV[3] == '' then
  if r[1] and ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  if v ~= ARGV[2] then return {0, v, r[2] or ''} end
  return {1, v, ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = string.format('%.0f', math.max(tonumber(v) + 1, now))
redis.call('HSET', KEYS[1], 'v', n, 's', ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return {1, n, ''}
";

/// The session's version and state, renewing its idle TTL. ARGV[1]: idle TTL in ms (0: none).
const LOAD: &str = r"
local r = redis.call('HMGET', KEYS[1], 'v', 's')
if r[1] and tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return r
";

/// Uses a nonce once until it expires. ARGV: expiry (unix s), now (unix s), seconds to keep it.
const CONSUME: &str = r"
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
";

/// Adds to a counter and answers the total. ARGV: amount, expiry (unix s; 0: none).
const ADD: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return n
";

/// Adds to every counter if each stays within its limit, all or none. KEYS: the counters.
/// ARGV: per counter its amount, limit and expiry (unix s; 0: none). Answers 0 when added, else
/// the 1-based index of the first counter that would pass its limit. (Lua numbers are doubles:
/// exact up to 2^53, far above any budget.)
const RESERVE: &str = r"
for i, k in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', k) or '0')
  if n + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then return i end
end
for i, k in ipairs(KEYS) do
  redis.call('INCRBY', k, ARGV[3 * i - 2])
  if ARGV[3 * i] ~= '0' then redis.call('EXPIREAT', k, ARGV[3 * i]) end
end
return 0
";

/// Changes counters that exist by a signed amount each, never below 0. KEYS: the counters.
/// ARGV: per counter its change.
const ADJUST: &str = r"
for i, k in ipairs(KEYS) do
  local n = redis.call('GET', k)
  if n then
    local v = math.max(0, tonumber(n) + tonumber(ARGV[i]))
    redis.call('SET', k, string.format('%.0f', v), 'KEEPTTL')
  end
end
return 1
";

/// How to reach Redis and how to name and keep Warden's keys there.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key (e.g. `warden`), so several deployments can share one Redis.
    pub prefix: String,
    /// Idle sessions are forgotten after this long (renewed on every access); `None`: kept.
    pub session_ttl: Option<Duration>,
    /// Multiplexed connections to open (requests are spread over them).
    pub connections: usize,
    /// Longest wait for one command's answer; a slower answer is a store error.
    pub response_timeout: Duration,
    /// Longest wait to (re)connect.
    pub connect_timeout: Duration,
    /// Sessions whose last seen state and version this instance keeps, to decide in one round
    /// trip (0: none; every decision then reads first).
    pub cached_sessions: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "warden".to_owned(),
            session_ttl: None,
            connections: 4,
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            cached_sessions: 100_000,
        }
    }
}

/// Sessions, nonces and counters in one Redis (see the module documentation).
pub struct RedisState {
    /// The pool: never empty.
    first: ConnectionManager,
    rest: Vec<ConnectionManager>,
    next: AtomicUsize,
    runtime: tokio::runtime::Handle,
    prefix: String,
    ttl_ms: u64,
    commit: Arc<redis::Script>,
    transact: Arc<redis::Script>,
    load: Arc<redis::Script>,
    /// The state and version this instance last saw of a session (see the module docs).
    seen: moka::sync::Cache<String, Arc<Versioned>>,
    /// This instance's decisions that change one session take turns (a session hashes to one
    /// stripe), so they do not keep conflicting among themselves; one that changes nothing
    /// needs no turn.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    consume: Arc<redis::Script>,
    add: Arc<redis::Script>,
    reserve: Arc<redis::Script>,
    adjust: Arc<redis::Script>,
    approvals_cas: Arc<redis::Script>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .field("connections", &(self.rest.len() + 1))
            .finish()
    }
}

/// A Redis failure as a store error: what failed, never a key's content or the URL.
fn store_error(what: &str, e: &redis::RedisError) -> StoreError {
    StoreError::new(format!("redis {what}: {}", e.kind_description()))
}

trait KindDescription {
    fn kind_description(&self) -> String;
}

impl KindDescription for redis::RedisError {
    /// The error's kind and, for I/O and timeouts, the cause (an I/O error never holds the
    /// URL or a key; a server error's detail may name a key, so only its kind is kept).
    fn kind_description(&self) -> String {
        if self.is_timeout() {
            "timed out".to_owned()
        } else if self.is_io_error() || self.is_connection_dropped() || self.is_connection_refusal()
        {
            format!("unreachable ({:?})", self.kind())
        } else {
            format!("{:?}", self.kind())
        }
    }
}

impl RedisState {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` is refused:
    /// TLS is not built in). Must be called on a Tokio runtime, which then runs every call.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::new(format!("redis URL: {}", e.kind_description())))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let connect = || async {
            ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map_err(|e| store_error("connect", &e))
        };
        let first = connect().await?;
        let mut rest = Vec::new();
        for _ in 1..options.connections {
            rest.push(connect().await?);
        }
        Ok(Self {
            first,
            rest,
            next: AtomicUsize::new(0),
            runtime: tokio::runtime::Handle::current(),
            prefix: options.prefix,
            ttl_ms: options.session_ttl.map_or(0, |t| {
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
            commit: Arc::new(redis::Script::new(COMMIT)),
            transact: Arc::new(redis::Script::new(TRANSACT)),
            load: Arc::new(redis::Script::new(LOAD)),
            consume: Arc::new(redis::Script::new(CONSUME)),
            add: Arc::new(redis::Script::new(ADD)),
            reserve: Arc::new(redis::Script::new(RESERVE)),
            adjust: Arc::new(redis::Script::new(ADJUST)),
            approvals_cas: Arc::new(redis::Script::new(APPROVALS_CAS)),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            seen: {
                let cache = moka::sync::Cache::builder().max_capacity(options.cached_sessions);
                match options.session_ttl {
                    Some(ttl) => cache.time_to_idle(ttl).build(),
                    None => cache.build(),
                }
            },
        })
    }

    /// One connection of the pool, in turn.
    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % (self.rest.len() + 1);
        match i.checked_sub(1).and_then(|i| self.rest.get(i)) {
            Some(connection) => connection.clone(),
            None => self.first.clone(),
        }
    }

    /// Runs `work` on the state's runtime: a caller on any thread, in a runtime or not, awaits it.
    fn run<'a, T: Send + 'static>(
        &'a self,
        what: &'static str,
        work: impl Future<Output = Result<T, redis::RedisError>> + Send + 'static,
    ) -> StoreCall<'a, T> {
        let task = self.runtime.spawn(work);
        StoreCall::pending(async move {
            match task.await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e)) => Err(store_error(what, &e)),
                Err(_) => Err(StoreError::new(format!(
                    "redis {what}: the task was stopped"
                ))),
            }
        })
    }

    /// Answers once Redis answers a PING (the readiness probe).
    pub fn ping(&self) -> StoreCall<'_, ()> {
        let mut conn = self.connection();
        self.run("ping", async move {
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
        })
    }

    fn session_key(&self, session: &str) -> String {
        format!("{}:s:{{{session}}}", self.prefix)
    }
}

/// Stripes of the per-session local turn (a power of two).
const STRIPES: usize = 1024;

/// The stripe of `session`.
fn stripe(session: &str) -> usize {
    use std::hash::Hasher;
    // Fixed keys: the same session always hashes to the same stripe.
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(session.as_bytes());
    (hasher.finish() as usize) & (STRIPES - 1)
}

/// Parses a version Redis returned (a decimal string; absent: 0).
fn version(text: Option<&str>) -> Result<u64, StoreError> {
    text.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| StoreError::new("redis: a session's version is not a number"))
    })
}

impl RedisState {
    /// One attempt's commit: the new state (or a check) against `expected`; `Ok(Ok(version))`
    /// when it went through, `Ok(Err(current))` with the session as it is now when it did not.
    async fn commit_one(
        &self,
        key: String,
        expected: u64,
        state: Option<&SessionState>,
    ) -> Result<Result<u64, Versioned>, StoreError> {
        let encoded = match state {
            Some(state) => encode_state(state)?,
            None => Vec::new(),
        };
        let (mut conn, script, ttl) = (self.connection(), Arc::clone(&self.transact), self.ttl_ms);
        let (done, v, s) = self
            .run("commit", async move {
                script
                    .key(key)
                    .arg(ttl)
                    .arg(expected.to_string())
                    .arg(encoded)
                    .invoke_async::<(i64, String, Vec<u8>)>(&mut conn)
                    .await
            })
            .await?;
        let version = version(Some(&v))?;
        if done == 1 {
            return Ok(Ok(version));
        }
        let state = if s.is_empty() {
            SessionState::default()
        } else {
            decode_state(&s)?
        };
        Ok(Err(Versioned { state, version }))
    }
}

impl SessionStore for RedisState {
    fn transact<'a>(
        &'a self,
        _: StoreAccess,
        session: &'a str,
        decide: &'a mut Decide<'_>,
    ) -> StoreCall<'a, ()> {
        StoreCall::pending(async move {
            let key = self.session_key(session);
            // What this instance saw last, or a new session; the commit checks either.
            let mut base = self
                .seen
                .get(session)
                .unwrap_or_else(|| Arc::new(Versioned::default()));
            // A decision that changes nothing needs no turn, only the version check: reads of
            // one session run side by side.
            let mut decided = decide(&base.state).filter(|c| !c.is_noop());
            if decided.is_none() {
                match self.commit_one(key.clone(), base.version, None).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(current)) => base = Arc::new(current),
                    Err(e) => {
                        self.seen.invalidate(session);
                        return Err(e);
                    }
                }
            }
            let _turn = match self.stripes.get(stripe(session)) {
                Some(stripe) => Some(stripe.lock().await),
                None => None,
            };
            // The turn's previous holder may have seen a later version (versions only grow):
            // decide again on it. Otherwise the change decided above still stands on `base`.
            if let Some(seen) = self.seen.get(session)
                && seen.version > base.version
            {
                base = seen;
                decided = None;
            }
            for attempt in 0..TRANSACT_ATTEMPTS {
                let change = match decided.take() {
                    Some(change) if attempt == 0 => Some(change),
                    _ => decide(&base.state).filter(|c| !c.is_noop()),
                };
                let next = change.map(|change| {
                    let mut state = base.state.clone();
                    state.apply(&change);
                    state
                });
                match self
                    .commit_one(key.clone(), base.version, next.as_ref())
                    .await
                {
                    Ok(Ok(version)) => {
                        let state = next.unwrap_or_else(|| base.state.clone());
                        self.seen
                            .insert(session.to_owned(), Arc::new(Versioned { state, version }));
                        return Ok(());
                    }
                    Ok(Err(current)) => base = Arc::new(current),
                    Err(e) => {
                        self.seen.invalidate(session);
                        return Err(e);
                    }
                }
            }
            self.seen.invalidate(session);
            Err(StoreError::new(format!(
                "the session kept changing ({TRANSACT_ATTEMPTS} attempts)"
            )))
        })
    }

    fn load<'a>(&'a self, _: StoreAccess, session: &'a str) -> StoreCall<'a, Versioned> {
        let (mut conn, script, key, ttl) = (
            self.connection(),
            Arc::clone(&self.load),
            self.session_key(session),
            self.ttl_ms,
        );
        let call = self.run("load", async move {
            script
                .key(key)
                .arg(ttl)
                .invoke_async::<(Option<String>, Option<Vec<u8>>)>(&mut conn)
                .await
        });
        StoreCall::pending(async move {
            let (v, s) = call.await?;
            let state = match s {
                Some(bytes) => decode_state(&bytes)?,
                None => SessionState::default(),
            };
            Ok(Versioned {
                state,
                version: version(v.as_deref())?,
            })
        })
    }

    fn commit<'a>(&'a self, _: StoreAccess, writes: &'a [SessionWrite]) -> StoreCall<'a, bool> {
        // The batch moves these sessions' versions: what this instance saw of them is stale.
        for write in writes {
            self.seen.invalidate(&write.session);
        }
        // The invocation borrows the script; the task owns its own copy of both.
        let script = Arc::clone(&self.commit);
        let keys: Vec<String> = writes
            .iter()
            .map(|w| self.session_key(&w.session))
            .collect();
        let mut args: Vec<Vec<u8>> = vec![self.ttl_ms.to_string().into_bytes()];
        for write in writes {
            args.push(write.expected.to_string().into_bytes());
            match &write.state {
                Some(state) => match encode_state(state) {
                    Ok(bytes) => args.push(bytes),
                    Err(e) => return StoreCall::ready(Err(e)),
                },
                None => args.push(Vec::new()),
            }
        }
        let mut conn = self.connection();
        self.run("commit", async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            invocation
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|n| n == 1)
        })
    }

    fn get<'a>(&'a self, session: &'a str) -> StoreCall<'a, Option<SessionState>> {
        let (mut conn, key) = (self.connection(), self.session_key(session));
        let call = self.run("get", async move {
            redis::cmd("HGET")
                .arg(key)
                .arg("s")
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
        });
        StoreCall::pending(async move {
            match call.await? {
                Some(bytes) => decode_state(&bytes).map(Some),
                None => Ok(None),
            }
        })
    }

    fn remove<'a>(&'a self, session: &'a str) -> StoreCall<'a, ()> {
        self.seen.invalidate(session);
        let (mut conn, key) = (self.connection(), self.session_key(session));
        self.run("remove", async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .map(|_| ())
        })
    }

    /// Redis holds the sessions, not this instance: 0 (the daemon's session gauge counts only
    /// embedded sessions).
    fn len(&self) -> usize {
        0
    }
}

impl NonceStore for RedisState {
    fn consume<'a>(&'a self, nonce: &'a str, expires: u64, now: u64) -> StoreCall<'a, bool> {
        let (mut conn, script) = (self.connection(), Arc::clone(&self.consume));
        let key = format!("{}:n:{{{nonce}}}", self.prefix);
        // Kept until it expires by the caller's clock (at least a second).
        let keep = expires.saturating_sub(now).max(1);
        self.run("nonce", async move {
            script
                .key(key)
                .arg(expires)
                .arg(now)
                .arg(keep)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|n| n == 1)
        })
    }
}

/// Expiry times Redis can hold (EXPIREAT takes seconds that fit in milliseconds as an i64);
/// a later one means "no expiry".
const LATEST_EXPIRY: u64 = 1 << 42;

impl CounterStore for RedisState {
    fn add<'a>(
        &'a self,
        key: &'a str,
        window: u64,
        amount: u64,
        expires: u64,
    ) -> StoreCall<'a, u64> {
        let (mut conn, script) = (self.connection(), Arc::clone(&self.add));
        let key = format!("{}:c:{{{key}}}:{window}", self.prefix);
        let expires = if expires > LATEST_EXPIRY { 0 } else { expires };
        self.run("counter", async move {
            script
                .key(key)
                .arg(amount)
                .arg(expires)
                .invoke_async::<u64>(&mut conn)
                .await
        })
    }

    fn get<'a>(&'a self, key: &'a str, window: u64) -> StoreCall<'a, u64> {
        let mut conn = self.connection();
        let key = format!("{}:c:{{{key}}}:{window}", self.prefix);
        self.run("counter", async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .map(Option::unwrap_or_default)
        })
    }

    fn reserve<'a>(&'a self, counters: &'a [Reserve]) -> StoreCall<'a, Option<usize>> {
        let (mut conn, script) = (self.connection(), Arc::clone(&self.reserve));
        let wanted: Vec<(String, u64, u64, u64)> = counters
            .iter()
            .map(|r| {
                let expires = if r.expires > LATEST_EXPIRY {
                    0
                } else {
                    r.expires
                };
                (self.reserved_key(&r.id), r.amount, r.limit, expires)
            })
            .collect();
        self.run("budget", async move {
            let mut invocation = script.prepare_invoke();
            for (key, amount, limit, expires) in wanted {
                invocation.key(key).arg(amount).arg(limit).arg(expires);
            }
            let at = invocation.invoke_async::<usize>(&mut conn).await?;
            Ok(at.checked_sub(1))
        })
    }

    fn adjust<'a>(&'a self, changes: &'a [(CounterId, i64)]) -> StoreCall<'a, ()> {
        let (mut conn, script) = (self.connection(), Arc::clone(&self.adjust));
        let changes: Vec<(String, i64)> = changes
            .iter()
            .map(|(id, delta)| (self.reserved_key(id), *delta))
            .collect();
        self.run("budget", async move {
            let mut invocation = script.prepare_invoke();
            for (key, delta) in changes {
                invocation.key(key).arg(delta);
            }
            invocation.invoke_async::<u64>(&mut conn).await?;
            Ok(())
        })
    }

    fn reserved<'a>(&'a self, id: &'a CounterId) -> StoreCall<'a, u64> {
        let mut conn = self.connection();
        let key = self.reserved_key(id);
        self.run("budget", async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .map(Option::unwrap_or_default)
        })
    }
}

impl RedisState {
    /// `PREFIX:b:{GROUP}:KEY:WINDOW`: the group is the hash tag, so the counters one
    /// reservation touches share a Redis Cluster slot.
    fn reserved_key(&self, id: &CounterId) -> String {
        format!(
            "{}:b:{{{}}}:{}:{}",
            self.prefix, id.group, id.key, id.window
        )
    }
}

/// Writes approval fields if the approvals' version is unchanged, and bumps it.
/// KEYS[1]: the approvals hash. ARGV[1]: the expected version; then pairs of field and value
/// ("" deletes the field). Answers 1 when written, 0 when the version changed.
const APPROVALS_CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'ver') or '0'
if v ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return 1
";

/// Every approval in one Redis hash, `PREFIX:approvals` (fields `id:ID` -> the approval as
/// JSON, `b:BINDING` -> the id bound, `ver` -> a version every write bumps). A change reads what
/// it needs, computes the transition every store shares ([`ask_transition`],
/// [`resolve_transition`]) and writes it only if nothing changed meanwhile (one script), trying
/// again otherwise. Approvals are few (people answer them), so one hash on one slot is enough;
/// `ask` reads the whole hash to count the tenant's pending approvals and drop those past
/// their retention.
impl RedisState {
    fn approvals_key(&self) -> String {
        format!("{}:approvals", self.prefix)
    }

    /// The whole approvals hash: its version and every approval.
    async fn approvals_all(
        &self,
    ) -> Result<(String, std::collections::HashMap<String, String>), StoreError> {
        let (mut conn, key) = (self.connection(), self.approvals_key());
        let mut all = self
            .run("approvals", async move {
                redis::cmd("HGETALL")
                    .arg(key)
                    .query_async::<std::collections::HashMap<String, String>>(&mut conn)
                    .await
            })
            .await?;
        let version = all.remove("ver").unwrap_or_else(|| "0".to_owned());
        Ok((version, all))
    }

    /// Writes `fields` if the version is still `version`.
    async fn approvals_cas(
        &self,
        version: String,
        fields: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        let (mut conn, key, script) = (
            self.connection(),
            self.approvals_key(),
            Arc::clone(&self.approvals_cas),
        );
        self.run("approvals", async move {
            let mut invocation = script.key(key);
            invocation.arg(version);
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
            invocation
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|n| n == 1)
        })
        .await
    }
}

fn decode_approval(text: &str) -> Result<Approval, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::new("redis: an approval is not readable"))
}

fn encode_approval(approval: &Approval) -> Result<String, StoreError> {
    serde_json::to_string(approval).map_err(|_| StoreError::new("redis: cannot encode an approval"))
}

impl ApprovalStore for RedisState {
    fn ask<'a>(&'a self, _access: StoreAccess, ask: &'a Ask) -> StoreCall<'a, Asked> {
        StoreCall::pending(async move {
            let binding_field = format!("b:{}", ask.binding.key());
            for _ in 0..TRANSACT_ATTEMPTS {
                let (version, all) = self.approvals_all().await?;
                let mut writes = Vec::new();
                let mut approvals = Vec::new();
                for (field, value) in &all {
                    if let Some(id) = field.strip_prefix("id:") {
                        let approval = decode_approval(value)?;
                        if approval.expires_ms.saturating_add(APPROVAL_RETENTION_MS) <= ask.now_ms {
                            // Past its retention: forgotten (its binding with it, below).
                            writes.push((field.clone(), String::new()));
                        } else {
                            approvals.push((id.to_owned(), approval));
                        }
                    }
                }
                for (field, value) in &all {
                    if field.starts_with("b:") && !approvals.iter().any(|(id, _)| id == value) {
                        writes.push((field.clone(), String::new()));
                    }
                }
                let current = all
                    .get(&binding_field)
                    .and_then(|id| approvals.iter().find(|(i, _)| i == id))
                    .map(|(_, a)| a);
                let tenant = ask.binding.tenant.as_deref();
                let pending = approvals
                    .iter()
                    .filter(|(_, a)| {
                        a.binding.tenant.as_deref() == tenant
                            && !a.spent
                            && a.status_at(ask.now_ms) == ApprovalStatus::Pending
                    })
                    .count();
                let (asked, write) = ask_transition(current, ask, pending);
                if let Some(write) = write {
                    writes.retain(|(field, _)| *field != binding_field);
                    writes.push((binding_field.clone(), write.id.clone()));
                    writes.push((format!("id:{}", write.id), encode_approval(&write)?));
                }
                if writes.is_empty() || self.approvals_cas(version, writes).await? {
                    return Ok(asked);
                }
            }
            Err(StoreError::new(format!(
                "the approvals kept changing ({TRANSACT_ATTEMPTS} attempts)"
            )))
        })
    }

    fn get<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreCall<'a, Option<Approval>> {
        let (mut conn, key, field) = (self.connection(), self.approvals_key(), format!("id:{id}"));
        let found = self.run("approvals", async move {
            redis::cmd("HGET")
                .arg(key)
                .arg(field)
                .query_async::<Option<String>>(&mut conn)
                .await
        });
        StoreCall::pending(async move {
            found
                .await?
                .map(|text| decode_approval(&text).map(|a| a.at(now_ms)))
                .transpose()
        })
    }

    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
        pending_only: bool,
        now_ms: u64,
        limit: usize,
    ) -> StoreCall<'a, Vec<Approval>> {
        StoreCall::pending(async move {
            let (_, all) = self.approvals_all().await?;
            let mut found = Vec::new();
            for (field, value) in &all {
                if !field.starts_with("id:") {
                    continue;
                }
                let approval = decode_approval(value)?.at(now_ms);
                if tenant.is_some_and(|t| approval.binding.tenant.as_deref() != Some(t)) {
                    continue;
                }
                if pending_only && (approval.status != ApprovalStatus::Pending || approval.spent) {
                    continue;
                }
                found.push(approval);
            }
            found.sort_by(|a, b| (a.requested_ms, &a.id).cmp(&(b.requested_ms, &b.id)));
            found.truncate(limit);
            Ok(found)
        })
    }

    fn resolve<'a>(&'a self, id: &'a str, resolution: &'a Resolution) -> StoreCall<'a, Resolved> {
        StoreCall::pending(async move {
            let field = format!("id:{id}");
            for _ in 0..TRANSACT_ATTEMPTS {
                let (mut conn, key) = (self.connection(), self.approvals_key());
                let read = field.clone();
                let (version, current) = self
                    .run("approvals", async move {
                        redis::cmd("HMGET")
                            .arg(key)
                            .arg("ver")
                            .arg(read)
                            .query_async::<(Option<String>, Option<String>)>(&mut conn)
                            .await
                    })
                    .await?;
                let Some(current) = current else {
                    return Ok(Resolved::NotFound);
                };
                let (resolved, write) = resolve_transition(&decode_approval(&current)?, resolution);
                let Some(write) = write else {
                    return Ok(resolved);
                };
                let writes = vec![(field.clone(), encode_approval(&write)?)];
                if self
                    .approvals_cas(version.unwrap_or_else(|| "0".to_owned()), writes)
                    .await?
                {
                    return Ok(resolved);
                }
            }
            Err(StoreError::new(format!(
                "the approvals kept changing ({TRANSACT_ATTEMPTS} attempts)"
            )))
        })
    }
}
