//! `warden mcp`: the MCP proxy front door (stdio wrapping, Streamable HTTP proxy, tool pins).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use warden_mcp::{Caller, Enforcer, MemoryPinStore, PinStore};
use warden_store::{EmbeddedSessionStore, RedbPinStore};

use crate::EXIT_BAD_INPUT;

/// `warden mcp` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum McpCommand {
    /// Wrap an MCP server process: the client speaks stdio to Warden, Warden to the child.
    /// Example: `warden mcp wrap --policy P -- npx @modelcontextprotocol/server-everything`.
    Wrap {
        #[command(flatten)]
        common: Common,
        /// Name the upstream's tool pins are kept under (default: the command's file name).
        #[arg(long)]
        upstream: Option<String>,
        /// The Warden session whose taints and history apply, kept across restarts in
        /// `--sessions` (default: one new session for the wrapped process's lifetime, in memory).
        #[arg(long)]
        session: Option<String>,
        /// The server command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Proxy a Streamable HTTP MCP server: clients use `http://LISTEN/mcp`.
    Proxy {
        #[command(flatten)]
        common: Common,
        /// The upstream MCP endpoint, e.g. `http://127.0.0.1:3001/mcp`, or `https://` (its
        /// certificate verified against the system's roots, or `--upstream-ca`).
        #[arg(long)]
        upstream: String,
        /// PEM bundle an `https://` upstream's certificate must chain to (a private CA); none:
        /// the system's roots.
        #[arg(long)]
        upstream_ca: Option<PathBuf>,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8282")]
        listen: std::net::SocketAddr,
        /// Name the upstream's tool pins are kept under (default: the upstream's host:port).
        #[arg(long)]
        name: Option<String>,
        /// The Warden session whose taints and history apply to every client of this proxy,
        /// kept across restarts in `--sessions` (default: `mcp-proxy:NAME`). The client's
        /// `Mcp-Session-Id` is never used: a client picks it, and a new one would clear taints.
        #[arg(long)]
        session: Option<String>,
        /// Write the bound address (`host:port`) to this file once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// Open client connections at most; more are closed at once (logged).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Longest wait for a whole request head, in milliseconds (slow clients are closed).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        header_read_timeout_ms: u64,
        /// Longest keep-alive wait for the next request, in milliseconds.
        #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
        idle_timeout_ms: u64,
    },
    /// Approve the changed definition of TOOL on UPSTREAM: it becomes the pin.
    Approve {
        /// The pin database (a redb file; `warden serve` keeps its own as `mcp-pins.redb` next
        /// to `state_file`). Works while the proxy holding it runs.
        #[arg(long, default_value = PINS_DEFAULT)]
        pins: PathBuf,
        /// The upstream's name.
        upstream: String,
        /// The tool's name.
        tool: String,
    },
    /// Print the pins as JSON.
    Pins {
        /// The pin database (a redb file; `warden serve` keeps its own as `mcp-pins.redb` next
        /// to `state_file`). Works while the proxy holding it runs.
        #[arg(long, default_value = PINS_DEFAULT)]
        pins: PathBuf,
    },
}

/// Flags shared by `wrap` and `proxy`.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// The policy file.
    #[arg(long, short)]
    policy: PathBuf,
    /// The principal the calls are decided for, e.g. `agent:support-bot`.
    #[arg(long)]
    principal: Option<String>,
    /// The pin database (a redb file), shared with `warden mcp approve`. A path ending in
    /// `.json` (the JSON pin file of earlier versions) means the `.redb` file beside it, into
    /// which the JSON file is imported once.
    #[arg(long, default_value = PINS_DEFAULT)]
    pins: PathBuf,
    /// Keep pins in memory only (every run pins afresh).
    #[arg(long)]
    memory_pins: bool,
    /// The directory holding named sessions' state (one redb file per session, 0600), so that
    /// taints survive a restart.
    #[arg(long, default_value = SESSIONS_DEFAULT)]
    sessions: PathBuf,
    /// Keep session state in memory only (a restart clears taints).
    #[arg(long)]
    memory_sessions: bool,
    /// Log each decision as a JSON line on stderr (target `warden::decision`: policy, digest,
    /// verdict, rule, tool, latency; never arguments or content), as `warden serve` does.
    #[arg(long)]
    decision_log: bool,
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden mcp: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The default pin database, in the working directory.
const PINS_DEFAULT: &str = "warden-pins.redb";
/// The default directory of session state files, in the working directory.
const SESSIONS_DEFAULT: &str = "warden-sessions";

