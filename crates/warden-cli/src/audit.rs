//! `warden audit`: verify a hash-chained audit log (against a checkpoint), recover a torn last
//! line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use warden_audit::{Anchor, Checkpoint, recover_tail, verify_checkpoint};
use warden_proof::{Jwks, KeyProvider, MacKey, SecretString, SoftwareKeyProvider};

use crate::EXIT_BAD_INPUT;

/// `warden audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check order, hash chain and (with `--key`) MACs across audit files; prints the number of
    /// entries verified and the first broken sequence number. With `--checkpoint`, the log must
    /// hold the checkpoint's entry with its hash (a log that ends before it was truncated). Exit
    /// 1 on any break and on an empty log (unless `--allow-empty`), 2 when input cannot be read.
    Verify {
        /// The audit MAC key file (hex), to check every entry's `mac` (and the checkpoint's).
        #[arg(long)]
        key: Option<PathBuf>,
        /// A checkpoint the log must reach: a file (a copy kept elsewhere) or an `http://` URL
        /// (`GET /v1/audit/checkpoint` of the daemon; `WARDEN_API_KEY` is sent as `x-api-key`
        /// when set). Default: the `checkpoint.json` of the last directory given, if it has one.
        #[arg(long, value_name = "FILE|URL")]
        checkpoint: Option<String>,
        /// A JWKS (the daemon's `/.well-known/jwks.json`) to check the checkpoint's signature.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Succeed on a log with no entries (or a missing directory); by default that fails, as
        /// a deleted log would.
        #[arg(long)]
        allow_empty: bool,
        /// Audit files in chain order, or directories (their `audit-*.jsonl` in name order).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Trim an incomplete last line (a write torn by a crash) from an audit file, or complete a
    /// last entry that lacks only its newline; complete lines are never removed. Run it on the
    /// newest file before `verify` after a crash; refused while a daemon has the log open.
    Recover {
        /// The newest audit file.
        path: PathBuf,
    },
}

/// Runs a `warden audit` subcommand.
pub fn run(command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            key,
            checkpoint,
            jwks,
            allow_empty,
            paths,
        } => run_verify(&VerifyArgs {
            key: key.as_deref(),
            checkpoint: checkpoint.as_deref(),
            jwks: jwks.as_deref(),
            allow_empty: *allow_empty,
            paths,
        }),
        AuditCommand::Recover { path } => match recover_tail(path) {
            Ok(r) if r.newline_added => {
                println!(
                    "{}: the last entry lacked its final newline; added it (nothing removed)",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Ok(r) if r.removed_bytes > 0 => {
                println!(
                    "{}: removed a torn last line ({} bytes at offset {}, {})",
                    path.display(),
                    r.removed_bytes,
                    r.offset,
                    r.removed_sha256.as_deref().unwrap_or("")
                );
                ExitCode::SUCCESS
            }
            Ok(_) => {
                println!("{}: nothing to recover", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("warden audit recover: {e}");
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

struct VerifyArgs<'a> {
    key: Option<&'a Path>,
    checkpoint: Option<&'a str>,
    jwks: Option<&'a Path>,
    allow_empty: bool,
    paths: &'a [PathBuf],
}

/// Largest checkpoint document fetched from a URL.
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

/// Reads a checkpoint from a file or an `http://` URL.
fn read_checkpoint(source: &str) -> Result<Checkpoint, String> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(source);
        if let Ok(key) = std::env::var("WARDEN_API_KEY") {
            req = req.header("x-api-key", key);
        }
        let mut resp = req
            .call()
            .map_err(|e| format!("cannot fetch checkpoint `{source}`: {e}"))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_CHECKPOINT_BYTES)
            .read_to_vec()
            .map_err(|e| format!("cannot fetch checkpoint `{source}`: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "cannot fetch checkpoint `{source}`: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        body
    } else {
        std::fs::read(source).map_err(|e| format!("cannot read checkpoint `{source}`: {e}"))?
    };
    Checkpoint::from_json(&bytes).map_err(|e| format!("checkpoint `{source}`: {e}"))
}

fn run_verify(args: &VerifyArgs<'_>) -> ExitCode {
    let provider = match args.key.map(load_mac_key).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warden audit verify: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let jwks = match args
        .jwks
        .map(|p| {
            std::fs::read(p)
                .map_err(|e| format!("cannot read `{}`: {e}", p.display()))
                .and_then(|b| {
                    Jwks::from_json(&b).map_err(|e| format!("`{}` is not a JWKS: {e}", p.display()))
                })
        })
        .transpose()
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("warden audit verify: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // Without --checkpoint, the directory's own checkpoint: deleting the newest entries or files
    // shows even when nobody kept a copy (unless the checkpoint was deleted too).
    let local = args
        .paths
        .iter()
        .rev()
        .find(|p| p.is_dir())
        .map(|d| d.join(warden_audit::CHECKPOINT_FILE))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string());
    let source = args.checkpoint.map(str::to_owned).or(local);
    let checkpoint = match source.as_deref().map(read_checkpoint).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warden audit verify: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if let Some(cp) = &checkpoint {
        let mut authenticated = Vec::new();
        if let Some(key) = &provider {
            if let Err(e) = cp.verify_mac(key.as_ref()) {
                println!("checkpoint rejected: {e}");
                return ExitCode::from(1);
            }
            authenticated.push("MAC");
        }
        if let Some(jwks) = &jwks {
            if let Err(e) = cp.verify_signature(jwks) {
                println!("checkpoint rejected: {e}");
                return ExitCode::from(1);
            }
            authenticated.push("signature");
        }
        println!(
            "checkpoint {}: sequence {}, hash {}, time {} ({})",
            source.as_deref().unwrap_or(""),
            cp.seq,
            cp.head,
            cp.time,
            if authenticated.is_empty() {
                "not authenticated: no --key or --jwks".to_owned()
            } else {
                format!("{} verified", authenticated.join(" and "))
            }
        );
    }
    // With --allow-empty a missing directory is an empty log; without it, unreadable input.
    let paths: Vec<PathBuf> = if args.allow_empty {
        args.paths.iter().filter(|p| p.exists()).cloned().collect()
    } else {
        args.paths.to_vec()
    };
    let report = match verify_checkpoint(
        &paths,
        provider.as_deref(),
        Anchor::default(),
        checkpoint.as_ref().map(Checkpoint::anchor).as_ref(),
    ) {
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
        None if report.entries == 0 && !args.allow_empty => {
            println!(
                "no audit entries: the log is empty or missing (a deleted log looks the same); \
                 pass --allow-empty when an empty log is expected"
            );
            ExitCode::from(1)
        }
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
