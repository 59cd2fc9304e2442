//! The composition root: logging, listener, reload triggers, graceful shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use warden::SessionStore as _;

use crate::logbuf::LogGuard;
use crate::{AppState, ServeConfig, StateMode};

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The configuration.
    pub config: ServeConfig,
    /// The configuration file, re-read on reload.
    pub config_path: Option<PathBuf>,
    /// Where to write the bound address (`host:port`) once listening.
    pub port_file: Option<PathBuf>,
    /// An `anonymous_policy` given on the command line: it wins over the configuration file's
    /// at start and at every reload (a reload must not drop the anonymous policy the daemon
    /// was started with).
    pub anonymous_policy_override: Option<String>,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policies or keys could not be loaded.
    #[error("cannot load the policy set: {0}")]
    Load(String),
    /// The session store could not be opened.
    #[error("cannot open the session store: {0}")]
    Store(String),
    /// The signing key, the audit key or the audit directory could not be loaded.
    #[error("{0}")]
    Keys(String),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(String),
    /// Stopped with changed sessions that the session database could not take.
    #[error("{0}")]
    SessionsNotPersisted(String),
}

/// Installs the JSON log subscriber (stderr); `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Like [`init_logging`], but lines are buffered and written to stderr by a background thread
/// every 20 ms (see `logbuf`), so a request never waits for a `write` system call. Hold the
/// guard until exit: dropping it writes out what is pending.
pub fn init_logging_buffered(default_filter: &str) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = crate::logbuf::batch_writer();
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}

/// Runs the daemon until SIGTERM or SIGINT, then drains in-flight requests (up to the grace
/// period) and flushes the sessions.
pub async fn run(options: ServeOptions) -> Result<(), ServeError> {
    let config = options.config.clone();
    let state = AppState::open(config.clone(), options.config_path.clone())
        .await?
        .with_anonymous_override(options.anonymous_policy_override.clone());
    crate::mcp::check(&state).map_err(ServeError::Load)?;
    crate::llm::check(&state).map_err(ServeError::Load)?;
    // Keys and policies in PostgreSQL: any instance's change reloads this one's at once, and
    // a periodic check catches a change whose notification was lost.
    if let Some(database) = state.database() {
        let listener = state.clone();
        database.listen(Arc::new(move || {
            let state = listener.clone();
            tokio::spawn(async move {
                if let Err(e) = state.reload().await {
                    tracing::warn!(error = %e, "reload after a database change failed; keeping what is loaded");
                }
            });
        }));
        let every = config.database_refresh_secs;
        if every > 0 {
            let (state, database) = (state.clone(), Arc::clone(database));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(every));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last = state.take_start_marker();
                loop {
                    tick.tick().await;
                    let Ok(marker) = database.change_marker().await else {
                        continue;
                    };
                    if last.as_ref().is_some_and(|l| *l != marker) {
                        tracing::info!("database changed without a notification; reloading");
                        if let Err(e) = state.reload().await {
                            tracing::warn!(error = %e, "reload after a database change failed");
                        }
                    }
                    last = Some(marker);
                }
            });
        }
    }
    let mut flusher = state
        .store()
        .spawn_flusher(Duration::from_millis(config.flush_interval_ms.max(1)))
        .map_err(|e| ServeError::Store(e.to_string()))?;
    // TLS files are read before listening: a certificate that does not load is a configuration
    // mistake, said at once.
    let tls = match &config.tls {
        Some(settings) => {
            let tls = crate::tls::Tls::load(settings).map_err(ServeError::Load)?;
            tls.spawn_reloader();
            Some(tls.acceptor())
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Io(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Io(e.to_string()))?;
    // Registered before the log line and the port file say the daemon is up: a signal sent as soon as it
    // appears is handled (graceful stop, reload), not the default action that kills the process
    // without flushing sessions.
    let signals = Signals::register();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut envoy_stop = stop_rx.clone();
    let envoy = crate::envoy::start(&state, async move {
        let _ = envoy_stop.wait_for(|stopped| *stopped).await;
    })
    .await
    .map_err(|e| match e {
        crate::envoy::StartError::Config(m) => ServeError::Load(m),
        crate::envoy::StartError::Bind(m) => ServeError::Io(m),
    })?;
    let _file_size = file_size_signal();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    state
        .metrics()
        .workers
        .set(i64::try_from(workers).unwrap_or(i64::MAX));
    let snapshot = state.snapshot();
    tracing::info!(
        addr = %addr,
        tls = tls.is_some(),
        workers,
        policies = snapshot.policies.len(),
        keys = snapshot.keys.len(),
        anonymous = snapshot.anonymous.as_deref(),
        state = match (config.state, state.shared().is_some()) {
            (_, true) => "redis",
            (StateMode::File, false) => "file",
            (StateMode::Memory, false) => "memory",
        },
        sessions = state.store().len(),
        envoy = envoy.map(|a| a.to_string()),
        "listening"
    );
    if let Some(path) = &options.port_file {
        std::fs::write(path, addr.to_string())
            .map_err(|e| ServeError::Io(format!("{}: {e}", path.display())))?;
    }

    let (reload_tx, reload_rx) = mpsc::channel::<()>(16);
    let _watcher = if config.watch {
        watch_files(&config, options.config_path.as_deref(), reload_tx.clone())
    } else {
        None
    };
    tokio::spawn(reload_loop(
        state.clone(),
        reload_rx,
        Duration::from_millis(config.reload_debounce_ms),
    ));
    tokio::spawn(sighup(state.clone(), signals.hup));
    drop(reload_tx);

    let shutdown_state = state.clone();
    let app = crate::App::new(state.clone());
    let limits = crate::listen::ConnLimits {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms.max(1)),
    };
    let metrics = state.metrics();
    let conn_metrics = crate::listen::ConnMetrics {
        connections: metrics.connections.clone(),
        rejected: metrics.connections_rejected.clone(),
        timeouts: metrics.connection_timeouts.clone(),
    };
    let server = crate::listen::serve(listener, app, limits, conn_metrics, tls, async move {
        terminate(signals.term, signals.int).await;
        tracing::info!("shutting down: draining in-flight requests");
        shutdown_state.set_ready(false);
        // Fails only when the grace-period timer is gone, i.e. the server already stopped.
        let _ = stop_tx.send(true);
    });
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let deadline = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        () = server => Ok(()),
        () = deadline => {
            tracing::warn!("shutdown deadline reached; abandoning in-flight requests");
            Ok(())
        }
    };
    flusher.stop();
    // The queued spans are sent on the exporter's own thread; waiting for it must not hold a
    // runtime worker.
    let flushing = state.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || flushing.flush_telemetry()).await {
        tracing::warn!(error = %e, "telemetry: flush at shutdown did not finish");
    }
    let audit_head = state.flush_audit();
    let unsaved = unsaved_sessions(&state);
    tracing::info!(
        sessions = state.store().len(),
        audit_seq = audit_head.as_ref().map(|h| h.seq),
        audit_hash = audit_head.as_ref().map(|h| h.hash.as_str()),
        "stopped"
    );
    result.and(unsaved)
}

