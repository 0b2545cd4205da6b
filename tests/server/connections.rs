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
pub(super) async fn closed_by_server(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
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
    search_works_on(server.channel().await).await;
}

async fn search_works_on(channel: tonic::transport::Channel) {
    let response = SearchClient::new(channel)
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

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test]
async fn every_step_before_a_first_call_has_a_deadline() {
    let stalls: [&[u8]; 5] = [
        b"P",
        b"PRI * HTTP/2.0\r\n",
        H2_PREFACE,
        b"GET / HTTP/1.1\r\n",
        b"POST /voicesearch.v1.Search/Search HTTP/1.1\r\nHost: x\r\n",
    ];
    let server = TestServer::start(voice_search::config::ServeConfig {
        max_connections: stalls.len(),
        connection_start_seconds: 0.5,
        ..test_config()
    })
    .await;
    let mut stalled = Vec::new();
    for bytes in stalls {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stalled.push((bytes, stream));
    }
    for (bytes, stream) in &mut stalled {
        assert!(
            closed_by_server(stream).await,
            "a connection that stalled after {:?} stayed open",
            String::from_utf8_lossy(bytes)
        );
    }
    search_works(&server).await;
}

/// A connection from `source` to `server`.
async fn connect_from(source: &str, server: &TestServer) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// What the server answers `GET /` on `stream`, empty when it closes the connection.
pub(super) async fn get_page(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) -> String {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_BOUND, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "no answer and no close within {CLOSE_BOUND:?}"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn one_address_cannot_take_every_place() {
    let server = TestServer::start(voice_search::config::ServeConfig {
        max_connections: 6,
        max_connections_per_address: 3,
        connection_start_seconds: 30.0,
        ..test_config()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", &server).await);
    }
    let refused = get_page(connect_from("127.0.0.1", &server).await).await;
    assert!(
        !refused.starts_with("HTTP/1.1 200"),
        "a fourth connection from one address was served: {refused:.80}"
    );
    let other = get_page(connect_from("127.0.0.2", &server).await).await;
    assert!(
        other.starts_with("HTTP/1.1 200"),
        "another address was not served: {other:.80}"
    );
    drop(held);
}

#[tokio::test]
async fn a_grpc_web_body_that_stops_arriving_ends_its_call() {
    let server = TestServer::start(voice_search::config::ServeConfig {
        body_idle_seconds: 0.5,
        ..test_config()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /voicesearch.v1.Search/Search HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/grpc-web+proto\r\nContent-Length: 105\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // A message header declaring 100 bytes, then 10 of them and nothing more.
    stream.write_all(&[0, 0, 0, 0, 100]).await.unwrap();
    stream.write_all(&[1; 10]).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let answered = tokio::time::timeout(CLOSE_BOUND, async {
        while !String::from_utf8_lossy(&answer).contains("grpc-status") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no answer within {CLOSE_BOUND:?}");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.contains("grpc-status: 4"), "{answer}");
    search_works(&server).await;
}

#[tokio::test]
async fn a_channel_idle_past_the_start_deadline_reconnects_for_its_first_call() {
    let server = TestServer::start(voice_search::config::ServeConfig {
        connection_start_seconds: 0.5,
        ..test_config()
    })
    .await;
    // Connected at once, as a client that warms its channel does, then quiet for longer
    // than the start deadline: the server closes that connection, and the first call
    // opens another.
    let channel = server.channel().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    search_works_on(channel).await;
}
