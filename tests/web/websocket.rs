//! `StreamingVoiceSearch` over the WebSocket at `/v1/stream`, with a real WebSocket
//! client (tokio-tungstenite) against the real server: an utterance's final is the one
//! the gRPC stream gives, with word times when asked; bad first messages, text frames,
//! undecodable frames, an utterance over its length limit and a frame over the message
//! limit close the socket with 4000 plus their gRPC code; a missing or unknown key is
//! refused at the handshake (401), a key in the subprotocol opens it; a page from another
//! origin is refused (403) unless listed; a socket open when the server is told to stop
//! finishes its utterance before the server does.

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error, Message};
use tonic::Code;
use voice_search::config::ServeConfig;
use voice_search::proto::streaming_voice_search_request::Request;
use voice_search::proto::{
    AudioEncoding, EndOfUtterance, RecognitionConfig, StreamingVoiceSearchConfig,
    StreamingVoiceSearchResponse, Transcript,
};
use voice_search::service::auth::keys::{add_key, KeyLimits, Role};
use voice_search::service::{STATUS_CLOSE_BASE, STREAM_PATH, STREAM_PROTOCOL};

use crate::common::server::{sample, test_config, TestServer};
use crate::common::{fixture_bytes, ws_frame as frame};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the stream with these extra handshake headers; the HTTP status of a refusal.
async fn open(server: &TestServer, headers: &[(&str, &str)]) -> Result<Socket, StatusCode> {
    let mut request = format!("ws://{}{STREAM_PATH}", server.addr)
        .into_client_request()
        .unwrap();
    for &(name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let protocol = response.headers().get("sec-websocket-protocol");
            let offered = headers.iter().any(|(name, value)| {
                *name == "sec-websocket-protocol" && value.contains(STREAM_PROTOCOL)
            });
            assert_eq!(
                protocol.is_some(),
                offered,
                "the subprotocol chosen when offered"
            );
            Ok(socket)
        }
        Err(Error::Http(response)) => Err(response.status()),
        Err(error) => panic!("the handshake failed: {error}"),
    }
}

fn wav_config(word_times: bool) -> Message {
    frame(Request::Config(StreamingVoiceSearchConfig {
        recognition: Some(RecognitionConfig {
            encoding: AudioEncoding::Wav as i32,
            enable_word_time_offsets: word_times,
            ..Default::default()
        }),
        search: None,
    }))
}

fn raw_config() -> Message {
    frame(Request::Config(StreamingVoiceSearchConfig {
        recognition: Some(RecognitionConfig {
            encoding: AudioEncoding::Linear16 as i32,
            sample_rate_hz: 16_000,
            ..Default::default()
        }),
        search: None,
    }))
}

/// Every response the server sends until it closes, and its close code and reason.
async fn responses_until_close(
    socket: &mut Socket,
) -> (Vec<StreamingVoiceSearchResponse>, u16, String) {
    let mut responses = Vec::new();
    while let Some(message) = socket.next().await {
        match message.unwrap() {
            Message::Binary(bytes) => {
                responses.push(StreamingVoiceSearchResponse::decode(bytes).unwrap())
            }
            Message::Close(Some(close)) => {
                return (responses, close.code.into(), close.reason.to_string())
            }
            Message::Close(None) => return (responses, 1005, String::new()),
            _ => {}
        }
    }
    panic!("the socket ended without a close frame");
}

/// The close code of a stream ended with `code`.
fn closed_with(code: Code) -> u16 {
    STATUS_CLOSE_BASE + code as u16
}

const CONFERENCE: &str = "You will now be placed into the conference.";

/// Sends q0004.wav as one utterance in pieces of `chunk` bytes, with word times when
/// `word_times`; its final's transcript.
async fn conference(socket: &mut Socket, chunk: usize, word_times: bool) -> Transcript {
    socket.send(wav_config(word_times)).await.unwrap();
    for piece in fixture_bytes("q0004.wav").chunks(chunk) {
        socket
            .send(frame(Request::Audio(piece.to_vec())))
            .await
            .unwrap();
    }
    socket
        .send(frame(Request::EndOfUtterance(EndOfUtterance {})))
        .await
        .unwrap();
    loop {
        let next = socket.next().await;
        let Some(Ok(Message::Binary(bytes))) = next else {
            panic!("no final result: {next:?}");
        };
        let response = StreamingVoiceSearchResponse::decode(bytes).unwrap();
        let result = response.result.unwrap();
        if result.is_final {
            assert_eq!(response.utterance_index, 0);
            return result.transcript.unwrap();
        }
    }
}

#[tokio::test]
async fn an_utterance_over_the_socket_gets_the_final_the_grpc_stream_gives() {
    let server = TestServer::start(test_config()).await;
    let mut socket = open(&server, &[("sec-websocket-protocol", STREAM_PROTOCOL)])
        .await
        .unwrap();
    let transcript = conference(&mut socket, 8_000, true).await;
    assert_eq!(transcript.text, CONFERENCE);
    crate::common::assert_word_times(&transcript);
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
}

