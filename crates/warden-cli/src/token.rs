//! `warden token verify` and signing-key generation for `warden keys gen-signing`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use warden_proof::{Ed25519Key, ExposeSecret, Jwks, MacKey, TokenVerifier};

use crate::EXIT_BAD_INPUT;

/// `warden token` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Verify a decision token against a JWKS and the call's arguments: exit 0 and print the
    /// claims when valid, exit 1 with the reason when not, 2 when an input cannot be read.
    Verify {
        /// The JWKS document (as served at `/.well-known/jwks.json`).
        #[arg(long)]
        jwks: PathBuf,
        /// A JSON file holding the call's `args`.
        #[arg(long)]
        args: PathBuf,
        /// The tool being called (default: accept the token's tool and print it).
        #[arg(long)]
        tool: Option<String>,
        /// Require this issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Require this audience (`aud`): `TENANT/POLICY` for the daemon's tokens, with `%` and
        /// `/` in either written `%25` and `%2F`.
        #[arg(long)]
        audience: Option<String>,
        /// Verify as of this unix time (default: now).
        #[arg(long, hide = true)]
        now: Option<u64>,
        /// The token.
        token: String,
    },
}

/// Runs a `warden token` subcommand.
pub fn run(command: &TokenCommand) -> ExitCode {
    let TokenCommand::Verify {
        jwks,
        args,
        tool,
        issuer,
        audience,
        now,
        token,
    } = command;
    let jwks = match std::fs::read(jwks)
        .map_err(|e| format!("cannot read `{}`: {e}", jwks.display()))
        .and_then(|b| {
            Jwks::from_json(&b).map_err(|e| format!("`{}` is not a JWKS: {e}", jwks.display()))
        }) {
        Ok(j) => j,
        Err(e) => return bad_input(&e),
    };
    let args: Value = match std::fs::read(args)
        .map_err(|e| format!("cannot read `{}`: {e}", args.display()))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("`{}` is not JSON: {e}", args.display()))
        }) {
        Ok(a) => a,
        Err(e) => return bad_input(&e),
    };
    let now = now.unwrap_or_else(unix_now);
    let mut verifier = TokenVerifier::new(jwks);
    if let Some(iss) = issuer {
        verifier = verifier.with_issuer(iss.clone());
    }
    if let Some(aud) = audience {
        verifier = verifier.with_audience(aud.clone());
    }
    let token = token.trim();
    let tool = match tool {
        Some(t) => t.clone(),
        // No tool given: check everything else against the token's own tool.
        None => match verifier.verify_signature(token) {
            Ok(c) => c.tool,
            Err(e) => return invalid(&e.to_string()),
        },
    };
    match verifier.verify(token, &tool, &args, now) {
        Ok(claims) => {
            println!("valid");
            println!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => invalid(&e.to_string()),
    }
}

fn invalid(reason: &str) -> ExitCode {
    println!("invalid: {reason}");
    ExitCode::from(1)
}

fn bad_input(e: &str) -> ExitCode {
    eprintln!("warden token verify: {e}");
    ExitCode::from(EXIT_BAD_INPUT)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `warden keys gen-signing --out FILE`: a new Ed25519 key as PKCS#8 PEM (mode 0600); prints
/// its key id.
pub fn gen_signing(out: &Path, force: bool) -> Result<ExitCode, String> {
    let key = Ed25519Key::generate().map_err(|e| e.to_string())?;
    let pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    write_secret(out, pem.expose_secret().as_bytes(), force)?;
    println!("{}", key.kid());
    eprintln!(
        "wrote Ed25519 signing key `{}` to {}",
        key.kid(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `warden keys gen-audit --out FILE`: a new 32-byte audit MAC key as hex (mode 0600).
pub fn gen_audit(out: &Path, force: bool) -> Result<ExitCode, String> {
    gen_mac(out, force, "audit MAC key")
}

/// Writes a fresh MAC key (32 random bytes as hex) to `out`, mode 0600; `what` names it.
pub fn gen_mac(out: &Path, force: bool, what: &str) -> Result<ExitCode, String> {
    let key = MacKey::generate().map_err(|e| e.to_string())?;
    let mut text = key.to_hex().expose_secret().to_owned();
    text.push('\n');
    write_secret(out, text.as_bytes(), force)?;
    eprintln!("wrote {what} to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a key file readable by its owner only (mode 0600, whatever the mode of a file it
/// replaces); refuses to overwrite unless `force`. The key goes into a new file created 0600 next
/// to `path`, which is then renamed over it: an existing file's open or mode is never reused,
/// and a failure leaves the old key whole.
fn write_secret(path: &Path, bytes: &[u8], force: bool) -> Result<(), String> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(format!(
            "`{}` exists (use --force to replace it)",
            path.display()
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| format!("`{}` is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = |mut f: std::fs::File| -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        if force {
            std::fs::rename(&tmp, path)
        } else {
            // Without --force a file that appeared meanwhile is not replaced.
            std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
        }
    };
    let f = opts
        .open(&tmp)
        .map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    write(f).map_err(|e| {
        // The temporary file holds the key: do not leave it behind.
        if let Err(rm) = std::fs::remove_file(&tmp)
            && rm.kind() != std::io::ErrorKind::NotFound
        {
            return format!(
                "cannot write `{}`: {e}; and cannot remove `{}`: {rm}",
                path.display(),
                tmp.display()
            );
        }
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("`{}` exists (use --force to replace it)", path.display())
        } else {
            format!("cannot write `{}`: {e}", path.display())
        }
    })
}

/// `warden keys jwks KEY...`: the public JWKS of signing keys.
pub fn print_jwks(paths: &[PathBuf]) -> Result<ExitCode, String> {
    let mut jwks = Jwks::default();
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
        let key = Ed25519Key::from_pkcs8_pem(&warden_proof::SecretString::from(text))
            .map_err(|e| format!("`{}`: {e}", p.display()))?;
        jwks.keys.push(key.public_jwk());
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&jwks).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}
