//! Interoperability with an independent gRPC implementation: the Python grpcio client in
//! `tests/interop/` (stubs generated from our protos at test time) streams a fixture to
//! the real server and checks transcript, hits and a bad-input status.

use std::process::Command;

use voice_search::proto::{self, catalog_client::CatalogClient};

use crate::server::{test_config, TestServer};

#[tokio::test]
async fn python_grpcio_client_streams_and_gets_hits() {
    let server = TestServer::start(test_config()).await;
    let documents = vec![
        proto::Document {
            id: "dus".into(),
            title: "Düsseldorf".into(),
            category: "city".into(),
            ..Default::default()
        },
        proto::Document {
            id: "ber".into(),
            title: "Berlin".into(),
            category: "city".into(),
            ..Default::default()
        },
    ];
    CatalogClient::new(server.channel().await)
        .upsert_documents(proto::UpsertDocumentsRequest { documents })
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/run.sh");
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || Command::new(script).arg(addr).output())
        .await
        .unwrap()
        .expect("running tests/interop/run.sh");
    assert!(
        output.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.shutdown().await.unwrap();
}