/// After the final flush: an error naming how many changed sessions could not be written (the
/// process then exits non-zero), logged.
fn unsaved_sessions(state: &AppState) -> Result<(), ServeError> {
    let store = state.store();
    if !store.flush_failing() {
        return Ok(());
    }
    let pending = store.pending();
    tracing::error!(
        sessions_not_persisted = pending,
        "stopping with sessions not persisted: the session database could not be written"
    );
    Err(ServeError::SessionsNotPersisted(format!(
        "{pending} changed sessions could not be written to the session database"
    )))
}

/// The signals the daemon handles, each registered once at start.
struct Signals {
    /// SIGTERM: graceful stop.
    term: Option<Signal>,
    /// SIGINT: graceful stop.
    int: Option<Signal>,
    /// SIGHUP: reload.
    hup: Option<Signal>,
}

#[cfg(unix)]
type Signal = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Signal = std::convert::Infallible;

impl Signals {
    #[cfg(unix)]
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let register = |kind: SignalKind, name: &str| {
            signal(kind)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot handle {name}"))
                .ok()
        };
        Self {
            term: register(SignalKind::terminate(), "SIGTERM"),
            int: register(SignalKind::interrupt(), "SIGINT"),
            hup: register(SignalKind::hangup(), "SIGHUP"),
        }
    }

    #[cfg(not(unix))]
    fn register() -> Self {
        Self {
            term: None,
            int: None,
            hup: None,
        }
    }
}

/// Handles SIGXFSZ, so that a write beyond the file size limit (`ulimit -f`) is a write error
/// the daemon reports and retries (session flush, audit log) rather than the signal's default
/// action, which kills the process with every unflushed session.
fn file_size_signal() -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        /// SIGXFSZ on Linux and the BSDs (macOS included).
        const SIGXFSZ: i32 = 25;
        let mut xfsz = signal(SignalKind::from_raw(SIGXFSZ))
            .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGXFSZ"))
            .ok()?;
        Some(tokio::spawn(async move {
            while xfsz.recv().await.is_some() {
                tracing::warn!("a write went beyond the file size limit (SIGXFSZ)");
            }
        }))
    }
    #[cfg(not(unix))]
    None
}

/// Waits for SIGTERM or SIGINT (Ctrl-C where there are no Unix signals).
async fn terminate(term: Option<Signal>, int: Option<Signal>) {
    #[cfg(unix)]
    {
        let wait = |signal: Option<Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {},
            () = wait(int) => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (term, int);
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP reloads at once (no debounce): one signal, one reload.
async fn sighup(state: AppState, hup: Option<Signal>) {
    #[cfg(unix)]
    if let Some(mut hup) = hup {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let _ = state.reload().await;
        }
    }
    #[cfg(not(unix))]
    drop((state, hup));
}

async fn reload_loop(state: AppState, mut rx: mpsc::Receiver<()>, debounce: Duration) {
    while rx.recv().await.is_some() {
        // Debounce: wait until no trigger arrived for `debounce`.
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let _ = state.reload().await;
    }
}

/// Watches the policy directory, the key file, the signing key file and the config file;
/// events on other files (the session database next to the key file) are ignored.
fn watch_files(
    config: &ServeConfig,
    config_path: Option<&Path>,
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let policies = canon(&config.policies);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![policies.clone()];
    for file in std::iter::once(config.keys_file.as_path())
        .chain(config.signing_key.as_deref())
        .chain(config_path)
    {
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let _ = std::fs::create_dir_all(parent);
        let parent = canon(parent);
        if let Some(name) = file.file_name() {
            files.push(parent.join(name));
        }
        dirs.push(parent);
    }
    let files = Arc::new(files);
    let watched_policies = policies.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| p.starts_with(&watched_policies) || files.iter().any(|f| f == p));
        if relevant {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watcher unavailable; SIGHUP still reloads"))
    .ok()?;
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch");
        }
    }
    Some(watcher)
}
