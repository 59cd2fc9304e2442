//! Warden's HTTP decision daemon: the axum API (`/v1/decide`, `/v1/decide/batch`, the OPA Data
//! API, `/v1/policies`, health and metrics), API-key auth, rate and concurrency limits, body and
//! time limits, panic isolation, JSON logs, Prometheus metrics, hot reload and graceful shutdown.
//!
//! [`run`] is the composition root; [`router`] builds the [`axum::Router`] alone so tests can
//! drive it with `tower::ServiceExt::oneshot`. `docs/serve.md` documents the behaviour.

#![forbid(unsafe_code)]

mod approvals;
pub mod audit;
mod auth;
mod auth_events;
mod authzen;
mod body;
pub mod budget;
pub mod capture;
pub mod config;
mod console;
mod effects;
pub mod env;
pub mod envoy;
pub mod error;
mod fast;
mod grpc;
mod handlers;
mod inline;
mod keyfile;
pub mod listen;
pub mod llm;
mod lockout;
mod logbuf;
pub mod mcp;
pub mod metrics;
mod middleware;
mod opa;
mod opa_manage;
pub mod overlay;
mod run;
pub mod signing;
pub mod snapshot;
pub mod telemetry;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use warden::state::{CounterStore, KeyStore, MemoryNonceStore, NonceStore};
use warden_core::Pipeline;
use warden_store::{Database, EmbeddedSessionStore, FileKeyStore, RedisOptions, RedisState};

pub use config::{ConfigError, MAX_WORKERS, RateLimit, ServeConfig, StateFailMode, StateMode};
pub use error::ApiError;
pub use fast::App;
/// The gRPC messages and the service's client and server, generated from
/// `proto/warden/v1/decision.proto` (docs/serve.md, "gRPC").
pub use grpc::proto as grpc_proto;
pub use logbuf::LogGuard;
pub use metrics::Metrics;
pub use run::{ServeError, ServeOptions, init_logging, init_logging_buffered, run};
pub use snapshot::{LoadedPolicy, PolicyKind, Snapshot, SnapshotError};

/// The idle TTL of sessions (`session_ttl_secs`; 0: none).
fn session_ttl(config: &ServeConfig) -> Option<std::time::Duration> {
    (config.session_ttl_secs > 0).then(|| std::time::Duration::from_secs(config.session_ttl_secs))
}

/// Shared state of the daemon; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

