//! TLS on the listener (rustls, TLS 1.3; 1.2 only when configured), with mutual TLS when a
//! client CA bundle is set, and the certificate, key and CA bundle reloaded from their files
//! without a restart: new connections get the new ones, open connections finish on theirs.
//!
//! The files are checked for a change (modification time and size) every `reload_interval_ms`
//! rather than watched: a mounted Kubernetes secret changes by swapping a symlink, which file
//! watchers miss. A new set that does not load (a key that does not match, a bad PEM) is logged
//! and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsSettings, TlsVersion};

/// The listener's TLS: the acceptor, and what reloads its certificate and CA bundle.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    files: Arc<Files>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.files.settings.cert)
            .field("client_ca", &self.files.settings.client_ca)
            .finish_non_exhaustive()
    }
}

/// The files and what was loaded from them.
struct Files {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    certified: ArcSwap<CertifiedKey>,
    /// Set when `client_ca` is: the verifier of client certificates.
    clients: Option<ArcSwap<Verifier>>,
    /// The files' modification times and sizes when last loaded.
    stamps: parking_lot::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

type Verifier = Arc<dyn ClientCertVerifier>;

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn certified_key(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<CertifiedKey, String> {
    let chain = certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| format!("{}: {e}", settings.key.display()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{}: {e}", settings.cert.display()))
}

fn verifier(bundle: &Path, provider: &Arc<CryptoProvider>) -> Result<Verifier, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(bundle)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|e| format!("{}: {e}", bundle.display()))
}

impl Files {
    fn paths(&self) -> Vec<&Path> {
        let s = &self.settings;
        [
            Some(s.cert.as_path()),
            Some(s.key.as_path()),
            s.client_ca.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn certified_key(&self) -> Result<CertifiedKey, String> {
        certified_key(&self.settings, &self.provider)
    }

    fn verifier(&self, bundle: &Path) -> Result<Verifier, String> {
        verifier(bundle, &self.provider)
    }

    /// Loads the files again when one changed; keeps what is loaded when they do not load.
    fn refresh(&self) {
        let now: Vec<_> = self.paths().into_iter().map(stamp).collect();
        let mut stamps = self.stamps.lock();
        if *stamps == now {
            return;
        }
        let loaded = self.certified_key().and_then(|certified| {
            let verifier = match (&self.settings.client_ca, &self.clients) {
                (Some(bundle), Some(_)) => Some(self.verifier(bundle)?),
                _ => None,
            };
            Ok((certified, verifier))
        });
        match loaded {
            Ok((certified, verifier)) => {
                self.certified.store(Arc::new(certified));
                if let (Some(slot), Some(verifier)) = (&self.clients, verifier) {
                    slot.store(Arc::new(verifier));
                }
                *stamps = now;
                tracing::info!("TLS certificate reloaded");
            }
            Err(e) => {
                // Not retried until the files change again.
                *stamps = now;
                tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous ones");
            }
        }
    }
}

/// Serves the certificate loaded last.
#[derive(Debug)]
struct Resolver(Arc<FilesRef>);

/// [`Files`] behind a `Debug` the rustls traits require.
struct FilesRef(Arc<Files>);

impl std::fmt::Debug for FilesRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.0.certified.load_full())
    }
}

/// Verifies client certificates against the CA bundle loaded last.
#[derive(Debug)]
struct Clients(Arc<FilesRef>);

impl Clients {
    fn current(&self) -> Option<Verifier> {
        self.0
            .0
            .clients
            .as_ref()
            .map(|slot| Arc::clone(&*slot.load_full()))
    }
}

impl ClientCertVerifier for Clients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from a bundle that may be swapped meanwhile; they are
        // optional, and clients holding one certificate send it without them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.current() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no client CA".to_owned())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        match self.current() {
            Some(v) => v.verify_tls12_signature(message, cert, dss),
            None => Err(rustls::Error::General("no client CA".to_owned())),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        match self.current() {
            Some(v) => v.verify_tls13_signature(message, cert, dss),
            None => Err(rustls::Error::General("no client CA".to_owned())),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// The identity a verified client certificate carries, attached to each request of its
/// connection: its first `spiffe://` URI SAN, else its subject's common name, else its whole
/// subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity(pub Arc<str>);

/// Longest identity taken from a certificate, in bytes (a longer one is not used).
const MAX_IDENTITY_BYTES: usize = 2048;

/// The identity of the client certificate chain `certs` (the client's own certificate first).
pub fn client_identity(certs: &[CertificateDer<'_>]) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let spiffe = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                    Some((*uri).to_owned())
                }
                _ => None,
            })
        });
    let identity = spiffe
        .or_else(|| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| cert.subject().to_string());
    (!identity.is_empty() && identity.len() <= MAX_IDENTITY_BYTES)
        .then(|| ClientIdentity(Arc::from(identity)))
}

impl Tls {
    /// Loads the certificate, key and CA bundle `settings` name; an error names the file.
    pub fn load(settings: &TlsSettings) -> Result<Self, String> {
        let identity = match settings.identity {
            crate::config::TlsIdentity::None => None,
            crate::config::TlsIdentity::Principal => Some("principal"),
            crate::config::TlsIdentity::Tenant => Some("tenant"),
        };
        if let Some(identity) = identity
            && settings.client_ca.is_none()
        {
            return Err(format!(
                "tls.identity: `{identity}` needs tls.client_ca (client certificates)"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = certified_key(settings, &provider)?;
        let clients = match &settings.client_ca {
            Some(bundle) => Some(ArcSwap::from_pointee(verifier(bundle, &provider)?)),
            None => None,
        };
        let files = Files {
            settings: settings.clone(),
            provider: Arc::clone(&provider),
            certified: ArcSwap::from_pointee(certified),
            clients,
            stamps: parking_lot::Mutex::new(Vec::new()),
        };
        *files.stamps.lock() = files.paths().into_iter().map(stamp).collect();
        let files = Arc::new(files);
        let shared = Arc::new(FilesRef(Arc::clone(&files)));
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = if settings.client_ca.is_some() {
            builder.with_client_cert_verifier(Arc::new(Clients(Arc::clone(&shared))))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(shared)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            files,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Checks the files for a change every `reload_interval_ms`, for as long as the daemon runs.
    pub fn spawn_reloader(&self) -> tokio::task::JoinHandle<()> {
        let files = Arc::clone(&self.files);
        let every = Duration::from_millis(files.settings.reload_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let files = Arc::clone(&files);
                // File reads and key parsing off the runtime's workers.
                if let Err(e) = tokio::task::spawn_blocking(move || files.refresh()).await {
                    tracing::error!(error = %e, "TLS reload task failed");
                }
            }
        })
    }

    /// The files this TLS setting reads.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.paths().into_iter().map(Path::to_owned).collect()
    }
}