/// The state of one named session, kept in its own redb file under `--sessions` (one file per
/// session, so wrapped servers with different sessions run side by side; the same session in
/// two processes at once is refused, since neither would see the other's taints).
fn session_store(common: &Common, session: &str) -> Result<Arc<EmbeddedSessionStore>, String> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(session.as_bytes()));
    let name = format!("{}.redb", digest.get(..32).unwrap_or(&digest));
    std::fs::create_dir_all(&common.sessions)
        .map_err(|e| format!("cannot create `{}`: {e}", common.sessions.display()))?;
    let path = common.sessions.join(name);
    // Created owner-only before redb opens it: session state holds what the agent touched.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    }
    EmbeddedSessionStore::open(&path, None)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "cannot open the state of session `{session}` (`{}`): {e}; is another warden process using this session?",
                path.display()
            )
        })
}

/// Writes a decision's session changes to the file before its message goes on (write-through:
/// a decision is low-rate here, and a taint acted on must survive a crash or a kill). A write
/// that fails fails the decision closed: the call is refused, the result withheld.
fn write_through(store: &Arc<EmbeddedSessionStore>) -> warden_mcp::DecisionObserver {
    let store = Arc::clone(store);
    Arc::new(move |_request, _decision, _latency| {
        if store.pending() == 0 {
            return Ok(());
        }
        store
            .flush()
            .map(|_| ())
            .map_err(|e| format!("cannot write session state: {e}"))
    })
}

/// Writes the session state a last time; false (after saying why) when it could not be.
fn final_flush(store: Option<&Arc<EmbeddedSessionStore>>) -> bool {
    let Some(store) = store else {
        return true;
    };
    match store.flush() {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "warden mcp: cannot write session state ({} sessions not saved): {e}",
                store.pending()
            );
            false
        }
    }
}

/// Opens the pin database named by `--pins`, importing the JSON pin file of earlier versions
/// once: `X.json` (given as `--pins X.json`, or beside `--pins X.redb`) into `X.redb`.
fn open_pins(pins: &Path) -> Result<RedbPinStore, String> {
    let (database, json) = if pins.extension().is_some_and(|e| e == "json") {
        (pins.with_extension("redb"), pins.to_owned())
    } else {
        (pins.to_owned(), pins.with_extension("json"))
    };
    let store = RedbPinStore::open(&database).map_err(|e| e.to_string())?;
    store.import_json(&json).map_err(|e| e.to_string())?;
    Ok(store)
}

fn pin_store(common: &Common) -> Result<Arc<dyn PinStore>, String> {
    if common.memory_pins {
        return Ok(Arc::new(MemoryPinStore::new()));
    }
    Ok(Arc::new(open_pins(&common.pins)?))
}

fn enforcer(
    common: &Common,
    upstream: &str,
    sessions: Option<&Arc<EmbeddedSessionStore>>,
) -> Result<Arc<Enforcer>, String> {
    let policy = warden::load_policy_file(&common.policy).map_err(|e| e.to_string())?;
    let engine = Arc::new(match sessions {
        Some(store) => warden::Engine::with_store(policy, Arc::clone(store) as _),
        None => warden::Engine::new(policy),
    });
    let enforcer = Enforcer::new(engine, pin_store(common)?, upstream);
    Ok(Arc::new(match observer(common, sessions) {
        Some(observer) => enforcer.with_observer(observer),
        None => enforcer,
    }))
}