struct Inner {
    snapshot: ArcSwap<Snapshot>,
    /// The embedded session store: the sessions, unless they are shared (then empty).
    store: Arc<EmbeddedSessionStore>,
    /// The shared state (`redis_url`): sessions and token ids, for every instance.
    shared: Option<Arc<RedisState>>,
    /// Where the API keys are: the key file, or PostgreSQL (`database_url`).
    keys: Arc<dyn KeyStore>,
    /// PostgreSQL, when `database_url` is set.
    database: Option<Arc<Database>>,
    /// Every decision goes through it; it owns the metrics, the signing key and the audit log
    /// (its effects).
    pipeline: Pipeline<effects::ServerEffects>,
    limiter: Option<auth::RateLimiter>,
    /// Brute-force protection (`auth_failures`).
    lockout: Option<lockout::Lockout>,
    /// Authentication events to PostgreSQL, when `database_url` is set.
    auth_events: Option<auth_events::AuthEvents>,
    concurrency: Semaphore,
    config: ServeConfig,
    config_path: Option<PathBuf>,
    ready: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
    /// Counts the policy set's swaps (gRPC `WatchPolicy` waits on it).
    generation: tokio::sync::watch::Sender<u64>,
    /// Follows `ready` for the gRPC health service's `Watch`.
    readiness: tokio::sync::watch::Sender<bool>,
    /// `anonymous_policy` from the command line, kept over the file's at reload.
    anonymous_override: parking_lot::RwLock<Option<String>>,
    /// Counters of the Envoy chains' rate limits (Redis when shared, else in memory).
    counters: Arc<dyn CounterStore>,
    /// The Envoy processor, once `run` started it (reloaded with the rest).
    envoy: std::sync::OnceLock<warden_envoy::EnvoyServer>,
    /// The Envoy section as served (JSON), to tell a reload that changed it; written only
    /// under `reload_lock`.
    envoy_served: parking_lot::Mutex<Option<serde_json::Value>>,
    /// Usage of the policies' LLM budgets (the LLM door's).
    pub(crate) budgets: budget::Ledger,
    /// The database's change marker as it was before the first load (taken by the periodic
    /// change check).
    start_marker: parking_lot::Mutex<Option<String>>,
    /// The changes made to Rego policies through OPA's policy and data API, re-applied at every
    /// reload; written only under `reload_lock`.
    overlays: parking_lot::Mutex<overlay::Overlays>,
    /// The console at `/ui`, unless `console.enabled` is false.
    console: Option<console::Console>,
    /// The MCP mounts' tool pins, once the routes made them: the console reviews and approves
    /// held definitions in the very store the mounts check (in memory with `state: memory`).
    mcp_pins: std::sync::OnceLock<Arc<dyn warden_mcp::PinStore>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("policies", &self.snapshot.load().policies.len())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Connects the shared state when `redis_url` (or `WARDEN_REDIS_URL`) names one, opens the
    /// embedded store otherwise, and loads the policy set. `config_path` is re-read on reload.
    pub async fn open(
        mut config: ServeConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Self, ServeError> {
        config.urls_from_env();
        let database = match connect_database(&config).await? {
            Some(database) => {
                database
                    .check_schema()
                    .await
                    .map_err(|e| ServeError::Store(e.to_string()))?;
                Some(Arc::new(database))
            }
            None => None,
        };
        let shared = match &config.redis_url {
            Some(url) => {
                let options = RedisOptions {
                    prefix: config.redis_prefix.clone(),
                    session_ttl: session_ttl(&config),
                    response_timeout: std::time::Duration::from_millis(
                        config.redis_timeout_ms.max(1),
                    ),
                    ..RedisOptions::default()
                };
                let state = RedisState::connect(&url.0, options)
                    .await
                    .map_err(|e| ServeError::Store(e.to_string()))?;
                Some(Arc::new(state))
            }
            None => None,
        };
        tokio::task::spawn_blocking(move || Self::build(config, config_path, shared, database))
            .await
            .map_err(|e| ServeError::Io(e.to_string()))?
    }

    /// [`Self::open`] for embedded state only (no runtime needed): a configuration naming Redis
    /// is refused, since connecting to it is asynchronous.
    pub fn new(config: ServeConfig, config_path: Option<PathBuf>) -> Result<Self, ServeError> {
        if config.redis_url.is_some() || config.database_url.is_some() {
            return Err(ServeError::Store(
                "redis_url or database_url is set: open the daemon's state with AppState::open"
                    .to_owned(),
            ));
        }
        Self::build(config, config_path, None, None)
    }

    fn build(
        config: ServeConfig,
        config_path: Option<PathBuf>,
        shared: Option<Arc<RedisState>>,
        database: Option<Arc<Database>>,
    ) -> Result<Self, ServeError> {
        let keys: Arc<dyn KeyStore> = match &database {
            Some(database) => Arc::clone(database) as _,
            None => Arc::new(FileKeyStore::new(&config.keys_file)),
        };
        let ttl = session_ttl(&config);
        let store = match (config.state, &shared) {
            (StateMode::Memory, _) | (_, Some(_)) => EmbeddedSessionStore::memory(ttl),
            (StateMode::File, None) => EmbeddedSessionStore::open(&config.state_file, ttl)
                .map_err(|e| ServeError::Store(e.to_string()))?,
        }
        .with_max_sessions(config.max_sessions);
        let store = Arc::new(store);
        let (sessions, nonces): (Arc<dyn warden::SessionStore>, Arc<dyn NonceStore>) = match &shared
        {
            Some(shared) => (Arc::clone(shared) as _, Arc::clone(shared) as _),
            None => (
                Arc::clone(&store) as _,
                Arc::new(MemoryNonceStore::default()),
            ),
        };
        let mut metrics = Metrics::new();
        metrics.register_store(Arc::clone(&store));
        // Read before what it marks is loaded: a change made between the load and the periodic
        // check's first look is seen as a change, not taken for the starting state.
        let start_marker = database
            .as_deref()
            .and_then(|database| database.change_marker().wait().ok());
        let stored = stored_policies(database.as_deref()).map_err(ServeError::Load)?;
        let snapshot = Snapshot::load(&config, &*keys, &stored, &overlay::Overlays::new(), None)
            .map_err(|e| ServeError::Load(e.0))?;
        let signing = config
            .signing_key
            .as_deref()
            .map(|path| signing::load_signing(path, config.token_ttl, nonces))
            .transpose()
            .map_err(ServeError::Keys)?;
        let audit = config
            .audit
            .as_ref()
            .map(|a| audit::open_audit(a, signing.as_ref()))
            .transpose()
            .map_err(ServeError::Keys)?;
        let limiter = auth::RateLimiter::new(
            config.rate_limit,
            shared
                .as_ref()
                .map(|s| Arc::clone(s) as Arc<dyn CounterStore>),
        );
        let failure_counters: Arc<dyn CounterStore> = match &shared {
            Some(shared) => Arc::clone(shared) as _,
            None => Arc::new(warden::state::MemoryCounterStore::new(100_000)),
        };
        let lockout = lockout::Lockout::new(config.auth_failures, Arc::clone(&failure_counters));
        // A runtime is there whenever a database is (`open` connected it on one).
        let auth_events = database.as_ref().map(|database| {
            auth_events::AuthEvents::start(
                Arc::clone(database),
                metrics.auth_events_dropped.clone(),
            )
        });
        let telemetry = telemetry::Telemetry::start(&config.telemetry).map_err(ServeError::Keys)?;
        let capture = config
            .capture
            .as_ref()
            .map(|c| capture::Capture::start(c, metrics.capture_dropped.clone()))
            .transpose()
            .map_err(ServeError::Load)?;
        config.console.check().map_err(ServeError::Load)?;
        let console = console::Console::new(config.console);
        let effects = effects::ServerEffects {
            live: console.as_ref().map(console::Console::live),
            metrics,
            signing,
            audit,
            decision_log: config.decision_log,
            telemetry,
            capture,
        };
        let on_failure = match config.state_fail_mode {
            StateFailMode::Closed => warden::OnStoreFailure::Refuse,
            StateFailMode::Open => warden::OnStoreFailure::DecideWithoutSession,
        };
        config
            .approvals
            .check(config.request_timeout_ms)
            .map_err(ServeError::Load)?;
        let approvals: Arc<dyn warden::state::ApprovalStore> = match &shared {
            Some(shared) => Arc::clone(shared) as _,
            None => Arc::new(warden::state::MemoryApprovalStore::new()),
        };
        let pipeline = Pipeline::new(snapshot.policy_set(), sessions, effects)
            .with_store_failure(on_failure)
            .with_approvals(
                approvals,
                warden::pipeline::ApprovalSettings {
                    ttl_ms: config.approvals.ttl_ms,
                    max_pending_per_tenant: config.approvals.max_pending_per_tenant,
                },
            );
        if let Some(console) = &console {
            console.live().set_displays(snapshot.displays());
        }
        Ok(Self(Arc::new(Inner {
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            shared,
            keys,
            database,
            pipeline,
            limiter,
            lockout,
            auth_events,
            concurrency: Semaphore::new(config.max_concurrency.max(1)),
            envoy_served: parking_lot::Mutex::new(
                config
                    .envoy
                    .as_ref()
                    .and_then(|e| serde_json::to_value(e).ok()),
            ),
            config,
            config_path,
            ready: AtomicBool::new(true),
            reload_lock: tokio::sync::Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(0),
            readiness: tokio::sync::watch::Sender::new(true),
            anonymous_override: parking_lot::RwLock::new(None),
            counters: Arc::clone(&failure_counters),
            envoy: std::sync::OnceLock::new(),
            budgets: budget::Ledger::new(Arc::clone(&failure_counters)),
            start_marker: parking_lot::Mutex::new(start_marker),
            overlays: parking_lot::Mutex::new(overlay::Overlays::new()),
            console,
            mcp_pins: std::sync::OnceLock::new(),
        })))
    }

    /// Keeps `anonymous_policy` (given on the command line) over the configuration file's at
    /// every reload; `None`: the file's value applies.
    #[must_use]
    pub fn with_anonymous_override(self, anonymous_policy: Option<String>) -> Self {
        *self.0.anonymous_override.write() = anonymous_policy;
        self
    }

    /// Writes and syncs the audit entries queued so far and checkpoints the head (at shutdown);
    /// returns the head, `None` without an audit log or when that failed (logged).
    pub fn flush_audit(&self) -> Option<warden_audit::Anchor> {
        self.effects().audit.as_ref().and_then(audit::Audit::flush)
    }

    /// Sends the trace spans still queued (at shutdown), when traces are on.
    pub fn flush_telemetry(&self) {
        if let Some(telemetry) = &self.effects().telemetry {
            telemetry.shutdown();
        }
    }

    /// Traces, when `telemetry.otlp_endpoint` is set.
    pub(crate) fn telemetry(&self) -> Option<&telemetry::Telemetry> {
        self.effects().telemetry.as_ref()
    }

    /// The current policy set.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot.load_full()
    }

