//! `warden approvals`: list, show, approve and deny the approvals of a running daemon, through
//! its HTTP API (`/v1/approvals*`) with an admin key (`WARDEN_API_KEY`, or `--key-file`).
//!
//! Exit codes: 0 done; 2 bad input or an answer of 4xx (unknown approval, answered already,
//! expired, not an admin key; the daemon's message is printed); 1 the daemon could not be
//! reached or failed (5xx).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::EXIT_BAD_INPUT;

/// Longest answer read from the daemon.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// `warden approvals` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approvals (pending ones unless `--all`), oldest first: id, status, tenant,
    /// principal, session, tool, rule, expiry (ms since the epoch); `--json` prints the
    /// daemon's answer.
    List {
        /// Also approvals answered, used or expired (kept an hour after they expire).
        #[arg(long)]
        all: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Show one approval (JSON).
    Show {
        /// The approval's id (`apr_...`).
        id: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Approve a pending approval: the agent's next call with the same arguments goes through
    /// once.
    Approve {
        /// The approval's id.
        id: String,
        /// Why (recorded with the approval; at most 1024 bytes).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Deny a pending approval: the agent's next call with the same arguments is denied.
    Deny {
        /// The approval's id.
        id: String,
        /// Why (recorded with the approval; at most 1024 bytes).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

/// Which daemon, with which admin key.
#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// The daemon's base URL, plain HTTP (default: `WARDEN_URL`, else `http://127.0.0.1:8181`).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the admin API key (else `WARDEN_API_KEY`).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

impl DaemonArgs {
    fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("WARDEN_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8181".to_owned())
    }

    fn key(&self) -> Result<String, String> {
        match &self.key_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|k| k.trim().to_owned())
                .map_err(|e| format!("cannot read `{}`: {e}", path.display())),
            None => std::env::var("WARDEN_API_KEY")
                .map_err(|_| "no admin key: set WARDEN_API_KEY or give --key-file".to_owned()),
        }
    }
}

/// What went wrong, and the exit code it gets.
struct Failure {
    message: String,
    code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            code: EXIT_BAD_INPUT,
        }
    }
}

/// Runs a `warden approvals` subcommand.
pub fn run(command: &ApprovalsCommand) -> ExitCode {
    match run_inner(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("warden approvals: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "`{id}` is not an approval id (`apr_` and hex digits)"
        ));
    }
    Ok(())
}

fn run_inner(command: &ApprovalsCommand) -> Result<(), Failure> {
    match command {
        ApprovalsCommand::List {
            all,
            tenant,
            json,
            daemon,
        } => {
            let mut query = vec![("status", if *all { "all" } else { "pending" })];
            if let Some(tenant) = tenant {
                query.push(("tenant", tenant.as_str()));
            }
            let answer = call(daemon, "GET", "/v1/approvals", &query, None)?;
            if *json {
                println!("{answer}");
                return Ok(());
            }
            let empty = Vec::new();
            let approvals = answer
                .get("approvals")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            for a in approvals {
                let text = |key: &str| a.get(key).and_then(Value::as_str).unwrap_or("-").to_owned();
                let expires = a
                    .get("expires_ms")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{expires}",
                    text("id"),
                    text("status"),
                    text("tenant"),
                    text("principal"),
                    text("session"),
                    text("tool"),
                    text("rule"),
                );
            }
            Ok(())
        }
        ApprovalsCommand::Show { id, daemon } => {
            check_id(id)?;
            let answer = call(daemon, "GET", &format!("/v1/approvals/{id}"), &[], None)?;
            println!("{answer}");
            Ok(())
        }
        ApprovalsCommand::Approve { id, reason, daemon } => answer(daemon, id, "approve", reason),
        ApprovalsCommand::Deny { id, reason, daemon } => answer(daemon, id, "deny", reason),
    }
}

fn answer(daemon: &DaemonArgs, id: &str, action: &str, reason: &str) -> Result<(), Failure> {
    check_id(id)?;
    let body = json!({ "reason": reason });
    let answer = call(
        daemon,
        "POST",
        &format!("/v1/approvals/{id}/{action}"),
        &[],
        Some(&body),
    )?;
    println!("{answer}");
    let status = answer.get("status").and_then(Value::as_str).unwrap_or("?");
    eprintln!("approval `{id}` is {status}");
    Ok(())
}

/// One call to the daemon: its JSON answer, or the daemon's error message.
fn call(
    daemon: &DaemonArgs,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Value, Failure> {
    let key = daemon.key()?;
    let base = daemon.url();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let unreachable = |e: ureq::Error| Failure {
        message: format!("cannot reach the daemon at `{base}`: {e}"),
        code: 1,
    };
    let mut response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(&url)
            .header("x-api-key", &key)
            .send_json(body)
            .map_err(unreachable)?,
        _ => agent
            .get(&url)
            .header("x-api-key", &key)
            .query_pairs(query.iter().copied())
            .call()
            .map_err(unreachable)?,
    };
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(unreachable)?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(
            || format!("HTTP {status}"),
            |m| format!("HTTP {status}: {m}"),
        );
    Err(Failure {
        message,
        code: if status.is_client_error() {
            EXIT_BAD_INPUT
        } else {
            1
        },
    })
}
