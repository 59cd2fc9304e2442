//! `warden tenants`: tenants in PostgreSQL (`database_url`): who owns each, and the MCP server
//! its agents reach through the daemon's `/mcp` route. Every daemon on the database applies a
//! change at once.

use std::process::ExitCode;

use crate::EXIT_BAD_INPUT;
use crate::policy::DatabaseArgs;

/// `warden tenants` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant or change it.
    Set {
        /// The tenant.
        name: String,
        /// Who answers for it (a team, an address).
        #[arg(long)]
        owner: Option<String>,
        /// The MCP server (`http://host:port/path`) its agents reach at `/mcp`.
        #[arg(long, conflicts_with = "no_mcp_upstream")]
        mcp_upstream: Option<String>,
        /// Remove its MCP server.
        #[arg(long)]
        no_mcp_upstream: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the tenants: name, owner, MCP upstream, created, last used (Unix seconds).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Runs a `warden tenants` subcommand.
pub fn run(command: &TenantsCommand) -> ExitCode {
    match run_inner(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden tenants: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run_inner(command: &TenantsCommand) -> Result<ExitCode, String> {
    match command {
        TenantsCommand::Set {
            name,
            owner,
            mcp_upstream,
            no_mcp_upstream,
            database,
        } => {
            if let Some(url) = mcp_upstream {
                let uri: warden_mcp::http::Uri = url
                    .parse()
                    .map_err(|e| format!("--mcp-upstream `{url}`: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!(
                        "--mcp-upstream `{url}`: the url must be http://host:port/path"
                    ));
                }
            }
            let upstream = if *no_mcp_upstream {
                Some(None)
            } else {
                mcp_upstream.clone().map(Some)
            };
            let (db, _runtime) = database.connect()?;
            db.check_schema().wait().map_err(|e| e.to_string())?;
            db.set_tenant(name, owner.clone().map(Some), upstream)
                .wait()
                .map_err(|e| e.to_string())?;
            eprintln!("tenant `{name}` saved");
            Ok(ExitCode::SUCCESS)
        }
        TenantsCommand::List { database } => {
            let (db, _runtime) = database.connect()?;
            for t in db.tenants().wait().map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.name,
                    t.owner.as_deref().unwrap_or("-"),
                    t.mcp_upstream.as_deref().unwrap_or("-"),
                    t.created_at,
                    t.last_used_at.map_or("-".to_owned(), |at| at.to_string())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