/// What follows each decision: the session state written through (with `--sessions`), then the
/// decision log line (with `--decision-log`). `None` when neither is on.
fn observer(
    common: &Common,
    sessions: Option<&Arc<EmbeddedSessionStore>>,
) -> Option<warden_mcp::DecisionObserver> {
    let flush = sessions.map(write_through);
    let log = common.decision_log;
    if flush.is_none() && !log {
        return None;
    }
    Some(Arc::new(move |request, decision, latency| {
        if let Some(flush) = &flush {
            flush(request, decision, latency)?;
        }
        if log {
            log_decision(request, decision, latency);
        }
        Ok(())
    }))
}

/// One decision's log line: names and outcome only, never arguments or content.
fn log_decision(
    request: &warden::Request,
    decision: &warden::Decision,
    latency: std::time::Duration,
) {
    let verdict = decision.verdict.as_str();
    tracing::info!(
        target: "warden::decision",
        policy = %decision.policy.name,
        digest = %decision.policy.digest,
        decision = verdict,
        rule = decision.rule.as_deref(),
        tool = request.tool.as_deref(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "decision"
    );
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// A session id for one wrapped process.
fn new_session() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mcp-stdio-{}-{nanos:x}", std::process::id())
}

/// Runs `warden mcp ...`.
pub fn run(command: McpCommand) -> ExitCode {
    let decision_log = match &command {
        McpCommand::Wrap { common, .. } | McpCommand::Proxy { common, .. } => common.decision_log,
        _ => false,
    };
    warden_server::init_logging(if decision_log {
        "warn,warden::decision=info"
    } else {
        "warn"
    });
    match command {
        McpCommand::Wrap {
            common,
            upstream,
            session,
            command,
        } => wrap(&common, upstream, session, &command),
        McpCommand::Proxy {
            common,
            upstream,
            upstream_ca,
            listen,
            name,
            session,
            port_file,
            max_connections,
            header_read_timeout_ms,
            idle_timeout_ms,
        } => proxy(
            &common,
            UpstreamArg {
                url: &upstream,
                ca: upstream_ca.as_deref(),
            },
            listen,
            name,
            session,
            port_file.as_deref(),
            warden_server::listen::ConnLimits {
                max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                header_read_timeout: std::time::Duration::from_millis(header_read_timeout_ms),
                idle_timeout: std::time::Duration::from_millis(idle_timeout_ms),
            },
        ),
        McpCommand::Approve {
            pins,
            upstream,
            tool,
        } => match open_pins(&pins).and_then(|s| {
            s.approve(&upstream, &tool)
                .wait()
                .map_err(|e| e.to_string())
        }) {
            Ok(true) => {
                eprintln!("approved the new definition of `{tool}` on `{upstream}`");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!(
                    "nothing to approve: `{tool}` on `{upstream}` has no changed definition pending"
                );
                ExitCode::from(1)
            }
            Err(e) => bad(e),
        },
        McpCommand::Pins { pins } => {
            match open_pins(&pins).and_then(|s| s.list().wait().map_err(|e| e.to_string())) {
                Ok(list) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&list).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => bad(e),
            }
        }
    }
}

