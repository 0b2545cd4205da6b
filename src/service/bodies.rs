//! Request bodies, bounded before a handler reads them, in one layer inside gRPC-Web
//! (so that it sees gRPC framing, and its statuses reach the client as they are): a call
//! whose request message stops arriving ends with DEADLINE_EXCEEDED, one that would
//! take its connection's unfinished request bytes past their cap with
//! RESOURCE_EXHAUSTED, and one that sends a second message where its method takes one
//! with INVALID_ARGUMENT (tonic would drop it unread). Requests that are streams keep
//! their own limits instead: a voice stream's idle timeout and lengths.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;
use tower::{Layer, Service};

use super::connections::ConnectionInfo;
use super::methods::Method;

/// How long a request message may pause and how much one connection may hold unfinished.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub idle: Duration,
    pub max_connection_bytes: usize,
}

impl BodyLimits {
    /// The limits the server's settings give.
    pub fn of(config: &crate::config::ServeConfig) -> Self {
        Self {
            idle: Duration::from_secs_f64(config.body_idle_seconds),
            max_connection_bytes: config.max_connection_body_bytes,
        }
    }
}

/// Reflection's method is a stream of requests, too; its services are not in our protos.
const REFLECTION: &str = "/grpc.reflection.";

/// Whether calls to `path` send one request message (our protos' unary and
/// server-streaming methods, health, and paths no service knows).
fn sends_one_message(methods: &HashMap<String, Method>, path: &str) -> bool {
    !(path.starts_with(REFLECTION) || methods.get(path).is_some_and(|m| m.streams_requests))
}

/// The layer.
#[derive(Clone)]
pub struct BoundBodies {
    limits: BodyLimits,
    methods: Arc<HashMap<String, Method>>,
}

impl BoundBodies {
    pub fn new(limits: BodyLimits) -> Self {
        Self {
            limits,
            methods: Arc::new(super::methods::of_protos()),
        }
    }
}

impl<S> Layer<S> for BoundBodies {
    type Service = Watched<S>;

    fn layer(&self, inner: S) -> Watched<S> {
        Watched {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Watched<S> {
    inner: S,
    layer: BoundBodies,
}

impl<S> Service<http::Request<Body>> for Watched<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> S::Future {
        let path = request.uri().path();
        if sends_one_message(&self.layer.methods, path) {
            let method = Arc::from(path.rsplit('/').next().unwrap_or(path));
            let limits = self.layer.limits;
            let shared = request
                .extensions()
                .get::<ConnectionInfo>()
                .map(|connection| connection.body_bytes.clone());
            request = request.map(|body| Body::new(WatchedBody::new(body, method, limits, shared)));
        }
        self.inner.call(request)
    }
}

/// A request body that must keep arriving, counts what it holds on its connection and
/// carries one message.
struct WatchedBody {
    body: Body,
    method: Arc<str>,
    framing: Framing,
    limits: BodyLimits,
    silence: Pin<Box<Sleep>>,
    /// Bytes this body added to its connection's count.
    held: usize,
    connection: Option<Arc<AtomicUsize>>,
}

impl WatchedBody {
    fn new(
        body: Body,
        method: Arc<str>,
        limits: BodyLimits,
        connection: Option<Arc<AtomicUsize>>,
    ) -> Self {
        Self {
            body,
            method,
            framing: Framing::default(),
            limits,
            silence: Box::pin(tokio::time::sleep(limits.idle)),
            held: 0,
            connection,
        }
    }

    /// Takes in `data`: one more piece of the one message, within the connection's cap.
    fn take(&mut self, data: &[u8]) -> Result<(), Status> {
        if self.framing.read(data) > 1 {
            return Err(Status::invalid_argument(format!(
                "{} takes one request message and this call sent a second; send one message per call",
                self.method
            )));
        }
        let bytes = data.len();
        let Some(connection) = &self.connection else {
            return Ok(());
        };
        self.held += bytes;
        let total = connection.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.limits.max_connection_bytes {
            return Err(Status::resource_exhausted(format!(
                "this connection holds {:.1} MiB of unfinished request messages, past its {:.1} MiB: finish or cancel the calls on it first",
                mib(total),
                mib(self.limits.max_connection_bytes)
            )));
        }
        Ok(())
    }

    fn release(&mut self) {
        if let Some(connection) = &self.connection {
            connection.fetch_sub(std::mem::take(&mut self.held), Ordering::Relaxed);
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                if this.silence.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "the request message stopped arriving: nothing came for {:.1} s; send each message without pauses",
                        this.limits.idle.as_secs_f64()
                    )))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = Instant::now() + this.limits.idle;
                this.silence.as_mut().reset(deadline);
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.take(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Where a body is in gRPC's length-prefixed framing.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    header_len: usize,
    message_left: usize,
    messages: usize,
}

impl Framing {
    /// Reads `bytes` on; the count of messages begun so far.
    fn read(&mut self, mut bytes: &[u8]) -> usize {
        while !bytes.is_empty() {
            if self.message_left > 0 {
                let taken = self.message_left.min(bytes.len());
                self.message_left -= taken;
                bytes = &bytes[taken..];
                continue;
            }
            if self.header_len == 0 {
                self.messages += 1;
            }
            let taken = (self.header.len() - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&bytes[..taken]);
            self.header_len += taken;
            bytes = &bytes[taken..];
            if self.header_len == self.header.len() {
                let length = [
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ];
                self.message_left = u32::from_be_bytes(length) as usize;
                self.header_len = 0;
            }
        }
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend(length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, length as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_across_any_split() {
        let mut two = message(3);
        two.extend(message(0));
        for split in 0..two.len() {
            let mut framing = Framing::default();
            let (first, rest) = two.split_at(split);
            let begun = match split {
                0 => 0,
                1..=8 => 1,
                _ => 2,
            };
            assert_eq!(framing.read(first), begun, "split {split}");
            assert_eq!(framing.read(rest), 2, "split {split}");
        }
        let mut one = Framing::default();
        assert_eq!(one.read(&message(300)), 1);
    }
}
