//! `warden config check|show`: the configuration `warden serve` would run with (the file it
//! finds, the `WARDEN_*` variables over it, then its flags), checked or shown, without starting.

use std::process::ExitCode;

use warden::state::MemoryKeyStore;
use warden_server::snapshot::Stored;
use warden_server::{ServeConfig, Snapshot};

use crate::EXIT_BAD_INPUT;
use crate::serve::ServeArgs;

/// `warden config` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration and load its policies as `warden serve` would: exit 0 when it
    /// would start, else print what is wrong and exit 2. Shared stores are not contacted.
    Check(ServeArgs),
    /// Print the effective configuration as JSON (secrets hidden), with the file it came from.
    Show(ServeArgs),
}

/// Runs a `warden config` subcommand.
pub fn run(command: &ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check(args) => check(args),
        ConfigCommand::Show(args) => show(args),
    }
}

fn resolve(args: &ServeArgs) -> Result<(ServeConfig, Option<std::path::PathBuf>), ExitCode> {
    crate::serve::config(args).map_err(|e| {
        eprintln!("warden config: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn check(args: &ServeArgs) -> ExitCode {
    let (config, path) = match resolve(args) {
        Ok(resolved) => resolved,
        Err(code) => return code,
    };
    // The policies as a reload would load them; keys are the stores' (not read here).
    let snapshot = match Snapshot::load(
        &config,
        &MemoryKeyStore::default(),
        &Stored::default(),
        &warden_server::overlay::Overlays::new(),
        None,
    ) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            eprintln!("warden config: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if let Some(envoy) = &config.envoy
        && let Err(e) = warden_server::envoy::check(envoy, &snapshot, config.audit.is_some())
    {
        eprintln!("warden config: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let mut names: Vec<&str> = snapshot.policies.keys().map(|n| &**n).collect();
    names.sort_unstable();
    println!(
        "ok: {} (listen {}, {} policies: {})",
        path.as_deref().map_or_else(
            || "no configuration file".to_owned(),
            |p| p.display().to_string()
        ),
        config.listen,
        names.len(),
        names.join(", ")
    );
    ExitCode::SUCCESS
}

fn show(args: &ServeArgs) -> ExitCode {
    let (config, path) = match resolve(args) {
        Ok(resolved) => resolved,
        Err(code) => return code,
    };
    let shown = serde_json::json!({
        "file": path.map(|p| p.display().to_string()),
        "config": config,
    });
    // Written, not `println!`: a closed pipe (`| head`) is an error to report, not a panic.
    use std::io::Write as _;
    let written = serde_json::to_string_pretty(&shown)
        .map_err(|e| e.to_string())
        .and_then(|text| writeln!(std::io::stdout(), "{text}").map_err(|e| e.to_string()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden config: {e}");
            ExitCode::FAILURE
        }
    }
}