fn wrap(
    common: &Common,
    upstream: Option<String>,
    session: Option<String>,
    command: &[String],
) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        return bad("no server command given");
    };
    let upstream = upstream.unwrap_or_else(|| {
        Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
    });
    let store = match &session {
        Some(session) if !common.memory_sessions => match session_store(common, session) {
            Ok(store) => Some(store),
            Err(e) => return bad(e),
        },
        _ => None,
    };
    let enforcer = match enforcer(common, &upstream, store.as_ref()) {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let caller = Caller {
        session: Some(session.unwrap_or_else(new_session)),
        principal: common.principal.clone(),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut child = tokio::process::Command::new(program);
    child.args(args);
    // SIGTERM / SIGINT (an MCP client closing the transport sends SIGTERM): dropping the relay
    // kills the server process, so it is never left behind.
    let status = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let relay = warden_mcp::stdio::wrap(
            enforcer,
            caller,
            child,
            tokio::io::stdin(),
            tokio::io::stdout(),
        );
        tokio::select! {
            status = relay => status.map(Some),
            _ = term.recv() => Ok(None),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    // Do not wait for a blocked stdin read: the session is over.
    runtime.shutdown_background();
    if !final_flush(store.as_ref()) {
        return ExitCode::from(1);
    }
    match status {
        Ok(None) => ExitCode::from(143),
        Ok(Some(status)) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::from(1),
        },
        Err(e) => bad(format!("cannot run `{program}`: {e}")),
    }
}

/// `--upstream` and `--upstream-ca`.
struct UpstreamArg<'a> {
    url: &'a str,
    ca: Option<&'a Path>,
}

fn proxy(
    common: &Common,
    upstream: UpstreamArg<'_>,
    listen: std::net::SocketAddr,
    name: Option<String>,
    session: Option<String>,
    port_file: Option<&Path>,
    limits: warden_server::listen::ConnLimits,
) -> ExitCode {
    let UpstreamArg {
        url: upstream,
        ca: upstream_ca,
    } = upstream;
    let uri: warden_mcp::http::Uri = match upstream.parse() {
        Ok(uri) => uri,
        Err(e) => return bad(format!("`--upstream {upstream}`: {e}")),
    };
    let tls = match uri.scheme_str() {
        Some("http") if upstream_ca.is_some() => {
            return bad("`--upstream-ca` applies to an https:// upstream");
        }
        Some("http") => None,
        Some("https") => match warden_mcp::upstream_tls::client_config(upstream_ca) {
            Ok(tls) => Some(tls),
            Err(e) => return bad(format!("`--upstream-ca`: {e}")),
        },
        _ => {
            return bad(format!(
                "`--upstream {upstream}`: an http:// or https:// URL is required"
            ));
        }
    };
    let name = name.unwrap_or_else(|| {
        uri.authority()
            .map_or_else(|| upstream.to_owned(), ToString::to_string)
    });
    let session = session.unwrap_or_else(|| format!("mcp-proxy:{name}"));
    let store = if common.memory_sessions {
        None
    } else {
        match session_store(common, &session) {
            Ok(store) => Some(store),
            Err(e) => return bad(e),
        }
    };
    let enforcer = match enforcer(common, &name, store.as_ref()) {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let identity = warden_mcp::http::Identity {
        principal: common.principal.clone(),
        session: Some(session),
    };
    let mut config = warden_mcp::http::ProxyConfig::new(uri, identity);
    config.tls = tls;
    let state = warden_mcp::http::ProxyState::new(enforcer, config);
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        // Registered before the port file says the proxy is up, so that a SIGINT sent as soon
        // as it appears stops it cleanly instead of killing it.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        if let Some(path) = port_file {
            std::fs::write(path, bound.to_string())
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        }
        tracing::info!(listen = %bound, upstream = %upstream, "MCP proxy listening");
        eprintln!("warden mcp proxy: http://{bound}/mcp -> {upstream}");
        // The daemon's accept loop: connection cap, header read and idle timeouts, TCP_NODELAY.
        warden_server::listen::serve(
            listener,
            warden_mcp::http::router(state, "/mcp"),
            limits,
            warden_server::listen::ConnMetrics::default(),
            None,
            async move {
                interrupt.recv().await;
            },
        )
        .await;
        Ok::<(), String>(())
    });
    drop(runtime);
    if !final_flush(store.as_ref()) {
        return ExitCode::from(1);
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => bad(e),
    }
}
