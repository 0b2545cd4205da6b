//! Browsers on the gRPC port: the gRPC-Web translation every service gets, CORS for pages
//! from other origins (`cors_origin`), and the voice search page (`web/`: its HTML and its
//! script as `web/build.sh` bundles it, embedded here) at `/`.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::{header, HeaderName, HeaderValue, Method, Request, Response};
use tonic::codegen::BoxFuture;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The page's files, by path.
const PAGE: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/src/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/dist/app.js"),
    ),
];

/// Only the page's own script and styles, calls back to where it came from, and the
/// empty icon that keeps browsers from asking for /favicon.ico.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; media-src 'self' blob:; img-src data:";

/// What a gRPC-Web client sends beyond the CORS-safe headers, and the trailers-in-headers
/// it must read from a response.
const REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
];
const RESPONSE_HEADERS: &[&str] = &["grpc-status", "grpc-message", "grpc-status-details-bin"];
/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Answers `GET` of the page's files in front of everything else: they need no key and
/// are plain HTTP/1.1, which the gRPC-Web layer behind would refuse.
#[derive(Clone)]
pub(super) struct ServePage;

impl<S> Layer<S> for ServePage {
    type Service = WithPage<S>;

    fn layer(&self, inner: S) -> WithPage<S> {
        WithPage { inner }
    }
}

/// A service behind [`ServePage`].
#[derive(Clone)]
pub(super) struct WithPage<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for WithPage<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let file = (request.method() == Method::GET)
            .then(|| PAGE.iter().find(|(path, ..)| *path == request.uri().path()))
            .flatten();
        match file {
            Some(&(_, content_type, text)) => {
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, content_type)
                    .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
                    .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .body(Body::new(text.to_owned()))
                    .expect("static headers are valid");
                Box::pin(std::future::ready(Ok(response)))
            }
            None => Box::pin(self.inner.call(request)),
        }
    }
}

/// CORS for gRPC-Web calls from pages on `origins` ("*": any); `None` without origins,
/// which leaves browsers only the page this server serves.
pub(super) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let names = |names: &'static [&'static str]| -> Vec<HeaderName> {
        names
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers(names(REQUEST_HEADERS))
            .expose_headers(names(RESPONSE_HEADERS))
            .max_age(PREFLIGHT_MAX_AGE),
    )
}