    /// The session store.
    pub fn store(&self) -> &Arc<EmbeddedSessionStore> {
        &self.0.store
    }

    /// The console, unless disabled.
    pub(crate) fn console(&self) -> Option<&console::Console> {
        self.0.console.as_ref()
    }

    /// The MCP mounts' tool pins (`None` until the routes are built, or with nothing mounted).
    pub(crate) fn mcp_pins(&self) -> Option<&Arc<dyn warden_mcp::PinStore>> {
        self.0.mcp_pins.get()
    }

    /// The MCP mounts' tool pins, made by `make` the first time: every router built from this
    /// state (and the console) shares one store.
    pub(crate) fn mcp_pins_or_init(
        &self,
        make: impl FnOnce() -> Result<Arc<dyn warden_mcp::PinStore>, String>,
    ) -> Result<Arc<dyn warden_mcp::PinStore>, String> {
        if let Some(pins) = self.0.mcp_pins.get() {
            return Ok(Arc::clone(pins));
        }
        let made = make()?;
        // Two routers built at once: the first store set wins and both use it.
        Ok(Arc::clone(self.0.mcp_pins.get_or_init(|| made)))
    }

    /// The database's change marker read before the first load, once.
    pub(crate) fn take_start_marker(&self) -> Option<String> {
        self.0.start_marker.lock().take()
    }