#[tokio::test]
async fn bad_frames_close_the_socket_with_their_status() {
    let server = TestServer::start(ServeConfig {
        max_utterance_seconds: 3.0,
        max_message_bytes: 256 * 1024,
        ..test_config()
    })
    .await;
    let four_seconds = vec![0u8; 2 * 16_000 * 4];
    let cases: Vec<(&str, Vec<Message>, Code, &str)> = vec![
        (
            "audio before the config",
            vec![frame(Request::Audio(vec![0; 320])), raw_config()],
            Code::InvalidArgument,
            "before the config",
        ),
        (
            "a text frame",
            vec![Message::Text("{\"config\": {}}".into())],
            Code::InvalidArgument,
            "binary frame",
        ),
        (
            "a frame that is no request",
            vec![Message::Binary(vec![0xff; 16].into())],
            Code::InvalidArgument,
            "not a StreamingVoiceSearchRequest",
        ),
        (
            "an utterance over its limit",
            vec![raw_config(), frame(Request::Audio(four_seconds))],
            Code::OutOfRange,
            "limit is 3.0 s",
        ),
        (
            "a frame over the message limit",
            vec![raw_config(), frame(Request::Audio(vec![0; 512 * 1024]))],
            Code::OutOfRange,
            "max_message_bytes",
        ),
    ];
    for (what, messages, code, reason) in cases {
        let mut socket = open(&server, &[]).await.unwrap();
        for message in messages {
            if socket.send(message).await.is_err() {
                break;
            }
        }
        let (_, close, text) = responses_until_close(&mut socket).await;
        assert_eq!(close, closed_with(code), "{what}: {text}");
        assert!(text.contains(reason), "{what}: {text:?}");
    }
    let mut socket = open(&server, &[]).await.unwrap();
    assert_eq!(
        conference(&mut socket, usize::MAX, false).await.text,
        CONFERENCE,
        "a good stream after the bad ones"
    );
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    // Each stream counts once it has ended, which the last may not have yet.
    let counted = |code: &str| {
        format!(
            "voicesearch_requests_total{{code=\"{code}\",rpc=\"StreamingVoiceSearchWebSocket\"}} "
        )
    };
    let mut metrics = server.scrape().await;
    for _ in 0..300 {
        if metrics.contains(&counted("OK")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        metrics = server.scrape().await;
    }
    assert_eq!(
        sample(&metrics, &counted("INVALID_ARGUMENT")),
        3.0,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, &counted("OUT_OF_RANGE")), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, &counted("OK")), 1.0, "{metrics}");
}

#[tokio::test]
async fn a_socket_needs_a_key_which_its_subprotocol_carries() {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys.toml");
    let key = add_key(&path, "page", &[Role::Search], KeyLimits::default()).unwrap();
    let server = TestServer::start(ServeConfig {
        api_keys: Some(path),
        ..test_config()
    })
    .await;
    assert_eq!(
        open(&server, &[]).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let unknown = format!("{STREAM_PROTOCOL}, bearer.vsk_0000");
    assert_eq!(
        open(&server, &[("sec-websocket-protocol", &unknown)])
            .await
            .err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let known = format!("{STREAM_PROTOCOL}, bearer.{key}");
    let mut socket = open(&server, &[("sec-websocket-protocol", &known)])
        .await
        .unwrap();
    socket
        .send(frame(Request::Audio(vec![0; 320])))
        .await
        .unwrap();
    let (_, close, _) = responses_until_close(&mut socket).await;
    assert_eq!(
        close,
        closed_with(Code::InvalidArgument),
        "the key let the stream open"
    );
    let authorization = format!("Bearer {key}");
    assert!(open(&server, &[("authorization", &authorization)])
        .await
        .is_ok());
}

#[tokio::test]
async fn pages_from_other_origins_are_refused_unless_listed() {
    let server = TestServer::start(ServeConfig {
        cors_origin: vec!["https://app.example.com".into()],
        ..test_config()
    })
    .await;
    let own = format!("http://{}", server.addr);
    assert!(open(&server, &[("origin", &own)]).await.is_ok());
    assert!(open(&server, &[("origin", "https://app.example.com")])
        .await
        .is_ok());
    assert_eq!(
        open(&server, &[("origin", "https://evil.example.com")])
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[tokio::test]
async fn a_socket_open_at_shutdown_finishes_its_utterance() {
    let server = TestServer::start(ServeConfig {
        shutdown_grace_seconds: 20,
        ..test_config()
    })
    .await;
    let addr = server.addr;
    let mut socket = open(&server, &[]).await.unwrap();
    socket.send(wav_config(false)).await.unwrap();
    socket
        .send(frame(Request::Audio(fixture_bytes("q0004.wav"))))
        .await
        .unwrap();
    let stopped = tokio::spawn(server.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !stopped.is_finished(),
        "the server waits for the open socket"
    );
    socket
        .send(frame(Request::EndOfUtterance(EndOfUtterance {})))
        .await
        .unwrap();
    let Some(Ok(Message::Binary(bytes))) = socket.next().await else {
        panic!("no final after shutdown began");
    };
    let result = StreamingVoiceSearchResponse::decode(bytes)
        .unwrap()
        .result
        .unwrap();
    assert_eq!(result.transcript.unwrap().text, CONFERENCE);
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    stopped.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
