//! TLS on a real server, with certificates drawn for the test: a client that trusts the
//! server's authority searches, a plaintext one gets nothing; with a client authority
//! set, only a client holding a certificate it signed gets in (mutual TLS); and grpcurl,
//! an independent client, searches over TLS with an API key and is refused without one;
//! so does our own `voice-search client`, over mutual TLS.

use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use voice_search::config::ServeConfig;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::SearchRequest;
use voice_search::service::auth::keys::{add_key, KeyLimits, Role};

use crate::common::server::{test_config, TestServer};

/// PEM files of an authority, a server certificate for localhost and a client
/// certificate, both signed by it.
struct Pki {
    folder: tempfile::TempDir,
    ca: String,
    client: (String, String),
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let client = leaf(vec!["test-client".into()]);
        let folder = tempfile::tempdir().unwrap();
        for (name, pem) in [
            ("ca.pem", &ca),
            ("server.pem", &server.0),
            ("server.key", &server.1),
            ("client.pem", &client.0),
            ("client.key", &client.1),
        ] {
            std::fs::write(folder.path().join(name), pem).unwrap();
        }
        Self { folder, ca, client }
    }

    fn server_config(&self, mutual: bool) -> ServeConfig {
        let path = |name: &str| Some(self.folder.path().join(name));
        ServeConfig {
            tls_cert: path("server.pem"),
            tls_key: path("server.key"),
            tls_client_ca: if mutual { path("ca.pem") } else { None },
            ..test_config()
        }
    }
}

/// Whether a search succeeds over a channel to `server` built with `tls` (plaintext
/// without it).
async fn searches(server: &TestServer, tls: Option<ClientTlsConfig>) -> bool {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{}", server.addr)).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let request = SearchRequest {
        query: "anything".into(),
        page_size: 1,
        ..Default::default()
    };
    SearchClient::new(channel).search(request).await.is_ok()
}

fn trusting(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
}

#[tokio::test]
async fn a_tls_server_serves_clients_that_trust_it_and_no_plaintext() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_config(false)).await;
    assert!(searches(&server, Some(trusting(&pki))).await);
    assert!(
        !searches(&server, None).await,
        "plaintext reached a TLS server"
    );
}

#[tokio::test]
async fn mutual_tls_lets_in_only_clients_with_a_signed_certificate() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_config(true)).await;
    assert!(
        !searches(&server, Some(trusting(&pki))).await,
        "no client certificate, yet served"
    );
    let identity = Identity::from_pem(&pki.client.0, &pki.client.1);
    assert!(searches(&server, Some(trusting(&pki).identity(identity))).await);
}

#[tokio::test]
async fn grpcurl_searches_over_tls_with_a_key_and_is_refused_without() {
    let pki = Pki::new();
    let keys = pki.folder.path().join("keys.toml");
    let key = add_key(&keys, "operator", &[Role::Search], KeyLimits::default()).unwrap();
    let server = TestServer::start(ServeConfig {
        api_keys: Some(keys),
        ..pki.server_config(false)
    })
    .await;
    let grpcurl = |authorization: Option<String>| {
        let mut command = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/grpcurl.sh"
        ));
        command
            .arg("-cacert")
            .arg(pki.folder.path().join("ca.pem"))
            .args([
                "-authority",
                "localhost",
                "-d",
                r#"{"query": "heat", "page_size": 1}"#,
            ]);
        if let Some(authorization) = authorization {
            command.args(["-H", &authorization]);
        }
        command.args([&server.addr.to_string(), "voicesearch.v1.Search/Search"]);
        command
    };
    let with_key = grpcurl(Some(format!("authorization: Bearer {key}")));
    let without = grpcurl(None);
    let (with_key, without) = tokio::task::spawn_blocking(move || {
        let run =
            |mut command: Command| command.output().expect("running tests/interop/grpcurl.sh");
        (run(with_key), run(without))
    })
    .await
    .unwrap();
    assert!(
        with_key.status.success(),
        "grpcurl with a key failed:\n{}",
        String::from_utf8_lossy(&with_key.stderr)
    );
    let refused = String::from_utf8_lossy(&without.stderr);
    assert!(
        !without.status.success() && refused.contains("Unauthenticated"),
        "{refused}"
    );
}

#[tokio::test]
async fn our_client_streams_over_mutual_tls_with_a_key_and_is_refused_without() {
    let pki = Pki::new();
    let keys = pki.folder.path().join("keys.toml");
    let key = add_key(&keys, "phone", &[Role::Search], KeyLimits::default()).unwrap();
    let server = TestServer::start(ServeConfig {
        api_keys: Some(keys),
        ..pki.server_config(true)
    })
    .await;
    let client = |key: Option<&str>| {
        let path = |name: &str| pki.folder.path().join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_voice-search"));
        command
            .arg("client")
            .arg(crate::common::fixture_path("q0004.wav"))
            .args(["--server", &server.addr.to_string()])
            .arg("--ca-cert")
            .arg(path("ca.pem"))
            .arg("--client-cert")
            .arg(path("client.pem"))
            .arg("--client-key")
            .arg(path("client.key"))
            .env_remove("VOICE_SEARCH_API_KEY");
        if let Some(key) = key {
            command.env("VOICE_SEARCH_API_KEY", key);
        }
        command
    };
    let (with_key, without) = (client(Some(&key)), client(None));
    let (with_key, without) = tokio::task::spawn_blocking(move || {
        let run = |mut command: Command| command.output().expect("running voice-search client");
        (run(with_key), run(without))
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&with_key.stdout).to_lowercase();
    assert!(
        with_key.status.success() && printed.contains("conference"),
        "{printed}\n{}",
        String::from_utf8_lossy(&with_key.stderr)
    );
    let refused = String::from_utf8_lossy(&without.stderr);
    assert!(
        !without.status.success() && refused.contains("needs an API key"),
        "{refused}"
    );
}

/// A rustls client configuration that trusts `pki`'s authority and offers `alpn`.
fn rustls_client(pki: &Pki, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    voice_search::tls::use_ring_for_tls();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    std::sync::Arc::new(config)
}

/// A TLS client's first flight, its ClientHello, as bytes.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = "localhost".try_into().unwrap();
    let mut client = rustls::ClientConnection::new(rustls_client(pki, &[b"h2"]), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn every_step_of_a_tls_start_has_a_deadline() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let pki = Pki::new();
    let server = TestServer::start(ServeConfig {
        max_connections: 3,
        connection_start_seconds: 0.5,
        ..pki.server_config(false)
    })
    .await;
    let mut record_header = TcpStream::connect(server.addr).await.unwrap();
    record_header
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8])
        .await
        .unwrap();
    let mut hello = TcpStream::connect(server.addr).await.unwrap();
    hello.write_all(&client_hello(&pki)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(rustls_client(&pki, &[b"h2"]));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut handshaken = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    use super::connections::closed_by_server;
    assert!(
        closed_by_server(&mut record_header).await,
        "half a TLS record"
    );
    assert!(closed_by_server(&mut hello).await, "a ClientHello alone");
    assert!(
        closed_by_server(&mut handshaken).await,
        "a handshake and no HTTP/2 preface"
    );
    assert!(searches(&server, Some(trusting(&pki))).await);
}

#[tokio::test]
async fn a_browser_on_http1_gets_the_page_over_tls() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_config(false)).await;
    let connector = tokio_rustls::TlsConnector::from(rustls_client(&pki, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("a TLS handshake offering only http/1.1");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let page = super::connections::get_page(stream).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(
        page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"),
        "{page:.200}"
    );
}
