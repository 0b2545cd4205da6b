//! gRPC-Web over HTTP/1.1 on the gRPC port: `Transcribe` and `Search` answer as they do
//! over native gRPC, with their statuses (a missing API key's too); CORS preflights are
//! answered for the configured origins only; the page is served, without a key, unless
//! turned off; a unary call carrying a second message is refused.

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tonic::codegen::http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use tonic::Code;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};
use voice_search::config::ServeConfig;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{AudioEncoding, RecognitionConfig, SearchRequest, TranscribeRequest};
use voice_search::service::auth::keys::{add_key, KeyLimits, Role};

use crate::common::server::{test_config, TestServer};

type GrpcWeb = GrpcWebClientService<Client<HttpConnector, GrpcWebCall<Body>>>;

/// gRPC-Web to `server` over HTTP/1.1 only, as a browser without TLS calls it.
fn grpc_web(server: &TestServer) -> (GrpcWeb, Uri) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let origin = format!("http://{}", server.addr).parse().unwrap();
    (
        tower::Layer::layer(&GrpcWebClientLayer::new(), client),
        origin,
    )
}

/// One plain HTTP/1.1 request with no body to the gRPC port: status, headers, body.
async fn http1(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    http1_with_body(server, method, path, headers, bytes::Bytes::new()).await
}

/// One plain HTTP/1.1 request with `body` to the gRPC port: status, headers, body.
async fn http1_with_body(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: bytes::Bytes,
) -> (StatusCode, HeaderMap, String) {
    let client: Client<HttpConnector, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.addr));
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    let response = client
        .request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn wav_config() -> RecognitionConfig {
    RecognitionConfig {
        encoding: AudioEncoding::Wav.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn transcribe_and_search_answer_over_grpc_web_with_their_statuses() {
    let server = TestServer::start(test_config()).await;
    server
        .add_documents(&[("ber", "Berlin", "city"), ("dus", "Düsseldorf", "city")])
        .await;
    let (channel, origin) = grpc_web(&server);
    let mut voice = VoiceSearchClient::with_origin(channel.clone(), origin.clone());
    let heard = voice
        .transcribe(TranscribeRequest {
            config: Some(RecognitionConfig {
                enable_word_time_offsets: true,
                ..wav_config()
            }),
            audio: crate::common::fixture_bytes("q0004.wav"),
        })
        .await
        .unwrap()
        .into_inner();
    let transcript = heard.transcript.unwrap();
    assert_eq!(
        transcript.text,
        "You will now be placed into the conference."
    );
    crate::common::assert_word_times(&transcript);
    let refused = voice
        .transcribe(TranscribeRequest {
            config: Some(RecognitionConfig::default()),
            audio: crate::common::fixture_bytes("q0004.wav"),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("encoding"), "{refused:?}");

    let mut search = SearchClient::with_origin(channel, origin);
    let found = search
        .search(SearchRequest {
            query: "weather in berlin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.hits[0].id, "ber");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_is_asked_for_over_grpc_web_and_the_page_needs_none() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("keys.toml");
    add_key(&path, "phone-app", &[Role::Search], KeyLimits::default()).unwrap();
    let server = TestServer::start(ServeConfig {
        api_keys: Some(path),
        ..test_config()
    })
    .await;
    let (channel, origin) = grpc_web(&server);
    let refused = SearchClient::with_origin(channel, origin)
        .search(SearchRequest {
            query: "berlin".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let (status, _, page) = http1(&server, Method::GET, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Hold to speak"), "{page}");
    server.shutdown().await.unwrap();
}

/// The CORS answer to a browser's preflight for a gRPC-Web call from `origin`.
async fn preflight(server: &TestServer, origin: &str) -> HeaderMap {
    let (_, headers, _) = http1(
        server,
        Method::OPTIONS,
        "/voicesearch.v1.VoiceSearch/VoiceSearch",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent",
            ),
        ],
    )
    .await;
    headers
}

#[tokio::test]
async fn cors_preflights_are_answered_for_the_configured_origins_only() {
    let app = "https://app.example.com";
    let open = TestServer::start(ServeConfig {
        cors_origin: vec![app.into()],
        ..test_config()
    })
    .await;
    let allowed = preflight(&open, app).await;
    assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN], app);
    let allowed_headers = allowed[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(allowed_headers.contains("x-grpc-web"), "{allowed_headers}");
    let elsewhere = preflight(&open, "https://elsewhere.example.com").await;
    assert!(!elsewhere.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    open.shutdown().await.unwrap();

    let closed = TestServer::start(test_config()).await;
    let refused = preflight(&closed, app).await;
    assert!(!refused.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    closed.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_page_is_served_unless_turned_off() {
    let server = TestServer::start(test_config()).await;
    let (status, headers, page) = http1(&server, Method::GET, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert!(page.contains(r#"<script src="app.js">"#), "{page}");
    let (status, headers, script) = http1(&server, Method::GET, "/app.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(
        script.contains("application/grpc-web+proto"),
        "the bundle lacks its gRPC-Web transport"
    );
    server.shutdown().await.unwrap();

    let without = TestServer::start(ServeConfig {
        web: false,
        ..test_config()
    })
    .await;
    let (status, _, _) = http1(&without, Method::GET, "/", &[]).await;
    assert_ne!(status, StatusCode::OK);
    without.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_unary_call_with_a_second_message_is_refused() {
    use prost::Message;
    let server = TestServer::start(test_config()).await;
    let message = SearchRequest {
        query: "heat".into(),
        page_size: 1,
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = Vec::new();
    for _ in 0..2 {
        body.push(0);
        body.extend((message.len() as u32).to_be_bytes());
        body.extend(&message);
    }
    let (status, headers, _) = http1_with_body(
        &server,
        Method::POST,
        "/voicesearch.v1.Search/Search",
        &[("content-type", "application/grpc-web+proto")],
        body.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["grpc-status"],
        (Code::InvalidArgument as i32).to_string().as_str(),
        "{headers:?}"
    );
    server.shutdown().await.unwrap();
}
