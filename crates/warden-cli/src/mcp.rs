//! `warden mcp`: the MCP proxy front door (stdio wrapping, Streamable HTTP proxy, tool pins).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use warden_mcp::{Caller, Enforcer, MemoryPinStore, PinStore};
use warden_store::RedbPinStore;

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
        /// The Warden session (default: one new session for the wrapped process's lifetime).
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
        /// The upstream MCP endpoint, e.g. `http://127.0.0.1:3001/mcp` (http only).
        #[arg(long)]
        upstream: String,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8282")]
        listen: std::net::SocketAddr,
        /// Name the upstream's tool pins are kept under (default: the upstream's host:port).
        #[arg(long)]
        name: Option<String>,
        /// A client identity used as the Warden session instead of `Mcp-Session-Id`.
        #[arg(long)]
        session: Option<String>,
        /// Write the bound address (`host:port`) to this file once listening.
        #[arg(long)]
        port_file: Option<PathBuf>,
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
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden mcp: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The default pin database, in the working directory.
const PINS_DEFAULT: &str = "warden-pins.redb";

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

fn enforcer(common: &Common, upstream: &str) -> Result<Arc<Enforcer>, String> {
    let policy = warden::load_policy_file(&common.policy).map_err(|e| e.to_string())?;
    let engine = Arc::new(warden::Engine::new(policy));
    Ok(Arc::new(Enforcer::new(
        engine,
        pin_store(common)?,
        upstream,
    )))
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
    warden_server::init_logging("warn");
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
            listen,
            name,
            session,
            port_file,
        } => proxy(
            &common,
            &upstream,
            listen,
            name,
            session,
            port_file.as_deref(),
        ),
        McpCommand::Approve {
            pins,
            upstream,
            tool,
        } => match open_pins(&pins)
            .and_then(|s| s.approve(&upstream, &tool).map_err(|e| e.to_string()))
        {
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
            match open_pins(&pins).and_then(|s| s.list().map_err(|e| e.to_string())) {
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
    let enforcer = match enforcer(common, &upstream) {
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
    match status {
        Ok(None) => ExitCode::from(143),
        Ok(Some(status)) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::from(1),
        },
        Err(e) => bad(format!("cannot run `{program}`: {e}")),
    }
}

fn proxy(
    common: &Common,
    upstream: &str,
    listen: std::net::SocketAddr,
    name: Option<String>,
    session: Option<String>,
    port_file: Option<&Path>,
) -> ExitCode {
    let uri: warden_mcp::http::Uri = match upstream.parse() {
        Ok(uri) => uri,
        Err(e) => return bad(format!("`--upstream {upstream}`: {e}")),
    };
    if uri.scheme_str() != Some("http") {
        return bad(format!(
            "`--upstream {upstream}`: only http:// upstreams are supported"
        ));
    }
    let name = name.unwrap_or_else(|| {
        uri.authority()
            .map_or_else(|| upstream.to_owned(), ToString::to_string)
    });
    let enforcer = match enforcer(common, &name) {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let identity = warden_mcp::http::Identity {
        principal: common.principal.clone(),
        session,
    };
    let state = warden_mcp::http::ProxyState::new(
        enforcer,
        warden_mcp::http::ProxyConfig::new(uri, identity),
    );
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
        warden_mcp::http::serve(listener, state, async move {
            interrupt.recv().await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => bad(e),
    }
}
