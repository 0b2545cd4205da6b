//! Connections that never make a call: silent sockets are closed after the start
//! deadline, one past the connection limit is closed at once, a peer that stops
//! answering HTTP/2 pings is dropped, and through all of it real clients are served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::SearchRequest;

use crate::common::server::{test_config, TestServer};

/// Longest any test here waits for the server to close a connection.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection; false if it stays open past the bound.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    let waited = tokio::time::timeout(CLOSE_BOUND, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    waited.is_ok()
}

async fn search_works(server: &TestServer) {
    let mut client = SearchClient::new(server.channel().await);
    let response = client
        .search(SearchRequest {
            query: "anything".into(),
            page_size: 1,
            ..Default::default()
        })
        .await;
    assert!(response.is_ok(), "{response:?}");
}

#[tokio::test]
async fn silent_connections_are_closed_and_clients_still_get_in() {
    let server = TestServer::start(voice_search::config::ServeConfig {
        max_connections: 4,
        connection_start_seconds: 0.5,
        ..test_config()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Every place is taken by a silent socket: one more is closed as soon as accepted.
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_by_server(&mut extra).await,
        "a connection past the limit stayed open"
    );
    for stream in &mut silent {
        assert!(
            closed_by_server(stream).await,
            "a silent connection stayed open"
        );
    }
    search_works(&server).await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let server = TestServer::start(voice_search::config::ServeConfig {
        keepalive_seconds: 0.5,
        ..test_config()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing: no call, no PING ACK.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut stream).await,
        "an unresponsive peer stayed connected"
    );
    search_works(&server).await;
}
