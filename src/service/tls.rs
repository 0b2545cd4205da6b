//! The server's TLS: its identity and, for mutual TLS, the authorities client
//! certificates must chain to, read from PEM files and checked before the server starts.
//! ALPN offers HTTP/2 and HTTP/1.1, so that gRPC clients and browsers on either reach
//! the server and the page.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why the TLS files cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path} for TLS: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----): {problem}")]
    Certificate { path: PathBuf, problem: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("the certificate {cert} and the key {key} cannot serve together: {source}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the client authorities in {path} cannot check client certificates: {problem}")]
    ClientAuthorities { path: PathBuf, problem: String },
}

/// Offered in this order: gRPC clients take HTTP/2, browsers either.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The acceptor for `cert` and `key`, asking for a client certificate signed by one of
/// `client_ca`'s authorities when it is given.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    crate::tls::use_ring_for_tls();
    let chain = certificates(cert)?;
    let private_key =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|error| TlsError::Key {
            path: key.to_owned(),
            problem: error.to_string(),
        })?;
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let problem = |problem: String| TlsError::ClientAuthorities {
                path: path.to_owned(),
                problem,
            };
            let mut roots = RootCertStore::empty();
            for authority in certificates(path)? {
                roots
                    .add(authority)
                    .map_err(|error| problem(error.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|error| problem(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Identity {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::Certificate {
        path: path.to_owned(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(error.to_string()))?;
    if chain.is_empty() {
        return Err(problem("the file has no certificate section".into()));
    }
    Ok(chain)
}
