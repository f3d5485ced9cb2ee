//! Test support for TLS: a certificate authority made in the test (rcgen), certificates it signs
//! for 127.0.0.1, and a blocking HTTPS client (rustls) whose failures are answers, like
//! `cluster_support::call`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::Response;

/// A certificate authority whose files live in `dir`.
pub struct Ca {
    name: String,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", self.name)
    }
}

/// A certificate the CA signed, its key, and where both were written.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/{name}-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Ca {
            name: name.to_owned(),
            dir: dir.to_owned(),
            issuer,
        };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).unwrap();
        ca
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for 127.0.0.1 and localhost, good for a server and a client, written to
    /// `dir/{file}.pem` and `dir/{file}.key`.
    pub fn issue(&self, file: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} ({})", self.name));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A client that trusts this CA and presents no certificate.
    pub fn client(&self) -> Arc<ClientConfig> {
        Arc::new(
            builder()
                .with_root_certificates(self.roots())
                .with_no_client_auth(),
        )
    }

    /// A client that trusts this CA and presents `cert` (which any CA may have signed).
    pub fn client_presenting(&self, cert: &Issued) -> Arc<ClientConfig> {
        let key = PrivateKeyDer::try_from(cert.key_der.clone()).unwrap();
        Arc::new(
            builder()
                .with_root_certificates(self.roots())
                .with_client_auth_cert(vec![cert.der.clone()], key)
                .unwrap(),
        )
    }
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
}

/// A TLS connection to `addr`, handshake done.
fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).unwrap();
    tcp.set_write_timeout(Some(timeout)).unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let connection =
        ClientConnection::new(config.clone(), name).map_err(|e| format!("client: {e}"))?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(stream)
}

/// Sends one request over HTTPS (`Connection: close`) and reads the whole answer.
pub fn https(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    https_within(
        addr,
        config,
        (method, path, body, headers),
        Duration::from_secs(10),
    )
}

/// `https` with a deadline for each step.
pub fn https_within(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    (method, path, body, headers): (&str, &str, &[u8], &[(&str, &str)]),
    timeout: Duration,
) -> Result<Response, String> {
    let mut stream = connect(addr, config, timeout)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let raw = read_all(&mut stream)?;
    crate::common::try_parse_response(&raw)
        .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)))
}

/// Reads to the end; a peer that closes without TLS's close_notify after a whole answer is the
/// end too.
fn read_all(stream: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// The certificate the server at `addr` presents now.
pub fn presented_certificate(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> Result<CertificateDer<'static>, String> {
    let stream = connect(addr, config, Duration::from_secs(5))?;
    let certs = stream
        .conn
        .peer_certificates()
        .ok_or("no certificate presented")?;
    Ok(certs[0].clone().into_owned())
}

/// A keep-alive HTTPS connection: several requests, one after the other, on one handshake.
pub struct KeptAlive {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl KeptAlive {
    pub fn open(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<KeptAlive, String> {
        Ok(KeptAlive {
            stream: connect(addr, config, Duration::from_secs(10))?,
        })
    }

    /// `GET path` on this connection; the answer must carry a Content-Length.
    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.stream
            .write_all(head.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(response) = whole_answer(&raw) {
                return Ok(response);
            }
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before a whole answer".into());
            }
            raw.extend_from_slice(&buf[..n]);
        }
    }
}

/// The answer in `raw` once its body is all there, by its Content-Length.
pub fn whole_answer(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let response = crate::common::try_parse_response(&raw[..end])?;
    let length: usize = response.header("content-length")?.parse().ok()?;
    (raw.len() >= end + length).then(|| crate::common::try_parse_response(raw))?
}
