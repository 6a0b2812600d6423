//! TLS with rustls, from Distribution's `http.tls` keys: a PEM certificate chain and key,
//! optional client certificate authorities (every client must then present a certificate they
//! signed), and a minimum protocol version. [`Tls::reload`] re-reads the files (on SIGHUP), so a
//! renewed certificate takes effect without a restart; a reload that fails keeps the old one.
//!
//! Handshakes run in their own tasks, so a slow or silent client never holds up the accept
//! loop; [`Listener`] hands axum finished TLS streams only.
//!
//! Never logs key material; errors name files, not contents.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The lowest protocol version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 (Distribution's default; also what `tls1.0` and `tls1.1` become, since rustls
    /// speaks nothing older).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// Reads Distribution's `http.tls.minimumtls` (`tls1.0` … `tls1.3`).
    pub fn parse(s: &str) -> Result<MinVersion, String> {
        match s.trim() {
            "tls1.0" | "tls1.1" | "tls1.2" => Ok(MinVersion::Tls12),
            "tls1.3" => Ok(MinVersion::Tls13),
            other => Err(format!("http.tls.minimumtls must be tls1.2 or tls1.3, not {other:?}")),
        }
    }
}

/// Where the TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificates of the authorities client certificates must chain to; empty: no
    /// client certificates asked for.
    pub client_cas: Vec<PathBuf>,
    /// The lowest version accepted.
    pub min_version: MinVersion,
}

/// The server's TLS configuration, swappable at run time.
#[derive(Debug)]
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

fn config(s: &TlsSettings) -> Result<ServerConfig, String> {
    let read = |what: &str, p: &PathBuf| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("{what} {}: {e}", p.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what} {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{what} {} holds no PEM certificate", p.display()));
        }
        Ok(certs)
    };
    let chain = read("http.tls.certificate", &s.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("http.tls.key {}: no usable PEM private key ({e})", s.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if s.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for p in &s.client_cas {
            for c in read("http.tls.clientcas", p)? {
                roots.add(c).map_err(|e| format!("http.tls.clientcas {}: {e}", p.display()))?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("http.tls.clientcas: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("http.tls.certificate and http.tls.key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn load(settings: TlsSettings) -> Result<Tls, String> {
        let c = config(&settings)?;
        Ok(Tls { settings, current: RwLock::new(Arc::new(c)) })
    }

    /// Reads the files again; on failure the configuration in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let c = config(&self.settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections, runs each TLS handshake in a task of its own, and hands axum the
/// connections that finished it.
#[derive(Debug)]
pub struct Listener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl Listener {
    /// Starts accepting on `tcp` with `tls`.
    pub fn new(tcp: TcpListener, tls: Arc<Tls>) -> io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not set TCP_NODELAY");
                }
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Listener { ready, local })
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept loop never ends while this receiver lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_versions() {
        assert_eq!(MinVersion::parse("tls1.0"), Ok(MinVersion::Tls12));
        assert_eq!(MinVersion::parse("tls1.3"), Ok(MinVersion::Tls13));
        assert!(MinVersion::parse("ssl3").is_err());
    }

    #[test]
    fn missing_or_bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let s = TlsSettings {
            certificate: cert.clone(),
            key: dir.path().join("missing.pem"),
            client_cas: vec![],
            min_version: MinVersion::Tls12,
        };
        let e = Tls::load(s).unwrap_err();
        assert!(e.contains("cert.pem") && e.contains("no PEM certificate"), "{e}");
    }
}
