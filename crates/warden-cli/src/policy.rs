//! `warden policy`: push policies to PostgreSQL (`database_url`), list them, show a policy's
//! versions and make another version active. Every daemon on the database reloads at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_store::{PolicyFormat, StoredPolicy};

use crate::EXIT_BAD_INPUT;

/// `warden policy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file and store it as its policy's next version, active at once.
    Push {
        /// The policy (YAML or JSON, named by its `name`; or a `.rego` module, named by the
        /// file stem or `--name`).
        file: PathBuf,
        /// The name of a Rego policy (default: the file stem).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the active policies: name, version, format, SHA-256 of the source.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Every version of one policy; `*` marks the active one.
    History {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Make a stored version the active one (roll back or forward).
    Activate {
        /// The policy's name.
        name: String,
        /// The version to put in force.
        version: i32,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Which database: `--database-url`, else the `--config` file's `database_url`, else
/// `WARDEN_DATABASE_URL`.
#[derive(clap::Args, Debug)]
pub struct DatabaseArgs {
    /// The PostgreSQL database (`postgres://...`; also `WARDEN_DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
    /// A `warden serve` configuration file naming the database.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl DatabaseArgs {
    /// Connects to the database on a runtime of its own (kept with it).
    pub(crate) fn connect(
        &self,
    ) -> Result<(warden_store::Database, tokio::runtime::Runtime), String> {
        let config =
            crate::keys::resolve_config(self.config.as_deref(), self.database_url.as_deref())?;
        crate::keys::connect(&config)
    }
}

/// Runs a `warden policy` subcommand.
pub fn run(command: &PolicyCommand) -> ExitCode {
    match run_inner(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden policy: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run_inner(command: &PolicyCommand) -> Result<ExitCode, String> {
    match command {
        PolicyCommand::Push {
            file,
            name,
            database,
        } => {
            let (name, format, source) = validate(file, name.as_deref())?;
            let (db, _runtime) = database.connect()?;
            db.check_schema().wait().map_err(|e| e.to_string())?;
            let version = db
                .push_policy(&name, format, &source)
                .wait()
                .map_err(|e| e.to_string())?;
            eprintln!("pushed policy `{name}` version {version}; it is active");
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::List { database } => {
            let (db, _runtime) = database.connect()?;
            let active = db.active_policies().wait().map_err(|e| e.to_string())?;
            for policy in &active {
                println!("{}", line(policy));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::History { name, database } => {
            let (db, _runtime) = database.connect()?;
            let history = db.policy_history(name).wait().map_err(|e| e.to_string())?;
            if history.is_empty() {
                return Err(format!("no policy `{name}` in the database"));
            }
            for policy in &history {
                println!("{}", line(policy));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Activate {
            name,
            version,
            database,
        } => {
            let (db, _runtime) = database.connect()?;
            if db
                .activate_policy(name, *version)
                .wait()
                .map_err(|e| e.to_string())?
            {
                eprintln!("policy `{name}` version {version} is active");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("no version {version} of policy `{name}`"))
            }
        }
    }
}

/// `NAME  vVERSION  FORMAT  SHA256  [*]` for one stored policy.
fn line(policy: &StoredPolicy) -> String {
    let format = match policy.format {
        PolicyFormat::Warden => "warden",
        PolicyFormat::Rego => "rego",
    };
    format!(
        "{}\tv{}\t{format}\tsha256:{}{}",
        policy.name,
        policy.version,
        policy.sha256,
        if policy.active { "\t*" } else { "" }
    )
}

/// Reads and compiles `file` as the daemon will, so that nothing that fails to load is pushed;
/// answers the policy's name, format and source.
fn validate(file: &Path, name: Option<&str>) -> Result<(String, PolicyFormat, String), String> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let origin = file.display().to_string();
    if file.extension().is_some_and(|e| e == "rego") {
        let name = match name {
            Some(n) => n.to_owned(),
            None => file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| format!("{origin}: give the policy a --name"))?
                .to_owned(),
        };
        warden::rego::RegoPolicy::compile(
            vec![warden::rego::RegoModule::new(
                origin.clone(),
                source.clone(),
            )],
            None,
            &[],
            warden::rego::RegoLimits::default(),
        )
        .map_err(|e| format!("{origin}: {e}"))?;
        return Ok((name, PolicyFormat::Rego, source));
    }
    let policy = warden::load_policy_str(&origin, &source).map_err(|e| e.to_string())?;
    if let Some(n) = name
        && n != &*policy.info.name
    {
        return Err(format!(
            "{origin}: --name `{n}` but the policy is named `{}`",
            policy.info.name
        ));
    }
    Ok((policy.info.name.to_string(), PolicyFormat::Warden, source))
}
