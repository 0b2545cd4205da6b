//! Interoperability with an independent gRPC implementation: the Python grpcio client in
//! `tests/interop/` (stubs generated from our protos at test time) streams a fixture to
//! the real server and checks transcript, hits and a bad-input status.

use std::process::Command;

use crate::common::server::{test_config, TestServer};

#[tokio::test]
async fn python_grpcio_client_streams_and_gets_hits() {
    let server = TestServer::start(test_config()).await;
    server
        .add_documents(&[("dus", "Düsseldorf", "city"), ("ber", "Berlin", "city")])
        .await;
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
