//! `warden keys`: create, revoke and list API keys. Only SHA-256 hashes are stored.

use std::path::PathBuf;
use std::process::ExitCode;

use warden_server::ServeConfig;
use warden_store::keys;

use crate::EXIT_BAD_INPUT;

/// `warden keys` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for a tenant; prints the key once (only its hash is stored).
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The policy deciding the tenant's requests (default: the policy named like the tenant).
        #[arg(long)]
        policy: Option<String>,
        /// What the key may do: `agent` (ask for decisions) or `admin` (also answer approvals).
        #[arg(long, default_value = "agent", value_parser = ["agent", "admin"])]
        role: String,
        #[command(flatten)]
        file: KeyFileArgs,
    },
    /// Revoke a key by id (the running daemon picks the change up).
    Revoke {
        /// The key id shown by `create` and `list`.
        id: String,
        #[command(flatten)]
        file: KeyFileArgs,
    },
    /// List key ids, tenants, policies and roles (never keys).
    List {
        #[command(flatten)]
        file: KeyFileArgs,
    },
    /// Generate an Ed25519 signing key for decision tokens (PKCS#8 PEM, mode 0600); prints its
    /// key id.
    GenSigning {
        /// The key file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Generate an audit MAC key (32 random bytes as hex, mode 0600).
    GenAudit {
        /// The key file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Generate a database integrity key (`database_integrity_key`: 32 random bytes as hex,
    /// mode 0600).
    GenMac {
        /// The key file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the JWKS (public keys) of PKCS#8 PEM signing keys, current key first.
    Jwks {
        /// Signing key files.
        #[arg(required = true)]
        signing_keys: Vec<PathBuf>,
    },
}

/// Where the keys are: PostgreSQL when `--database-url`, the `--config` file's `database_url`
/// or `WARDEN_DATABASE_URL` names it; else the key file: `--keys`, else the `--config` file's
/// `keys_file`, else the default.
#[derive(clap::Args, Debug)]
pub struct KeyFileArgs {
    /// The key file.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// A `warden serve` configuration file naming the key file or the database.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The PostgreSQL database holding the keys (`postgres://...`; also `WARDEN_DATABASE_URL`).
    #[arg(long)]
    database_url: Option<String>,
}

/// An opened key store, what to call it in messages, and the runtime a database runs on.
pub(crate) struct Keys {
    pub(crate) store: Box<dyn warden::state::KeyStore>,
    pub(crate) place: String,
    _runtime: Option<tokio::runtime::Runtime>,
}

/// The configuration a command acts on: the `config` file's (or the one `warden serve` would
/// find, or the defaults) with the `WARDEN_*` variables over it, and `database_url` given on
/// the command line over both.
pub(crate) fn resolve_config(
    config: Option<&std::path::Path>,
    database_url: Option<&str>,
) -> Result<ServeConfig, String> {
    // The same file `warden serve` would read, and the same `WARDEN_*` variables over it.
    let path = crate::serve::config_path(config);
    let (mut resolved, _) =
        ServeConfig::resolve(path.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(url) = database_url {
        resolved.database_url = Some(warden_server::config::SecretUrl(url.to_owned()));
    }
    resolved.urls_from_env();
    Ok(resolved)
}

impl KeyFileArgs {
    fn config(&self) -> Result<ServeConfig, String> {
        resolve_config(self.config.as_deref(), self.database_url.as_deref())
    }

    pub(crate) fn open(&self) -> Result<Keys, String> {
        let config = self.config()?;
        match (&self.keys, &config.database_url) {
            (None, Some(_)) => {
                let (database, runtime) = connect(&config)?;
                database.check_schema().wait().map_err(|e| e.to_string())?;
                Ok(Keys {
                    store: Box::new(database),
                    place: "the database".to_owned(),
                    _runtime: Some(runtime),
                })
            }
            (keys, _) => {
                let path = keys.clone().unwrap_or(config.keys_file);
                Ok(Keys {
                    place: path.display().to_string(),
                    store: Box::new(keys::FileKeyStore::new(&path)),
                    _runtime: None,
                })
            }
        }
    }
}

/// Connects to the PostgreSQL database `config` names (with its `database_integrity_key`) on a
/// runtime of its own (kept with the database).
pub(crate) fn connect(
    config: &ServeConfig,
) -> Result<(warden_store::Database, tokio::runtime::Runtime), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let database = runtime
        .block_on(warden_server::connect_database(config))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            "no database: give --database-url, WARDEN_DATABASE_URL or a config with database_url"
                .to_owned()
        })?;
    Ok((database, runtime))
}

/// Runs a `warden keys` subcommand.
pub fn run(command: &KeysCommand) -> ExitCode {
    match run_inner(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden keys: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn run_inner(command: &KeysCommand) -> Result<ExitCode, String> {
    match command {
        KeysCommand::Create {
            tenant,
            policy,
            role,
            file,
        } => {
            let role = warden::state::KeyRole::parse(role)
                .ok_or_else(|| format!("unknown role `{role}`: expected `agent` or `admin`"))?;
            let keys = file.open()?;
            let (key, record) =
                keys::create_key_with_role(&*keys.store, tenant, policy.as_deref(), role)
                    .map_err(|e| e.to_string())?;
            println!("{key}");
            eprintln!(
                "created {} key `{}` for tenant `{}` (policy `{}`) in {}; it is shown only once",
                record.role.as_str(),
                record.id,
                record.tenant,
                record.policy_name(),
                keys.place
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, file } => {
            let keys = file.open()?;
            if keys.store.revoke(id).wait().map_err(|e| e.to_string())? {
                eprintln!("revoked key `{id}`");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("warden keys: no key `{id}` in {}", keys.place);
                Ok(ExitCode::from(EXIT_BAD_INPUT))
            }
        }
        KeysCommand::GenSigning { out, force } => crate::token::gen_signing(out, *force),
        KeysCommand::GenAudit { out, force } => crate::token::gen_audit(out, *force),
        KeysCommand::GenMac { out, force } => {
            crate::token::gen_mac(out, *force, "database integrity key")
        }
        KeysCommand::Jwks { signing_keys } => crate::token::print_jwks(signing_keys),
        KeysCommand::List { file } => {
            let keys = file.open()?;
            for record in keys.store.list().wait().map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}\t{}",
                    record.id,
                    record.tenant,
                    record.policy_name(),
                    record.role.as_str()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `warden migrate`.
pub fn migrate(database_url: Option<String>, config: Option<&std::path::Path>) -> ExitCode {
    let args = KeyFileArgs {
        keys: None,
        config: config.map(std::path::Path::to_path_buf),
        database_url,
    };
    let result = args.config().and_then(|config| {
        let (database, _runtime) = connect(&config)?;
        database.migrate().wait().map_err(|e| e.to_string())
    });
    match result {
        Ok(applied) if applied.is_empty() => {
            eprintln!("warden migrate: the database is up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            eprintln!("warden migrate: applied migrations {applied:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warden migrate: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
