//! Calls on one HTTP/2 connection, frame by frame with `h2`: the server announces its
//! cap on concurrent calls, a call whose request message stops arriving ends with
//! DEADLINE_EXCEEDED, one that would take the connection's unfinished bytes past their
//! cap with RESOURCE_EXHAUSTED, and a unary call carrying a second message with
//! INVALID_ARGUMENT; the connection serves complete calls through all of it.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use prost::Message;
use tokio::net::TcpStream;
use tonic::codegen::http::Request;
use tonic::Code;
use voice_search::config::ServeConfig;
use voice_search::proto::SearchRequest;

use crate::common::server::{test_config, TestServer};

/// Longest any call here waits for its answer.
const ANSWER_BOUND: Duration = Duration::from_secs(15);

/// An HTTP/2 connection to `server`, once the server's SETTINGS have come; and the
/// cap on concurrent calls they announced.
async fn connect(server: &TestServer) -> (SendRequest<Bytes>, usize) {
    let io = TcpStream::connect(server.addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(io).await.unwrap();
    let settled = tokio::time::timeout(ANSWER_BOUND, async {
        // Before the server's SETTINGS the client assumes no cap.
        while connection.max_concurrent_send_streams() == usize::MAX {
            tokio::select! {
                _ = &mut connection => panic!("the connection ended during its handshake"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    })
    .await;
    assert!(settled.is_ok(), "no SETTINGS within {ANSWER_BOUND:?}");
    let cap = connection.max_concurrent_send_streams();
    tokio::spawn(connection);
    (client, cap)
}

/// A Search call whose body is `body`, ended when `finish`.
async fn call(client: &mut SendRequest<Bytes>, body: Bytes, finish: bool) -> Code {
    let request = Request::post("http://127.0.0.1/voicesearch.v1.Search/Search")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body, finish).unwrap();
    let code = tokio::time::timeout(ANSWER_BOUND, async move {
        let response = response.await.unwrap();
        if let Some(status) = response.headers().get("grpc-status") {
            return status.to_str().unwrap().parse::<i32>().unwrap();
        }
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
        }
        let trailers = body.trailers().await.unwrap().expect("trailers");
        trailers["grpc-status"].to_str().unwrap().parse().unwrap()
    })
    .await
    .expect("an answer within the bound");
    drop(send);
    Code::from(code)
}

/// `message` in gRPC's length-prefixed framing.
fn framed(message: &SearchRequest) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut bytes = vec![0];
    bytes.extend((encoded.len() as u32).to_be_bytes());
    bytes.extend(encoded);
    bytes
}

/// A message header declaring `declared` bytes and `sent` of them.
fn unfinished(declared: u32, sent: usize) -> Bytes {
    let mut bytes = vec![0];
    bytes.extend(declared.to_be_bytes());
    bytes.extend(std::iter::repeat_n(1, sent));
    Bytes::from(bytes)
}

#[tokio::test]
async fn calls_on_one_connection_are_capped_and_bounded() {
    let server = TestServer::start(ServeConfig {
        max_calls_per_connection: 8,
        body_idle_seconds: 0.5,
        max_connection_body_bytes: 64 * 1024,
        ..test_config()
    })
    .await;
    let (mut client, cap) = connect(&server).await;
    assert_eq!(cap, 8, "the announced cap on concurrent calls");

    let query = SearchRequest {
        query: "anything".into(),
        page_size: 1,
        ..Default::default()
    };
    let stalled: Vec<_> = (0..cap)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { call(&mut client, unfinished(100, 10), false).await })
        })
        .collect();
    for stalled in stalled {
        assert_eq!(stalled.await.unwrap(), Code::DeadlineExceeded);
    }
    assert_eq!(
        call(&mut client, unfinished(1 << 20, 100 * 1024), false).await,
        Code::ResourceExhausted,
        "past the connection's unfinished bytes"
    );
    let mut twice = framed(&query);
    twice.extend(framed(&query));
    assert_eq!(
        call(&mut client, Bytes::from(twice), true).await,
        Code::InvalidArgument,
        "a second message on a unary call"
    );
    assert_eq!(
        call(&mut client, Bytes::from(framed(&query)), true).await,
        Code::Ok,
        "a complete call on the same connection"
    );
}
