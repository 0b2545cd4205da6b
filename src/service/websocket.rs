//! `StreamingVoiceSearch` over a WebSocket at [`PATH`], for browsers, which cannot stream
//! a request over gRPC-Web. Framing only: each binary frame is one protobuf
//! `StreamingVoiceSearchRequest` (the config first) or `StreamingVoiceSearchResponse`,
//! fed to and read from the library's [`Voice::stream`], so every rule of the gRPC
//! stream holds. A WebSocket cannot half-close: a client sends `end_of_utterance`, reads
//! the final, then closes. The socket closes with 1000 when the stream ended well, and
//! otherwise with 4000 plus the gRPC status code and the status message as the reason.
//! Keys are checked at the door (`auth`), from the `bearer.<key>` subprotocol a browser
//! can send; a page from another origin is refused unless `cors_origin` lists it. Each
//! stream counts in `voicesearch_requests_total` by how it ended, as the RPCs do.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use prost::Message as _;
use tokio_stream::StreamExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture};
use tonic::{Code, Status};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::auth::{RequireKeys, StreamPlace};
use super::connections::Disconnect;
use super::status::code_name;
use crate::monitor::Monitor;
use crate::proto::{StreamingVoiceSearchRequest, StreamingVoiceSearchResponse};
use crate::voice::{Inbound, Voice};

/// Where the stream is opened.
pub const PATH: &str = "/v1/stream";
/// The method the streams count as in `voicesearch_requests_total`.
const METHOD: &str = "StreamingVoiceSearchWebSocket";
/// The subprotocol the socket speaks, chosen when the client offers it.
pub const PROTOCOL: &str = "voicesearch.v1";
/// The close code of a stream that ended with a gRPC status: this plus its code.
pub const STATUS_CLOSE_BASE: u16 = 4000;
/// The longest close reason a close frame carries (RFC 6455: 125 bytes with the code).
const MAX_REASON_BYTES: usize = 123;

/// Answers requests for [`PATH`] in front of gRPC-Web (which refuses HTTP/1.1 requests
/// of its own), behind the API keys' check.
#[derive(Clone)]
pub(super) struct ServeStream {
    stream: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>,
}

impl ServeStream {
    pub fn new(door: StreamDoor, keys: RequireKeys) -> Self {
        // GET for an HTTP/1.1 upgrade, CONNECT for HTTP/2's (RFC 8441).
        let route = axum::routing::on(
            axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::CONNECT),
            move |request: Request| door.clone().open(request),
        );
        let router = axum::Router::new().route(PATH, route);
        let stream = tower::ServiceBuilder::new()
            .layer(keys)
            .map_response(|response: Response| response.map(Body::new))
            .service(router);
        Self {
            stream: BoxCloneSyncService::new(stream),
        }
    }
}

impl<S> Layer<S> for ServeStream {
    type Service = WithStream<S>;

    fn layer(&self, inner: S) -> WithStream<S> {
        WithStream {
            inner,
            stream: self.stream.clone(),
        }
    }
}

/// A service behind [`ServeStream`].
#[derive(Clone)]
pub(super) struct WithStream<S> {
    inner: S,
    stream: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>,
}

impl<S> Service<http::Request<Body>> for WithStream<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != PATH {
            return Box::pin(self.inner.call(request));
        }
        let answer = self.stream.clone().oneshot(request);
        Box::pin(async move { answer.await.map_err(|never| match never {}) })
    }
}

/// What opening a socket needs.
#[derive(Clone)]
pub(super) struct StreamDoor {
    voice: Voice,
    /// Counts each socket's stream by how it ended, beside the RPCs.
    monitor: Arc<Monitor>,
    /// Pages from these origins may open a socket ("*": any) beside the server's own.
    origins: Arc<[String]>,
    max_message_bytes: usize,
    /// The open sockets, for the server's drain to wait on as it waits on calls.
    open: TaskTracker,
}

impl StreamDoor {
    pub fn new(
        voice: Voice,
        monitor: Arc<Monitor>,
        origins: &[String],
        max_message_bytes: usize,
    ) -> Self {
        Self {
            voice,
            monitor,
            origins: origins.into(),
            max_message_bytes,
            open: TaskTracker::new(),
        }
    }

    /// The open sockets.
    pub fn sockets(&self) -> TaskTracker {
        self.open.clone()
    }

