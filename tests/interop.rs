//! Interoperability with an independent gRPC implementation: the Python grpcio client in
//! `tests/interop/` (stubs generated from our protos at test time) streams a fixture to
//! the real server and checks transcript, hits and a bad-input status; grpcurl sends Ogg
//! Opus, FLAC and WebM Opus; and the protos pass `buf lint` (with the exceptions `proto/buf.yaml` lists and
//! explains).

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

#[test]
fn the_protos_pass_buf_lint() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/buf.sh");
    let output = Command::new(script)
        .args(["lint", "proto"])
        .output()
        .expect("running tests/interop/buf.sh");
    assert!(
        output.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn grpcurl_sends_each_compressed_codec_and_gets_the_wavs_transcript() {
    use base64::Engine;
    let server = TestServer::start(test_config()).await;
    for (file, encoding) in [
        ("q0004.opus", "OGG_OPUS"),
        ("q0004.flac", "FLAC"),
        ("q0004.webm", "WEBM_OPUS"),
    ] {
        let audio =
            base64::engine::general_purpose::STANDARD.encode(crate::common::fixture_bytes(file));
        let request = format!(
            r#"{{"config": {{"recognition": {{"encoding": "{encoding}"}}}}, "audio": "{audio}"}}"#
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/grpcurl.sh");
        let addr = server.addr.to_string();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(script)
                .args(["-plaintext", "-d", &request, &addr])
                .arg("voicesearch.v1.VoiceSearch/VoiceSearch")
                .output()
        })
        .await
        .unwrap()
        .expect("running tests/interop/grpcurl.sh");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success()
                && answer.contains("You will now be placed into the conference."),
            "{file}: {answer}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    server.shutdown().await.unwrap();
}
