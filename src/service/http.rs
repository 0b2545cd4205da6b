//! The server's HTTP: every accepted connection served by hyper, HTTP/2 for gRPC and
//! HTTP/1.1 for gRPC-Web, the page and the WebSocket stream (which may also come over
//! HTTP/2 as an extended CONNECT). The loop is ours rather
//! than tonic's because tonic serves HTTP/1.1 without upgrades, and a WebSocket is one.
//! At shutdown accepting stops and each connection is asked to finish its calls and
//! close; `serve` returns once all have.

use std::future::Future;
use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::transport::server::Connected;
use tower::ServiceExt;

use super::connections::Connection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How HTTP/2 runs on each connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Http2Settings {
    /// Calls open at once on one connection.
    pub max_calls: u32,
    /// Pings a quiet peer this often and drops it when a ping goes unanswered this long.
    pub keepalive: Duration,
}

/// Serves `service` on each connection of `connections` until `shutdown` resolves, then
/// drains: no new connections, each open one finishes its calls and closes.
pub(super) async fn serve<S, B>(
    connections: impl Stream<Item = io::Result<Connection>>,
    service: S,
    settings: Http2Settings,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_calls)
        .keep_alive_interval(settings.keepalive)
        .keep_alive_timeout(settings.keepalive)
        // WebSockets over HTTP/2 (RFC 8441), as a proxy in front forwards them.
        .enable_connect_protocol();
    // hyper enforces its HTTP/1.1 header read timeout only with a timer.
    builder.http1().timer(TokioTimer::new());

    let (draining, drain_seen) = tokio::sync::watch::channel(false);
    {
        tokio::pin!(connections, shutdown);
        loop {
            let connection = tokio::select! {
                _ = &mut shutdown => break,
                next = connections.next() => match next {
                    Some(Ok(connection)) => connection,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "a connection failed before it was served");
                        continue;
                    }
                    None => break,
                },
            };
            let info = connection.connect_info();
            let service = service
                .clone()
                .map_request(move |request: Request<Incoming>| {
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(info.clone());
                    request
                });
            tokio::spawn(serve_connection(
                builder.clone(),
                connection,
                TowerToHyperService::new(service),
                drain_seen.clone(),
            ));
        }
    }
    draining.send_replace(true);
    drop(drain_seen);
    draining.closed().await;
}

/// One connection until it closes; told to drain, it finishes its calls first.
async fn serve_connection<S, B>(
    builder: auto::Builder<TokioExecutor>,
    connection: Connection,
    service: S,
    mut draining: tokio::sync::watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let served = builder.serve_connection_with_upgrades(TokioIo::new(connection), service);
    tokio::pin!(served);
    let mut asked = false;
    loop {
        tokio::select! {
            result = &mut served => {
                if let Err(error) = result {
                    tracing::debug!(%error, "a connection ended with an error");
                }
                break;
            }
            _ = draining.wait_for(|&drain| drain), if !asked => {
                asked = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}