    /// PostgreSQL, when `database_url` is set.
    pub fn database(&self) -> Option<&Arc<Database>> {
        self.0.database.as_ref()
    }

    /// The shared state, when `redis_url` is set.
    pub fn shared(&self) -> Option<&Arc<RedisState>> {
        self.0.shared.as_ref()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.effects().metrics
    }

    /// The decision pipeline: every decision of every route goes through it.
    pub(crate) fn pipeline(&self) -> &Pipeline<effects::ServerEffects> {
        &self.0.pipeline
    }

    /// The effects of a decision: metrics, signing key, audit log.
    pub(crate) fn effects(&self) -> &effects::ServerEffects {
        self.0.pipeline.effects()
    }

    /// The configuration the daemon started with.
    pub fn config(&self) -> &ServeConfig {
        &self.0.config
    }

    /// True while serving: started, not shutting down, and at least one policy loaded.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire) && !self.0.snapshot.load().policies.is_empty()
    }

    /// Follows the policy set's swaps: the value counts them since start.
    pub(crate) fn policy_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.generation.subscribe()
    }

    /// Marks the daemon as (not) ready; shutdown clears it first.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Release);
        self.0.readiness.send_replace(ready);
    }

    /// Follows readiness ([`Self::set_ready`]).
    pub(crate) fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.readiness.subscribe()
    }

    /// Re-reads the configuration file (when there is one), the policies, the keys and the
    /// signing key file, validates the whole set and swaps it in; on error the old set (and
    /// the old signing key) stays. A signing key with a new `kid` rotates: new tokens are signed
    /// with it and the old public key stays published until its last token has expired.
    /// Counted in `warden_reload_total{result}` and logged (never with key material).
    pub async fn reload(&self) -> Result<(), String> {
        let _guard = self.0.reload_lock.lock().await;
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || state.load_next())
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r);
        match result {
            Ok((next, key, envoy)) => {
                // A change that cannot be audited is not made.
                let envoy = envoy.filter(|_| self.0.envoy.get().is_some());
                let envoy_json = envoy
                    .as_ref()
                    .and_then(|(e, _)| serde_json::to_value(e).ok());
                if let Some((changed, served)) = self.changes(&next, envoy_json.as_ref())
                    && let Err(_refused) =
                        audit::audit_config_change(self.effects().audit.as_ref(), changed, &served)
                            .await
                {
                    self.metrics().reload(false);
                    // The cause is logged where the log refused the entry.
                    tracing::error!("reload refused: its audit entry could not be written");
                    return Err("the audit log cannot take the reload's entry".to_owned());
                }
                // Compiled (and checked) in `load_next`, off the runtime.
                if let (Some(server), Some((_, chains))) = (self.0.envoy.get(), envoy) {
                    server.install(chains);
                }
                let policies = next.policies.len();
                if envoy_json.is_some() {
                    *self.0.envoy_served.lock() = envoy_json;
                }
                self.install(next);
                if let (Some(signing), Some(key)) = (&self.effects().signing, key) {
                    signing.rotate_to(key, signing::unix_now());
                }
                self.metrics().reload(true);
                tracing::info!(policies, "reloaded");
                Ok(())
            }
            Err(message) => {
                self.metrics().reload(false);
                tracing::error!(
                    error = %message,
                    "reload failed; keeping the previous policy set and signing key"
                );
                Err(message)
            }
        }
    }

    /// What a reload to `next` (and `envoy`, the Envoy section to serve, as JSON) changes of
    /// what is served: `policies a, b; envoy` and the digests and section now served; None when
    /// nothing changed.
    fn changes(
        &self,
        next: &Snapshot,
        envoy: Option<&serde_json::Value>,
    ) -> Option<(String, serde_json::Value)> {
        let previous = self.0.snapshot.load();
        let digests = |s: &Snapshot| {
            s.policies
                .iter()
                .map(|(name, p)| (name.to_string(), p.digest.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (before, after) = (digests(&previous), digests(next));
        let mut names: Vec<&str> = before
            .keys()
            .chain(after.keys())
            .filter(|n| before.get(*n) != after.get(*n))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        let envoy_changed = envoy.is_some_and(|e| self.0.envoy_served.lock().as_ref() != Some(e));
        let mut changed = Vec::new();
        if !names.is_empty() {
            changed.push(format!("policies {}", names.join(", ")));
        }
        if envoy_changed {
            changed.push("envoy".to_owned());
        }
        if changed.is_empty() {
            return None;
        }
        let served = serde_json::json!({ "policies": after, "envoy": envoy });
        Some((changed.join("; "), served))
    }

    /// Swaps `next` in: the pipeline's policies, the snapshot, and the generation watchers
    /// (gRPC `WatchPolicy`) are told.
    fn install(&self, next: Snapshot) {
        self.0.pipeline.swap_policies(next.policy_set());
        if let Some(console) = &self.0.console {
            console.live().set_displays(next.displays());
        }
        self.0.snapshot.store(Arc::new(next));
        self.0.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Changes the Rego policy `policy` through OPA's policy and data API: `change` says what
    /// to change given the policy's current sources; the policy is compiled with it (a policy
    /// that does not compile is refused and nothing changes), swapped in, and the change kept
    /// so that later reloads apply it to whatever the files then hold. Serialised with reloads.
    /// Answers the policy as now served.
    pub(crate) async fn change_rego(
        &self,
        policy: &str,
        change: impl FnOnce(&overlay::RegoSources) -> Result<overlay::Change, overlay::ChangeError>,
    ) -> Result<Arc<LoadedPolicy>, overlay::ChangeFailure> {
        use overlay::ChangeFailure;
        let _guard = self.0.reload_lock.lock().await;
        let current = self.snapshot();
        let loaded = current
            .policies
            .get(policy)
            .ok_or_else(|| ChangeFailure::NoPolicy(policy.to_owned()))?;
        let PolicyKind::Rego(_, sources) = &loaded.kind else {
            return Err(ChangeFailure::NotRego(policy.to_owned()));
        };
        let change = change(sources)?;
        let mut next_sources = overlay::RegoSources::clone(sources);
        change.apply(&mut next_sources)?;
        let mut overlays = self.0.overlays.lock().clone();
        overlays
            .entry(Arc::clone(&loaded.name))
            .or_default()
            .record(change)?;
        let compiled = tokio::task::spawn_blocking(move || {
            snapshot::compile_rego(&next_sources).map(|(p, d)| (p, d, next_sources))
        })
        .await
        .map_err(|e| {
            ChangeFailure::Change(overlay::ChangeError::Invalid(format!(
                "the policy could not be compiled: {e}"
            )))
        })?;
        let (rego, digest, next_sources) = compiled?;
        let changed = Arc::new(loaded.with_rego(rego, digest, next_sources));
        self.install(current.with_policy(Arc::clone(&changed)));
        *self.0.overlays.lock() = overlays;
        tracing::info!(policy = %changed.name, digest = %changed.digest, "policy changed through the API");
        Ok(changed)
    }

    fn load_next(&self) -> Result<NextLoad, String> {
        let mut config = match &self.0.config_path {
            // As at start: the file, then the `WARDEN_*` variables over it.
            Some(path) => ServeConfig::resolve(Some(path), std::env::vars())
                .map(|(config, _)| config)
                .map_err(|e| e.to_string())?,
            None => self.0.config.clone(),
        };
        if self.0.config_path.is_some() {
            // Only policies, keys and the anonymous policy reload; the rest needs a restart.
            let started = &self.0.config;
            config.policies.clone_from(&started.policies);
            config.keys_file.clone_from(&started.keys_file);
            if let Some(anonymous) = self.0.anonymous_override.read().as_ref() {
                config.anonymous_policy = Some(anonymous.clone());
            }
        }
        let previous = self.0.snapshot.load_full();
        let stored = stored_policies(self.0.database.as_deref())?;
        let overlays = self.0.overlays.lock().clone();
        let snapshot = Snapshot::load(&config, &*self.0.keys, &stored, &overlays, Some(&previous))
            .map_err(|e| e.0)?;
        // The file named at start is re-read; changing `signing_key` itself needs a restart.
        let key = self
            .effects()
            .signing
            .as_ref()
            .map(signing::Signing::read_key)
            .transpose()?;
        // The Envoy routes and chains reload with the policies (the listener itself needs a
        // restart); validated here, before anything is swapped.
        let envoy = match config.envoy.take() {
            Some(envoy) => {
                let chains = envoy::check(&envoy, &snapshot, self.effects().audit.is_some())?;
                Some((envoy, chains))
            }
            None => None,
        };
        Ok((snapshot, key, envoy))
    }
}

/// What a reload loads before anything is swapped: the policy set, the signing key (when one is
/// configured) and the Envoy section with its chains compiled.
type NextLoad = (
    Snapshot,
    Option<warden_proof::Ed25519Key>,
    Option<(warden_envoy::EnvoyConfig, warden_envoy::Chains)>,
);

/// Connects to the PostgreSQL database `config` names (none without `database_url`), with
/// `database_integrity_key` applied. Must be called on a Tokio runtime.
pub async fn connect_database(config: &ServeConfig) -> Result<Option<Database>, ServeError> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    let integrity = config
        .database_integrity_key
        .as_deref()
        .map(|path| {
            let text = keyfile::read_secret_file("database_integrity_key", path)?;
            warden_proof::MacKey::from_hex(&text.into())
                .map_err(|e| format!("database_integrity_key `{}`: {e}", path.display()))
        })
        .transpose()
        .map_err(ServeError::Load)?;
    let database = Database::connect(&url.0)
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    Ok(Some(match integrity {
        Some(key) => database.with_integrity_key(key),
        None => database,
    }))
}

/// The active policies and the tenants in the database, when there is one (parks the calling
/// thread: call it off the runtime's workers).
fn stored_policies(database: Option<&Database>) -> Result<snapshot::Stored, String> {
    let Some(database) = database else {
        return Ok(snapshot::Stored::default());
    };
    Ok(snapshot::Stored {
        policies: database
            .active_policies()
            .wait()
            .map_err(|e| e.to_string())?,
        tenants: database.tenants().wait().map_err(|e| e.to_string())?,
    })
}

/// The API routes (`/v1/*`), each behind the guard (readiness, API key, rate limit, concurrency
/// limit, timeout): the one table both the router and the test of the guard read.
/// `POST /v1/decide` is also served by the fast path ([`fast`]), through the same guard.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/decide"),
    ("POST", "/v1/decide/batch"),
    ("POST", "/v1/data/{*path}"),
    ("GET", "/v1/data/{*path}"),
    ("PUT", "/v1/data/{*path}"),
    ("PATCH", "/v1/data/{*path}"),
    ("DELETE", "/v1/data/{*path}"),
    ("POST", "/v1/data"),
    ("GET", "/v1/data"),
    ("PUT", "/v1/data"),
    ("PATCH", "/v1/data"),
    ("DELETE", "/v1/data"),
    ("POST", "/v1/batch/data/{*path}"),
    ("POST", "/v1/query"),
    ("GET", "/v1/query"),
    ("POST", "/"),
    ("GET", "/v1/policies"),
    ("GET", "/v1/policies/"),
    ("GET", "/v1/policies/{*id}"),
    ("PUT", "/v1/policies/{*id}"),
    ("DELETE", "/v1/policies/{*id}"),
    ("GET", "/v1/config"),
    ("GET", "/v1/status"),
    ("POST", "/v1/compile"),
    ("POST", "/v1/tokens/verify"),
    ("GET", "/v1/audit/checkpoint"),
    ("POST", authzen::EVALUATION_PATH),
    ("POST", authzen::EVALUATIONS_PATH),
    ("GET", "/v1/approvals"),
    ("GET", "/v1/approvals/{id}"),
    ("POST", "/v1/approvals/{id}/approve"),
    ("POST", "/v1/approvals/{id}/deny"),
];

/// The handler of an [`API_ROUTES`] entry.
fn api_handler(path: &str) -> Option<axum::routing::MethodRouter<AppState>> {
    Some(match path {
        "/v1/decide" => post(handlers::decide),
        "/v1/decide/batch" => post(handlers::decide_batch),
        // OPA's clients may gzip their bodies (`Content-Encoding: gzip`); the body limit
        // applies to what the body inflates to.
        "/v1/data/{*path}" | "/v1/data" => post(opa::data_post)
            .get(opa::data_get)
            .put(opa_manage::data_put)
            .patch(opa_manage::data_patch)
            .delete(opa_manage::data_delete)
            .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        "/v1/query" => post(opa::query_post)
            .get(opa::query_get)
            .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        "/v1/config" => get(opa::config),
        "/v1/status" => get(opa::status),
        "/v1/compile" => post(opa::compile),
        "/v1/batch/data/{*path}" => {
            post(opa::batch).layer(tower_http::decompression::RequestDecompressionLayer::new())
        }
        "/" => post(opa::default_decision)
            .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        // OPA's Python client checks its connection with `GET /v1/policies/`.
        "/v1/policies" | "/v1/policies/" => get(opa_manage::list),
        "/v1/policies/{*id}" => get(opa_manage::show)
            .put(opa_manage::put)
            .delete(opa_manage::delete),
        "/v1/tokens/verify" => post(signing::verify),
        "/v1/audit/checkpoint" => get(audit::checkpoint),
        authzen::EVALUATION_PATH => post(authzen::evaluation),
        authzen::EVALUATIONS_PATH => post(authzen::evaluations),
        "/v1/approvals" => get(approvals::list),
        "/v1/approvals/{id}" => get(approvals::show),
        "/v1/approvals/{id}/approve" => post(approvals::approve),
        "/v1/approvals/{id}/deny" => post(approvals::deny),
        _ => return None,
    })
}

/// The API routes with every layer.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes under the same layers (for tests of the layers themselves).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    use axum::middleware::from_fn_with_state;
    // A path listed for two methods has one handler serving both: routed once.
    let mut paths: Vec<&str> = API_ROUTES.iter().map(|(_, path)| *path).collect();
    paths.sort_unstable();
    paths.dedup();
    let api = paths
        .into_iter()
        .filter_map(|path| api_handler(path).map(|handler| (path, handler)))
        .fold(Router::new(), |api, (path, handler)| {
            api.route(path, handler)
        })
        .merge(extra)
        .merge(mcp::routes(&state))
        .route_layer(from_fn_with_state(state.clone(), middleware::api));
    Router::new()
        .merge(api)
        // Admitted by their own handler: an exchange's time limit is the mount's, not
        // `request_timeout_ms`.
        .merge(llm::routes(&state))
        // Authenticated by the console's own login (a cookie), not by an API key header.
        .merge(console::routes(&state))
        .route("/health/live", get(handlers::live))
        .route("/health/ready", get(handlers::ready))
        .route("/health", get(opa::health))
        .route("/metrics", get(handlers::metrics))
        .route("/.well-known/jwks.json", get(signing::jwks))
        .route(authzen::CONFIGURATION_PATH, get(authzen::configuration))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .layer(axum::middleware::from_fn(opa::opa_errors))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// A route in the table without a handler would be left out of the router unseen.
    #[test]
    fn every_api_route_has_a_handler() {
        for (_, path) in super::API_ROUTES {
            assert!(super::api_handler(path).is_some(), "{path}");
        }
    }
}