    async fn open(self, mut request: Request) -> Response {
        if let Some(origin) = self.foreign_origin(request.headers()) {
            let message = format!(
                "a page from {origin} may not open this stream: the server accepts its own \
                 pages and those its cors_origin setting lists"
            );
            return (StatusCode::FORBIDDEN, message).into_response();
        }
        let place = request.extensions_mut().remove::<StreamPlace>();
        let disconnect = Disconnect::of(request.extensions());
        let (mut parts, _) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        // A proxy that turned an HTTP/1.1 upgrade into HTTP/2's CONNECT (Envoy does)
        // passes the client's key on and answers it with the accept key it finds here;
        // RFC 8441 has none of its own.
        let relayed_key = (parts.version >= axum::http::Version::HTTP_2)
            .then(|| parts.headers.get(header::SEC_WEBSOCKET_KEY))
            .flatten()
            .map(|key| derive_accept_key(key.as_bytes()));
        let open = self.open.token();
        let mut response = upgrade
            .protocols([PROTOCOL])
            .max_message_size(self.max_message_bytes)
            .max_frame_size(self.max_message_bytes)
            .on_upgrade(move |socket| async move {
                let code = run(socket, self.voice, disconnect).await;
                self.monitor.metrics.request(METHOD, code_name(code));
                drop((place, open));
            });
        if let Some(accept) = relayed_key.and_then(|key| key.parse().ok()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    /// The request's `Origin` when it is neither this server's nor a listed one. A
    /// request without one (not from a browser) is not a page's.
    fn foreign_origin(&self, headers: &HeaderMap) -> Option<String> {
        let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
        let own = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| {
                let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
                authority.eq_ignore_ascii_case(host)
            });
        let listed = self
            .origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin));
        (!own && !listed).then(|| origin.to_owned())
    }
}

/// One socket's stream, until it ends or the client goes; how it ended.
async fn run(socket: WebSocket, voice: Voice, disconnect: Option<Disconnect>) -> Code {
    let (mut outgoing, incoming) = futures_util::StreamExt::split(socket);
    let inbound = incoming
        .map_while(|frame| match frame {
            Ok(Message::Close(_)) => None,
            other => Some(other),
        })
        .filter_map(|frame| match frame {
            Ok(Message::Binary(bytes)) => Some(
                StreamingVoiceSearchRequest::decode(bytes)
                    .map_err(|error| {
                        Status::invalid_argument(format!(
                            "a frame that is not a StreamingVoiceSearchRequest: {error}"
                        ))
                    })
                    .and_then(Inbound::try_from),
            ),
            Ok(Message::Text(_)) => Some(Err(Status::invalid_argument(
                "a text frame: send each StreamingVoiceSearchRequest as one binary frame",
            ))),
            Ok(_) => None,
            Err(error) => Some(Err(read_error(error))),
        });
    let drop_client = move || disconnect.iter().for_each(Disconnect::now);
    let mut results = match voice.stream(inbound, drop_client) {
        Ok(results) => results,
        Err(full) => {
            let status = Status::from(full);
            let code = status.code();
            outgoing.send(closing(Some(status))).await.ok();
            return code;
        }
    };
    let end = loop {
        match results.next().await {
            Some(Ok(result)) => {
                let frame = StreamingVoiceSearchResponse::from(result).encode_to_vec();
                if outgoing.send(Message::Binary(frame.into())).await.is_err() {
                    return Code::Cancelled;
                }
            }
            Some(Err(error)) => break Some(Status::from(error)),
            None => break None,
        }
    };
    let code = end.as_ref().map_or(Code::Ok, Status::code);
    outgoing.send(closing(end)).await.ok();
    code
}

/// A failed read as the stream's status: a frame over the size limit (OUT_OF_RANGE,
/// as for a gRPC message over it), or a broken socket.
fn read_error(error: axum::Error) -> Status {
    let error = error.into_inner();
    match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(limit)) => Status::out_of_range(
            format!("{limit}: a frame or message over the server's max_message_bytes"),
        ),
        _ => Status::unavailable(format!("the WebSocket failed: {error}")),
    }
}

/// The close frame ending a stream: normal, or carrying `status`.
fn closing(status: Option<Status>) -> Message {
    let frame = match status {
        None => CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        },
        Some(status) => {
            let code = STATUS_CLOSE_BASE + status.code() as u16;
            let mut reason = status.message().to_owned();
            if reason.len() > MAX_REASON_BYTES {
                let cut = (0..=MAX_REASON_BYTES)
                    .rev()
                    .find(|&at| reason.is_char_boundary(at))
                    .unwrap_or(0);
                reason.truncate(cut);
            }
            CloseFrame {
                code,
                reason: reason.into(),
            }
        }
    };
    Message::Close(Some(frame))
}
