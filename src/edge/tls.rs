//! TLS with rustls (docs/API.md, "Exposure"): the server's certificate and key, read again on
//! `SIGHUP` without dropping a connection; and, on a cluster member, the client side its peers
//! are called with (mutual TLS with `--peer-ca`).
//!
//! The certificate in use sits behind one lock that both sides' resolvers read at each
//! handshake, so a reload changes what every new handshake presents, as server and as client,
//! and nothing else: connections already set up keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The files TLS is read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--peer-ca`: members present their certificates and take only ones this CA signed.
    pub peer_ca: Option<PathBuf>,
}

/// The server's TLS, and the client TLS a member calls its peers with.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentKey>,
    peer_roots: Option<Arc<RootCertStore>>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Reads the files and builds both sides; any problem names the file and the option.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(CurrentKey(RwLock::new(certified_key(&files, &provider)?)));
        let peer_roots = files.peer_ca.as_deref().map(read_roots).transpose()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let server = match &peer_roots {
            // Certificates are asked for but not required: clients of the API have none; a
            // certificate that is presented must be one the CA signed, or the handshake fails.
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError(format!("--peer-ca: {e}")))?;
                server.with_client_cert_verifier(verifier)
            }
            None => server.with_no_client_auth(),
        };
        let mut server = server.with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files,
            provider,
            current,
            peer_roots,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Reads the certificate and key again; on any problem keeps the ones in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files, &self.provider)?;
        *self.current.0.write() = key;
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Whether members authenticate with certificates (`--peer-ca`).
    pub fn member_certificates(&self) -> bool {
        self.files.peer_ca.is_some()
    }

    /// The client side for calling peers: HTTPS, verifying them against the peer CA (or the
    /// system's roots without one), presenting this member's certificate to them with one.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        let client = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        Ok(match &self.peer_roots {
            Some(roots) => client
                .with_root_certificates(roots.clone())
                .with_client_cert_resolver(self.current.clone()),
            None => client
                .with_root_certificates(system_roots())
                .with_no_client_auth(),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The certificate chain and key of `files`, checked to belong together.
fn certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError(format!("--tls-key {}: {e}", files.key.display())))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError(format!(
            "--tls-key {} does not go with --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(Arc::new(key))
}

fn read_certs(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |e: &dyn std::fmt::Display| TlsError(format!("{option} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(&e))?;
    if certs.is_empty() {
        return Err(failed(&"no CERTIFICATE block in it"));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    roots_from(path, "--peer-ca")
}

/// The certificates of the PEM file `path` (named in errors as `option`) as trusted roots.
fn roots_from(path: &Path, option: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, option)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{option} {}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// A client's TLS side trusting `ca` (a PEM file), or the system's roots: what the command-line
/// tools that call a server use.
pub(crate) fn client_trusting(ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(path) => roots_from(path, "--ca")?,
        None => Arc::new(system_roots()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The system's trusted roots, for members that talk HTTPS without a peer CA.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's trusted certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system roots for calling peers");
    roots
}

/// The certificate and key in use; both sides of every new handshake read it.
#[derive(Debug)]
struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

impl ResolvesClientCert for CurrentKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
