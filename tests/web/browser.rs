//! The voice search page in a real browser: headless Chromium (Debian's package) loads it
//! from the server, searches a typed query through gRPC-Web, then records a spoken one
//! from a fake microphone playing a fixture, once sent whole over gRPC-Web and once
//! streamed over the WebSocket, where interim results show before the button is released
//! and the final matches the one-shot answer, its words carrying their times and the
//! recognized name marked, as a person pressing the button would see them. Firefox ESR
//! (over WebDriver BiDi, its fake microphone playing a tone) streams its Ogg Opus
//! recording over the WebSocket and gets its final. The screenshot is
//! `target/browser/voice-search-page.png` (the picture in docs/api.md).

use std::process::Command;

use serde_json::Value;
use voice_search::config::ServeConfig;

use crate::common::server::{test_config, TestServer};

/// Runs a browser driver of `tests/web/browser/` with `args` (the driver first); what
/// the page showed, as the driver's last line of JSON.
async fn run_driver(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/browser/run.sh");
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || Command::new(script).args(&args).output())
        .await
        .unwrap()
        .expect("running tests/web/browser/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

#[tokio::test]
async fn a_spoken_query_in_chromium_shows_its_transcript_and_hits() {
    let server = TestServer::start(ServeConfig {
        demo_catalog: true,
        ..test_config()
    })
    .await;
    let screenshot = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/browser/voice-search-page.png"
    );
    std::fs::create_dir_all(std::path::Path::new(screenshot).parent().unwrap()).unwrap();
    let clip = crate::common::fixture_path("q0070.wav");
    // The clip is 2.0 s; the button is held a little longer, as a person would.
    let hold_ms = "2600";
    let url = format!("http://{}/", server.addr);
    let shown = run_driver(&[
        "drive.mjs",
        &url,
        clip.to_str().unwrap(),
        hold_ms,
        screenshot,
        "directions to tokyo",
    ])
    .await;

    let typed = &shown["typed"];
    assert_eq!(typed["state"], "done", "{typed}");
    assert_eq!(typed["hits"][0]["title"], "Tokyo", "{typed}");

    let spoken = &shown["spoken"];
    assert_eq!(spoken["state"], "done", "{spoken}");
    assert_eq!(spoken["path"], "websocket", "{spoken}");
    assert!(
        spoken["interimsBeforeRelease"].as_u64().unwrap() >= 1,
        "an interim result before the button was released: {spoken}"
    );
    assert_eq!(
        spoken["timedWords"].as_u64(),
        Some(
            spoken["transcript"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count() as u64
        ),
        "every word shown with its times: {spoken}"
    );
    assert!(
        spoken["marked"]
            .as_array()
            .unwrap()
            .contains(&Value::from("lambs.")),
        "the recognized name is marked: {spoken}"
    );
    let whole = &shown["whole"];
    assert_eq!(whole["path"], "grpc-web", "{whole}");
    assert_eq!(
        (&whole["transcript"], &whole["hits"][0]),
        (&spoken["transcript"], &spoken["hits"][0]),
        "the stream's final is what the one-shot call answers"
    );
    let transcript = spoken["transcript"].as_str().unwrap().to_lowercase();
    assert!(transcript.contains("silence of the lambs"), "{spoken}");
    assert_eq!(
        spoken["hits"][0]["title"], "The Silence of the Lambs",
        "{spoken}"
    );
    assert_eq!(spoken["hits"][0]["category"], "movie", "{spoken}");
    assert!(
        spoken["latency"]
            .as_str()
            .unwrap()
            .starts_with("answered in"),
        "{spoken}"
    );
    assert_eq!(shown["consoleErrors"], Value::Array(vec![]), "{shown}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_page_streams_from_firefox() {
    let server = TestServer::start(ServeConfig {
        demo_catalog: true,
        ..test_config()
    })
    .await;
    let url = format!("http://{}/", server.addr);
    let shown = run_driver(&["firefox.mjs", &url, "2600"]).await;
    let page = &shown["shown"];
    // Firefox's fake microphone plays a tone, not speech: what counts is that its Ogg
    // Opus chunks went over the socket and the final came back.
    assert_eq!(page["state"], "done", "{shown}");
    assert_eq!(page["path"], "websocket", "{shown}");
    let latency = page["latency"].as_str().unwrap();
    assert!(latency.starts_with("answered in"), "{shown}");
    assert!(
        latency.contains(" s of audio"),
        "the recording reached the server: {shown}"
    );
    assert_eq!(shown["consoleErrors"], Value::Array(vec![]), "{shown}");
    server.shutdown().await.unwrap();
}
