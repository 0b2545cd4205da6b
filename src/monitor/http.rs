//! The Prometheus endpoint: `GET /metrics` on its own listener (one axum route: tonic
//! already builds axum), separate from the gRPC port so that it can stay on loopback.

use std::future::Future;
use std::sync::Arc;

use axum::routing::get;
use tokio::net::TcpListener;

use super::Monitor;
use crate::fleet::FleetStatus;
use crate::search::CatalogIndex;
use crate::workers::WorkerPool;

/// Serves `GET /metrics` in the Prometheus text format until `shutdown` resolves. The
/// gauges that mirror other state (queue, workers, index size, the catalog generation)
/// are read at each scrape.
pub async fn serve_metrics(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    pool: WorkerPool,
    index: Arc<CatalogIndex>,
    fleet: Arc<FleetStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scrape = move || {
        let (monitor, pool, index) = (monitor.clone(), pool.clone(), index.clone());
        let fleet = fleet.clone();
        async move {
            let metrics = &monitor.metrics;
            metrics.fleet(&fleet.state());
            metrics.queued_utterances.set(pool.queued() as i64);
            metrics.busy_workers.set(pool.running() as i64);
            let failing = index.write_error().is_some();
            metrics.index_writes_failing.set(i64::from(failing));
            if let Ok(stats) = tokio::task::spawn_blocking(move || index.stats()).await {
                match stats {
                    Ok(stats) => metrics.index_documents.set(stats.document_count as i64),
                    Err(error) => tracing::warn!(%error, "index stats for the metrics scrape"),
                }
            }
            (
                [("content-type", "text/plain; version=0.0.4")],
                metrics.render(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", get(scrape));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
