//! API keys at the door: a tower layer in front of every service that reads the
//! `authorization: Bearer <key>` metadata and lets a call through only if its key's role
//! allows the method. Health and reflection stay open, so that load balancers and
//! grpcurl can see the server; a call without a key, or with one the server does not
//! know, is UNAUTHENTICATED; a known key whose role falls short is PERMISSION_DENIED; one
//! over its rate is RESOURCE_EXHAUSTED, saying when to retry (a stream counts as one call),
//! and so is one holding as many streams open as it may (a stream's place is held until
//! its response ends).
//!
//! A WebSocket handshake is a stream's call too. Browsers cannot set its headers, so its
//! key may come as a `bearer.<key>` entry of `Sec-WebSocket-Protocol` instead (never in
//! the URL, where logs keep it); its place among the key's streams travels to the socket
//! in the request's extensions ([`StreamPlace`]), held until the socket closes; and a
//! refusal answers with the HTTP status a WebSocket client reads (401, 403, 429) beside
//! the gRPC status headers.

pub mod keys;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::OwnedSemaphorePermit;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture};
use tonic::Status;
use tower::{Layer, Service};

use keys::{KeyRing, Role};

/// Methods that need a role other than `search` (which every other call needs).
const ROLE_OF_METHOD: &[(&str, Role)] = &[
    ("/voicesearch.v1.Catalog/UpsertDocuments", Role::Catalog),
    ("/voicesearch.v1.Catalog/BulkUpsertDocuments", Role::Catalog),
    ("/voicesearch.v1.Catalog/DeleteDocument", Role::Catalog),
    ("/voicesearch.v1.Monitor/GetDriftReport", Role::Monitor),
];
/// Services any caller may use.
const OPEN_SERVICES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

/// Requires a key for every call but those of [`OPEN_SERVICES`]; without a key ring,
/// lets every call through.
#[derive(Clone)]
pub struct RequireKeys {
    ring: Option<Arc<KeyRing>>,
    /// Paths of the methods whose calls are streams, held open for as long as their
    /// responses last.
    streaming: Arc<std::collections::HashSet<String>>,
}

impl RequireKeys {
    pub fn new(ring: Option<KeyRing>) -> Self {
        Self {
            ring: ring.map(Arc::new),
            streaming: Arc::new(
                super::methods::of_protos()
                    .into_iter()
                    .filter(|(_, method)| method.streams_requests)
                    .map(|(path, _)| path)
                    .collect(),
            ),
        }
    }

    /// Whether the call to `path` with these headers may go on, and for a stream (a
    /// `websocket` is one) of a key with a cap, its place.
    fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        websocket: bool,
    ) -> Result<Option<OwnedSemaphorePermit>, Status> {
        let Some(ring) = &self.ring else {
            return Ok(None);
        };
        if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
            return Ok(None);
        }
        let needed = ROLE_OF_METHOD
            .iter()
            .find(|(method, _)| *method == path)
            .map_or(Role::Search, |&(_, role)| role);
        let presented = presented_key(headers).ok_or_else(|| {
            Status::unauthenticated(
                "this server needs an API key: send it as `authorization: Bearer <key>` metadata \
                 (on a WebSocket, as the subprotocol `bearer.<key>`)",
            )
        })?;
        let caller = ring
            .caller(presented.trim())
            .ok_or_else(|| Status::unauthenticated("the API key is not one this server knows"))?;
        if !caller.has(needed) {
            let method = path.rsplit('/').next().unwrap_or(path);
            let held: Vec<&str> = caller.roles.iter().map(|r| r.name()).collect();
            return Err(Status::permission_denied(format!(
                "the key {:?} has the roles [{}]; {method} needs the {} role",
                caller.name,
                held.join(", "),
                needed.name()
            )));
        }
        caller.take_call().map_err(|over| {
            Status::resource_exhausted(format!(
                "the key {:?} is over its {} calls per minute; retry in {:.1} s",
                caller.name,
                over.calls_per_minute,
                over.retry_after.as_secs_f64()
            ))
        })?;
        let place = if self.streaming.contains(path) || websocket {
            caller.open_stream().map_err(|full| {
                Status::resource_exhausted(format!(
                    "the key {:?} already holds {} streams open, as many as it may; close one first",
                    caller.name, full.max_streams
                ))
            })?
        } else {
            None
        };
        tracing::debug!(key = caller.name, path, "call allowed");
        Ok(place)
    }
}

impl<S> Layer<S> for RequireKeys {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            keys: self.clone(),
        }
    }
}

/// A service behind [`RequireKeys`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    keys: RequireKeys,
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let websocket = is_websocket(&request);
        match self
            .keys
            .check(request.uri().path(), request.headers(), websocket)
        {
            Ok(None) => Box::pin(self.inner.call(request)),
            Ok(Some(place)) if websocket => {
                request.extensions_mut().insert(StreamPlace {
                    _place: Arc::new(place),
                });
                Box::pin(self.inner.call(request))
            }
            Ok(Some(place)) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await?;
                    Ok(response.map(|body| {
                        Body::new(Holding {
                            body,
                            _place: place,
                        })
                    }))
                })
            }
            Err(status) if websocket => Box::pin(async move { Ok(handshake_refusal(status)) }),
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// A response body that holds its stream's place until it ends or is dropped.
struct Holding {
    body: Body,
    _place: OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The token of an `authorization` value in the Bearer scheme, whose name is
/// case-insensitive (RFC 7235).
/// A stream's place among its key's open streams, for a WebSocket to hold while it is
/// open.
#[derive(Clone)]
pub struct StreamPlace {
    _place: Arc<OwnedSemaphorePermit>,
}

/// The key a call presents: its `authorization` bearer token, or on a WebSocket
/// handshake a `bearer.<key>` subprotocol.
fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    authorization.or_else(|| {
        headers
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|protocol| protocol.trim().strip_prefix(KEY_SUBPROTOCOL))
    })
}

/// How a WebSocket handshake names its key among its subprotocols.
pub const KEY_SUBPROTOCOL: &str = "bearer.";

/// Whether `request` opens a WebSocket: an HTTP/1.1 upgrade, or HTTP/2's extended
/// CONNECT (RFC 8441).
fn is_websocket<B>(request: &http::Request<B>) -> bool {
    let upgrade = request
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let connect = request.method() == http::Method::CONNECT
        && request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
    upgrade || connect
}

/// A refused WebSocket handshake: the HTTP status its client reads, with the gRPC status
/// and message as headers.
fn handshake_refusal(status: Status) -> http::Response<Body> {
    let http_status = match status.code() {
        tonic::Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => http::StatusCode::FORBIDDEN,
        _ => http::StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = status.into_http();
    *response.status_mut() = http_status;
    response
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer vsk_a", "bearer vsk_a", "BEARER vsk_a"] {
            assert_eq!(bearer_token(value), Some("vsk_a"), "{value}");
        }
        assert_eq!(bearer_token("Basic vsk_a"), None);
        assert_eq!(bearer_token("Bearervsk_a"), None);
    }
}
