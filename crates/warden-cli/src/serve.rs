//! `warden serve`: the HTTP decision daemon (see `docs/serve.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_server::{ServeConfig, ServeOptions, StateMode};

use crate::EXIT_BAD_INPUT;

/// `warden serve` flags; each overrides the configuration file's field of the same meaning.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// YAML configuration file (every field optional; see docs/serve.md). Without it:
    /// `WARDEN_CONFIG`, else `./warden.yaml`, else `/etc/warden/warden.yaml` when it exists.
    #[arg(long, short)]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on, e.g. `127.0.0.1:8181` (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of policies, one per file.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Where sessions live: `file` (persisted, the default) or `memory`.
    #[arg(long, value_parser = ["file", "memory"])]
    state: Option<String>,
    /// The session database file (with `--state file`).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// The API key file.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Policy for requests without a key (`*`: the only policy loaded).
    #[arg(long)]
    anonymous_policy: Option<String>,
    /// Idle seconds after which a session is forgotten (0: never).
    #[arg(long)]
    session_ttl: Option<u64>,
    /// Write the bound address (`host:port`) to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Do not log one line per decision.
    #[arg(long)]
    no_decision_log: bool,
    /// Threads serving requests (0: one per CPU core).
    #[arg(long)]
    workers: Option<usize>,
}

/// The configuration file: `flag`, else `WARDEN_CONFIG`, else `./warden.yaml`, else
/// `/etc/warden/warden.yaml`, the first that is given or exists (none: the defaults).
pub(crate) fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_owned());
    }
    if let Some(path) = std::env::var_os("WARDEN_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    ["warden.yaml", "/etc/warden/warden.yaml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Builds the configuration: defaults, then the file ([`config_path`]), then `WARDEN_*`
/// variables, then the flags; returns it with the file it came from. Without a file and on a
/// loopback address, requests without a key are decided by `support-agent` (the default
/// `examples/` directory) or by the only policy in `--policies`. `WARDEN_*` variables that name
/// no setting are warned about on standard error.
pub(crate) fn config(args: &ServeArgs) -> Result<(ServeConfig, Option<PathBuf>), String> {
    let path = config_path(args.config.as_deref());
    let (mut config, unknown) =
        ServeConfig::resolve(path.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    for variable in unknown {
        eprintln!("warden: warning: {variable} names no setting; ignored");
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(p) = &args.policies {
        config.policies.clone_from(p);
    }
    if let Some(state) = &args.state {
        config.state = if state == "memory" {
            StateMode::Memory
        } else {
            StateMode::File
        };
    }
    if let Some(p) = &args.state_file {
        config.state_file.clone_from(p);
    }
    if let Some(p) = &args.keys {
        config.keys_file.clone_from(p);
    }
    if let Some(ttl) = args.session_ttl {
        config.session_ttl_secs = ttl;
    }
    if args.no_decision_log {
        config.decision_log = false;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    // A limit of 0 would refuse everything (or, for a timeout, cut every connection at once):
    // a configuration mistake, said before listening.
    for (name, value) in [
        ("max_identifier_bytes", config.max_identifier_bytes as u64),
        ("max_sessions", config.max_sessions as u64),
        ("max_batch_items", config.max_batch_items as u64),
        ("max_connections", config.max_connections as u64),
        ("header_read_timeout_ms", config.header_read_timeout_ms),
        ("idle_timeout_ms", config.idle_timeout_ms),
    ] {
        if value == 0 {
            return Err(format!("`{name}` must be at least 1"));
        }
    }
    config.approvals.check(config.request_timeout_ms)?;
    if config.workers > warden_server::MAX_WORKERS {
        return Err(format!(
            "`workers` must be at most {}, not {}",
            warden_server::MAX_WORKERS,
            config.workers
        ));
    }
    if let Some(p) = &args.anonymous_policy {
        config.anonymous_policy = Some(p.clone());
    } else if path.is_none() && config.listen.ip().is_loopback() {
        // No configuration, loopback only: the examples' support-agent policy (or, with
        // `--policies`, the only policy in that directory) answers requests without a key.
        config.anonymous_policy = Some(if args.policies.is_none() {
            "support-agent".to_owned()
        } else {
            "*".to_owned()
        });
    }
    Ok((config, path))
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs) -> ExitCode {
    let (config, config_path) = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warden serve: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let _log = warden_server::init_logging_buffered(&config.log_level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("warden-serve");
    if config.workers > 0 {
        builder.worker_threads(config.workers);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warden serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = ServeOptions {
        config,
        config_path,
        port_file: args.port_file.clone(),
        anonymous_policy_override: args.anonymous_policy.clone(),
    };
    match runtime.block_on(warden_server::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "warden serve failed");
            eprintln!("warden serve: {e}");
            match e {
                warden_server::ServeError::Load(_) | warden_server::ServeError::Keys(_) => {
                    ExitCode::from(EXIT_BAD_INPUT)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}
