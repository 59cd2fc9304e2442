//! `warden certs dev`: certificates for development (rcgen): a local CA, a server certificate
//! for `localhost`, `127.0.0.1` and `::1`, and a client certificate whose identity is a SPIFFE
//! URI, so that TLS and mutual TLS can be tried without a PKI. Not for production: the CA's key
//! is written beside its certificate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use sha2::Digest as _;

use crate::EXIT_BAD_INPUT;

/// `warden certs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a development CA (`ca.pem`, `ca.key`), a server certificate (`server.pem`,
    /// `server.key`) and a client certificate (`client.pem`, `client.key`) into `--out`.
    Dev {
        /// The directory to write into (created; existing files are not overwritten).
        #[arg(long, default_value = ".warden/certs")]
        out: PathBuf,
        /// More names (DNS names or IP addresses) for the server certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// The client certificate's identity (a URI SAN).
        #[arg(long, default_value = "spiffe://warden.local/agent/dev")]
        client_id: String,
    },
}

/// Runs a `warden certs` subcommand.
pub fn run(command: &CertsCommand) -> ExitCode {
    let CertsCommand::Dev {
        out,
        sans,
        client_id,
    } = command;
    match dev(out, sans, client_id) {
        Ok(files) => {
            for file in files {
                eprintln!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("warden certs dev: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn dev(out: &Path, sans: &[String], client_id: &str) -> Result<Vec<PathBuf>, String> {
    let names = [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ];
    for name in names {
        if out.join(name).exists() {
            return Err(format!(
                "{} exists; not overwritten",
                out.join(name).display()
            ));
        }
    }
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own: clients trusting an old and a new development CA during a rotation
    // look issuers up by name, and two CAs of one name would be confused.
    let fingerprint = hex::encode(sha2::Sha256::digest(rcgen::PublicKeyData::der_bytes(
        &ca_key,
    )));
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "Warden development CA {}",
            fingerprint.get(..12).unwrap_or_default()
        ),
    );
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;

    let mut server_names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    server_names.extend(sans.iter().cloned());
    let mut server = CertificateParams::new(server_names).map_err(e)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "warden server (development)");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().map_err(e)?;
    let server_cert = server.signed_by(&server_key, &ca).map_err(e)?;

    let mut client = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    client.subject_alt_names = vec![SanType::URI(client_id.try_into().map_err(e)?)];
    client
        .distinguished_name
        .push(DnType::CommonName, "warden client (development)");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().map_err(e)?;
    let client_cert = client.signed_by(&client_key, &ca).map_err(e)?;

    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let files = [
        ("ca.pem", ca.pem(), false),
        ("ca.key", ca_key_pem, true),
        ("server.pem", server_cert.pem(), false),
        ("server.key", server_key.serialize_pem(), true),
        ("client.pem", client_cert.pem(), false),
        ("client.key", client_key.serialize_pem(), true),
    ];
    let mut written = Vec::new();
    for (name, text, secret) in files {
        let path = out.join(name);
        write_new(&path, &text, secret).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Creates `path` (never replacing a file), mode 0600 for a key.
fn write_new(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 });
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
