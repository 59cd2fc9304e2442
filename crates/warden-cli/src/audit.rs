//! `warden audit`: verify a hash-chained audit log, recover a torn last line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use warden_audit::{recover_truncated_tail, verify};
use warden_proof::{KeyProvider, MacKey, SecretString, SoftwareKeyProvider};

use crate::EXIT_BAD_INPUT;

/// `warden audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check order, hash chain and (with `--key`) MACs across audit files; prints the number of
    /// entries verified and the first broken sequence number. Exit 1 on any break, 2 when input
    /// cannot be read.
    Verify {
        /// The audit MAC key file (hex), to check every entry's `mac`.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Audit files in chain order, or directories (their `audit-*.jsonl` in name order).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Trim an incomplete last line (a write torn by a crash) from an audit file; complete lines
    /// are never touched. Run it on the newest file before `verify` after a crash.
    Recover {
        /// The newest audit file.
        path: PathBuf,
    },
}

/// Runs a `warden audit` subcommand.
pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { key, paths } => run_verify(key.as_deref(), paths),
        AuditCommand::Recover { path } => match recover_truncated_tail(path) {
            Ok(0) => {
                println!("{}: nothing to recover", path.display());
                ExitCode::SUCCESS
            }
            Ok(n) => {
                println!("{}: removed a torn last line ({n} bytes)", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!(
                    "warden audit recover: cannot read `{}`: {e}",
                    path.display()
                );
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    }
}

/// Reads a hex MAC key file into a provider.
pub(crate) fn load_mac_key(path: &Path) -> Result<Arc<dyn KeyProvider>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file `{}`: {e}", path.display()))?;
    let key = MacKey::from_hex(&SecretString::from(text))
        .map_err(|e| format!("key file `{}`: {e}", path.display()))?;
    Ok(Arc::new(SoftwareKeyProvider::mac_only(key)))
}

fn run_verify(key: Option<&Path>, paths: &[PathBuf]) -> ExitCode {
    let provider = match key.map(load_mac_key).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warden audit verify: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let report = match verify(paths, provider.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warden audit verify: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let macs = if report.macs_checked {
        "hashes and MACs"
    } else {
        "hashes only, no --key"
    };
    println!(
        "verified {} entries in {} files ({macs})",
        report.entries, report.files
    );
    match report.first_broken_seq {
        None => {
            println!(
                "chain intact; last sequence number {}, hash {}",
                report.head.seq, report.head.hash
            );
            ExitCode::SUCCESS
        }
        Some(seq) => {
            println!("first broken sequence number: {seq}");
            if let Some(reason) = &report.reason {
                println!("reason: {reason}");
            }
            ExitCode::from(1)
        }
    }
}
