//! The gRPC face of the library: tonic services that translate requests (`convert.rs`),
//! call the library and map its errors (`status.rs`), one layer counting calls
//! (`metrics.rs`), API keys at the door ([`auth`]), connections before gRPC sees them
//! (`connections.rs`, with [`tls`]), request bodies' bounds (`bodies.rs`), gRPC-Web and
//! the page (`web.rs`), the browsers' WebSocket stream (`websocket.rs`), the HTTP
//! serving of each connection (`http.rs`), health and reflection. No search or speech logic lives here.

pub mod auth;
mod bodies;
mod catalog;
mod connections;
mod convert;
mod http;
mod methods;
mod metrics;
mod monitor;
mod search;
mod status;
pub mod tls;
mod voice;
mod web;
mod websocket;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::Routes;

use crate::app::{App, Replication};
use crate::config::ServeConfig;
use crate::proto::catalog_server::CatalogServer;
use crate::proto::monitor_server::MonitorServer;
use crate::proto::search_server::SearchServer;
use crate::proto::voice_search_server::VoiceSearchServer;
use crate::proto::FILE_DESCRIPTOR_SET;

pub use bodies::BodyLimits;
pub use catalog::CatalogService;
pub use connections::ConnectionLimits;
pub use monitor::MonitorService;
pub use search::SearchService;
pub use voice::VoiceSearchService;
pub use websocket::{PATH as STREAM_PATH, PROTOCOL as STREAM_PROTOCOL, STATUS_CLOSE_BASE};

/// Longest pause between a writer's attempts to publish to a store that fails.
const PUBLISH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Keys(#[from] auth::keys::KeyError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the server needs from its files before anything else starts: the key ring and
/// the TLS acceptor, each read and checked so that a bad file stops the server at once,
/// naming the file and the cause.
pub struct Door {
    ring: Option<auth::keys::KeyRing>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Door {
    pub fn open(config: &ServeConfig) -> Result<Self, ServeError> {
        let ring = config
            .api_keys
            .as_deref()
            .map(auth::keys::KeyRing::load)
            .transpose()?;
        if let (Some(ring), Some(path)) = (&ring, &config.api_keys) {
            if ring.is_empty() {
                tracing::warn!(path = %path.display(), "the key file holds no keys: every call but health and reflection will be refused (add one with `voice-search keys add`)");
            }
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                Some(tls::acceptor(cert, key, config.tls_client_ca.as_deref())?)
            }
            _ => None,
        };
        Ok(Self { ring, tls })
    }
}

/// Serves every gRPC service of `app` on `listener`, through `door`, and the Prometheus
/// metrics on `metrics_listener` until `shutdown` resolves; then stops accepting and lets
/// in-flight calls finish for the configured grace period.
pub async fn serve(
    app: App,
    door: Door,
    config: &ServeConfig,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Door { ring, tls } = door;
    warn_if_exposed(config, ring.as_ref(), tls.is_some());
    let App {
        index,
        engine,
        pipeline,
        monitor,
        pool,
        voice,
        fleet,
        replication,
    } = app;
    // Serving only now: the model and (for a follower) a catalog generation are loaded.
    let (health, health_service) = tonic_health::server::health_reporter();
    start_serving(&health, pipeline.whisper().is_some(), fleet.role()).await;

    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let replication = replication.map(|replication| match replication {
        Replication::Publish(publisher) => {
            tokio::spawn(publisher.run(stop_seen.clone(), PUBLISH_RETRY_MAX))
        }
        Replication::Follow(follower) => {
            tokio::spawn(follower.run(index.clone(), config.snapshot_poll(), stop_seen.clone()))
        }
    });
    let stopped = move || {
        let mut stop_seen = stop_seen.clone();
        async move {
            stop_seen.wait_for(|&stop| stop).await.ok();
        }
    };
    let metrics_server = tokio::spawn(crate::monitor::http::serve_metrics(
        metrics_listener,
        monitor.clone(),
        pool.clone(),
        index.clone(),
        fleet.clone(),
        stopped(),
    ));
    let connections = connections::incoming(listener, ConnectionLimits::of(config), tls, stopped());

    let draining = Arc::new(Notify::new());
    let drain_delay = config.drain_delay();
    let on_shutdown = {
        let (draining, health) = (draining.clone(), health.clone());
        async move {
            shutdown.await;
            stop_serving(&health, drain_delay).await;
            stopping.send(true).ok();
            tracing::info!("shutting down: no new connections, draining in-flight calls");
            draining.notify_one();
        }
    };

    let stream_door = websocket::StreamDoor::new(
        voice.clone(),
        monitor.clone(),
        &config.cors_origin,
        config.max_message_bytes,
    );
    let sockets = stream_door.sockets();
    let services = Services {
        voice,
        engine,
        index,
        fleet,
        monitor: monitor.clone(),
    };
    let routes = routes(config, health_service, services)?;
    let keys = auth::RequireKeys::new(ring);
    let service = tower::ServiceBuilder::new()
        .layer(connections::MarkStarted)
        .option_layer(web::cors(&config.cors_origin))
        .option_layer(config.web.then_some(web::ServePage))
        .layer(websocket::ServeStream::new(stream_door, keys.clone()))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(bodies::BoundBodies::new(BodyLimits::of(config)))
        .layer(metrics::CountCalls::new(monitor))
        .layer(keys)
        .service(routes);
    let settings = http::Http2Settings {
        max_calls: u32::try_from(config.max_calls_per_connection).unwrap_or(u32::MAX),
        keepalive: config.keepalive(),
    };
    // Drained when the calls are done and so are the WebSocket streams, which outlive
    // their connections' HTTP.
    let server = async {
        http::serve(connections, service, settings, on_shutdown).await;
        sockets.close();
        sockets.wait().await;
    };

    let grace = config.shutdown_grace();
    tokio::select! {
        () = server => {}
        _ = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; closing the calls still open");
        }
    }
    metrics_server.abort();
    if let Some(replication) = replication {
        replication.abort();
    }
    tracing::info!("server stopped");
    Ok(())
}

