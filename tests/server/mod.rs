//! The server itself: health, reflection, shutdown and the demo catalog, through real
//! gRPC clients; connections that stall before a call or stop answering
//! (`connections`), calls on one connection (`calls`), who may call what (`keys`), and
//! TLS (`tls`).

mod calls;
mod connections;
mod keys;
mod tls;

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use voice_search::config::ServeConfig;

use crate::common::server::{test_config, TestServer};

async fn health_status(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn health_answers_serving_for_every_service() {
    let server = TestServer::start(test_config()).await;
    for service in [
        "",
        "voicesearch.v1.VoiceSearch",
        "voicesearch.v1.Search",
        "voicesearch.v1.Catalog",
    ] {
        assert_eq!(
            health_status(server.channel().await, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start(test_config()).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "voicesearch.v1.VoiceSearch",
        "voicesearch.v1.Search",
        "voicesearch.v1.Catalog",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // grpcurl 1.8.6 speaks only v1alpha; it also asks for the file that defines a symbol.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "voicesearch.v1.VoiceSearch".into(),
            ),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha reflection did not return the file descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server_cleanly() {
    let config = ServeConfig {
        shutdown_grace_seconds: 1,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let addr = server.addr;
    assert_eq!(
        health_status(server.channel().await, "").await,
        ServingStatus::Serving
    );
    server.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn an_empty_index_gets_the_demo_catalog_on_first_start() {
    use voice_search::proto::search_client::SearchClient;
    use voice_search::proto::{catalog_client::CatalogClient, GetStatsRequest, SearchRequest};
    let server = TestServer::start(ServeConfig::default()).await;
    let stats = CatalogClient::new(server.channel().await)
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let expected = voice_search::search::import::DEMO_CATALOG.lines().count() as u64;
    assert_eq!(stats.document_count, expected);
    let hits = SearchClient::new(server.channel().await)
        .search(SearchRequest {
            query: "watch the shawshank redemption".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].title, "The Shawshank Redemption");
    server.shutdown().await.unwrap();
}

/// The README's configuration table, as `serve --help` describes each setting.
fn settings_table() -> String {
    let command =
        <voice_search::config::ServeFlags as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut table =
        String::from("| flag | variable | TOML key | what it sets |\n| --- | --- | --- | --- |\n");
    for arg in command.get_arguments() {
        let long = arg.get_long().expect("every setting has a long flag");
        let value = arg.get_value_names().expect("every setting takes a value")[0].to_string();
        let env = arg.get_env().expect("every setting has a variable");
        let help = arg.get_help().expect("every setting has help").to_string();
        table.push_str(&format!(
            "| `--{long} {value}` | `{}` | `{}` | {help} |\n",
            env.to_string_lossy(),
            long.replace('-', "_"),
        ));
    }
    table
}

#[test]
fn the_readme_lists_every_setting_as_help_does() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = settings_table();
    assert!(
        readme.contains(&table),
        "the README's configuration table is out of date; it should read:\n{table}"
    );
}

/// `voice-search serve` with `args` on ephemeral loopback ports and a fresh index
/// folder: whether that folder exists once it stopped, and what it wrote to stderr. A
/// server that keeps running is stopped once its stderr shows `until` or after a bound.
fn serve_briefly(args: &[&std::ffi::OsStr], until: &str) -> (bool, String) {
    use std::io::BufRead;
    let folder = tempfile::tempdir().unwrap();
    let index = folder.path().join("index");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_voice-search"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--index")
        .arg(&index)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Ok(line) =
        seen.recv_timeout(bound.saturating_duration_since(std::time::Instant::now()))
    {
        text.push_str(&line);
        text.push('\n');
        if line.contains(until) {
            break;
        }
    }
    child.kill().ok();
    child.wait().unwrap();
    (index.exists(), text)
}

#[test]
fn serve_checks_its_key_and_tls_files_before_anything_else() {
    let folder = tempfile::tempdir().unwrap();
    let missing = folder.path().join("no-such-keys.toml");
    let (index_made, said) = serve_briefly(&["--api-keys".as_ref(), missing.as_ref()], "\u{0}");
    assert!(
        !index_made,
        "the demo index was built before the key file was read"
    );
    assert!(said.contains("no-such-keys.toml"), "{said}");
    assert!(!said.contains("serving gRPC"), "{said}");

    let cert = folder.path().join("cert.pem");
    let key = folder.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let tls = [
        "--tls-cert".as_ref(),
        cert.as_ref(),
        "--tls-key".as_ref(),
        key.as_ref(),
    ];
    let (index_made, said) = serve_briefly(&tls, "\u{0}");
    assert!(
        !index_made,
        "the demo index was built before the TLS files were read"
    );
    assert!(
        said.contains("cert.pem") && said.contains("PEM certificate"),
        "{said}"
    );

    let empty = folder.path().join("empty-keys.toml");
    std::fs::write(&empty, "").unwrap();
    let (_, said) = serve_briefly(&["--api-keys".as_ref(), empty.as_ref()], "holds no keys");
    assert!(
        said.contains("holds no keys"),
        "an empty key file gave no warning:\n{said}"
    );
}
