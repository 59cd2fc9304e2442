//! `warden keys`: create, revoke and list API keys. Only SHA-256 hashes are stored.

use std::path::PathBuf;
use std::process::ExitCode;

use warden::state::KeyStore as _;
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
    /// List key ids, tenants and policies (never keys).
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
    /// Print the JWKS (public keys) of PKCS#8 PEM signing keys, current key first.
    Jwks {
        /// Signing key files.
        #[arg(required = true)]
        signing_keys: Vec<PathBuf>,
    },
}

/// Which key file: `--keys`, else the `--config` file's `keys_file`, else the default.
#[derive(clap::Args, Debug)]
pub struct KeyFileArgs {
    /// The key file.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// A `warden serve` configuration file naming the key file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl KeyFileArgs {
    fn path(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.keys {
            return Ok(p.clone());
        }
        match &self.config {
            Some(c) => Ok(ServeConfig::load(c).map_err(|e| e.to_string())?.keys_file),
            None => Ok(ServeConfig::default().keys_file),
        }
    }
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
            file,
        } => {
            let path = file.path()?;
            let store = keys::FileKeyStore::new(&path);
            let (key, record) =
                keys::create_key(&store, tenant, policy.as_deref()).map_err(|e| e.to_string())?;
            println!("{key}");
            eprintln!(
                "created key `{}` for tenant `{}` (policy `{}`) in {}; it is shown only once",
                record.id,
                record.tenant,
                record.policy_name(),
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, file } => {
            let path = file.path()?;
            let store = keys::FileKeyStore::new(&path);
            if store.revoke(id).wait().map_err(|e| e.to_string())? {
                eprintln!("revoked key `{id}`");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("warden keys: no key `{id}` in {}", path.display());
                Ok(ExitCode::from(EXIT_BAD_INPUT))
            }
        }
        KeysCommand::GenSigning { out, force } => crate::token::gen_signing(out, *force),
        KeysCommand::GenAudit { out, force } => crate::token::gen_audit(out, *force),
        KeysCommand::Jwks { signing_keys } => crate::token::print_jwks(signing_keys),
        KeysCommand::List { file } => {
            let store = keys::FileKeyStore::new(file.path()?);
            for record in store.list().wait().map_err(|e| e.to_string())? {
                println!("{}\t{}\t{}", record.id, record.tenant, record.policy_name());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