/// What the gRPC services answer from.
struct Services {
    voice: crate::voice::Voice,
    engine: Arc<crate::search::QueryEngine>,
    index: Arc<crate::search::CatalogIndex>,
    fleet: Arc<crate::fleet::FleetStatus>,
    monitor: Arc<crate::monitor::Monitor>,
}

/// Every service, each with the configured message limits, and reflection when
/// asked for.
fn routes(
    config: &ServeConfig,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    services: Services,
) -> Result<Routes, ServeError> {
    let max_bytes = config.max_message_bytes;
    let Services {
        voice,
        engine,
        index,
        fleet,
        monitor,
    } = services;
    let mut routes = Routes::builder();
    routes
        .add_service(health_service)
        .add_service(
            VoiceSearchServer::new(VoiceSearchService::new(voice))
                .max_decoding_message_size(max_bytes)
                .max_encoding_message_size(max_bytes),
        )
        .add_service(
            SearchServer::new(SearchService::new(engine))
                .max_decoding_message_size(max_bytes)
                .max_encoding_message_size(max_bytes),
        )
        .add_service(
            CatalogServer::new(CatalogService::new(index, fleet))
                .max_decoding_message_size(max_bytes)
                .max_encoding_message_size(max_bytes),
        )
        .add_service(MonitorServer::new(MonitorService::new(monitor.clone())));
    if config.reflection {
        add_reflection(&mut routes)?;
    }
    Ok(routes.routes())
}

/// Warns when the server is reachable from other machines without API keys or without
/// TLS.
fn warn_if_exposed(config: &ServeConfig, ring: Option<&auth::keys::KeyRing>, tls: bool) {
    let exposed = !config.listen.ip().is_loopback();
    match ring {
        Some(ring) => tracing::info!(keys = ring.len(), "calls need an API key"),
        None if exposed => tracing::warn!(
            listen = %config.listen,
            "serving without API keys on an address others can reach: anyone who can connect may rewrite the catalog (see --api-keys)"
        ),
        None => {}
    }
    if exposed && !tls {
        tracing::warn!(listen = %config.listen, "serving plaintext on an address others can reach: audio, queries and keys travel unencrypted (see --tls-cert)");
    }
}

/// Server reflection (v1 and v1alpha) over our protos and health's.
fn add_reflection(routes: &mut tonic::service::RoutesBuilder) -> Result<(), ServeError> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes
        .add_service(configure().build_v1()?)
        .add_service(configure().build_v1alpha()?);
    Ok(())
}

/// Health SERVING for what this replica can answer. A fleet replica without its model
/// would fail every voice call the balancer sent it; a standalone server still serves
/// search and the catalog.
async fn start_serving(
    health: &tonic_health::server::HealthReporter,
    has_model: bool,
    role: crate::fleet::Role,
) {
    if !has_model && role != crate::fleet::Role::Standalone {
        tracing::warn!("no speech model: this replica reports NOT_SERVING");
        refuse_voice(health).await;
    } else {
        health
            .set_serving::<VoiceSearchServer<VoiceSearchService>>()
            .await;
    }
    health.set_serving::<SearchServer<SearchService>>().await;
    health.set_serving::<CatalogServer<CatalogService>>().await;
}

/// At shutdown, health turns NOT_SERVING first, so that balancers stop sending new calls
/// before the listener closes; the server keeps answering for `drain_delay`.
async fn stop_serving(
    health: &tonic_health::server::HealthReporter,
    drain_delay: std::time::Duration,
) {
    refuse_voice(health).await;
    health
        .set_not_serving::<SearchServer<SearchService>>()
        .await;
    health
        .set_not_serving::<CatalogServer<CatalogService>>()
        .await;
    if !drain_delay.is_zero() {
        tracing::info!(
            ?drain_delay,
            "shutting down: health NOT_SERVING, still answering while balancers notice"
        );
        tokio::time::sleep(drain_delay).await;
    }
}

/// Health NOT_SERVING for the server as a whole (what a balancer's checks ask) and for
/// voice search.
async fn refuse_voice(health: &tonic_health::server::HealthReporter) {
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<VoiceSearchServer<VoiceSearchService>>()
        .await;
}
