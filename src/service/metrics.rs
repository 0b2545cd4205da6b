//! Calls by method and status code, counted once in one tower layer rather than by each
//! handler: a unary call when its response is made, a stream when its body ends (its
//! trailers' status), CANCELLED when the client leaves first. Only the methods of our
//! own services are counted, named as the protos name them, so that no client can grow
//! the metric with made-up paths; calls refused at the door (API keys) count too.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, BoxFuture};
use tonic::Code;
use tower::{Layer, Service};

use super::status::code_name;
use crate::monitor::Monitor;

/// The layer: counts each call of a known method in `voicesearch_requests_total`.
#[derive(Clone)]
pub struct CountCalls {
    monitor: Arc<Monitor>,
    /// Method name by request path, for every method of the protos' services.
    methods: Arc<HashMap<String, Arc<str>>>,
}

impl CountCalls {
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self {
            monitor,
            methods: Arc::new(known_methods()),
        }
    }
}

/// Method name by request path.
fn known_methods() -> HashMap<String, Arc<str>> {
    super::methods::of_protos()
        .into_iter()
        .map(|(path, method)| (path, method.name))
        .collect()
}

impl<S> Layer<S> for CountCalls {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    layer: CountCalls,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.layer.methods.get(request.uri().path()).cloned();
        let response = self.inner.call(request);
        let Some(method) = method else {
            return Box::pin(response);
        };
        let monitor = self.layer.monitor.clone();
        Box::pin(async move {
            let response = response.await?;
            let mut call = Call {
                monitor,
                method,
                counted: false,
            };
            // A trailers-only response (an error before any message) says its status here.
            if let Some(code) = grpc_code(response.headers()) {
                call.count(code);
            }
            Ok(response.map(|body| Body::new(CountedBody { body, call })))
        })
    }
}

/// One call, counted once.
struct Call {
    monitor: Arc<Monitor>,
    method: Arc<str>,
    counted: bool,
}

impl Call {
    fn count(&mut self, code: Code) {
        if !std::mem::replace(&mut self.counted, true) {
            self.monitor.metrics.request(&self.method, code_name(code));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.count(Code::Cancelled);
    }
}

/// The status a response's headers or trailers carry.
fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from(value.parse::<i32>().ok()?))
}

/// A response body that counts its call at its trailers.
struct CountedBody {
    body: Body,
    call: Call,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    self.call.count(code);
                }
            }
            Some(Err(error)) => self.call.count(error.code()),
            None => self.call.count(Code::Ok),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
