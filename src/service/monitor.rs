//! `voicesearch.v1.Monitor` (the drift table) and the Prometheus endpoint.

use std::future::Future;
use std::sync::Arc;

use axum::routing::get;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::status::counted;
use crate::monitor::Monitor;
use crate::proto::monitor_server;
use crate::proto::{self, GetDriftReportRequest};
use crate::search::CatalogIndex;
use crate::workers::WorkerPool;

/// Serves the drift report.
pub struct MonitorService {
    monitor: Arc<Monitor>,
}

impl MonitorService {
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor }
    }
}

#[tonic::async_trait]
impl monitor_server::Monitor for MonitorService {
    async fn get_drift_report(
        &self,
        _request: Request<GetDriftReportRequest>,
    ) -> Result<Response<proto::DriftReport>, Status> {
        let report = proto::DriftReport::from(self.monitor.drift.report());
        counted(
            &self.monitor.metrics,
            "GetDriftReport",
            Ok(Response::new(report)),
        )
    }
}

/// Serves `GET /metrics` in the Prometheus text format until `shutdown` resolves. The
/// gauges that mirror other state (queue, workers, index size) are read at each scrape.
pub async fn serve_metrics(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    pool: WorkerPool,
    index: Arc<CatalogIndex>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let scrape = move || {
        let (monitor, pool, index) = (monitor.clone(), pool.clone(), index.clone());
        async move {
            let metrics = &monitor.metrics;
            metrics.queued_utterances.set(pool.queued() as i64);
            metrics.busy_workers.set(pool.running() as i64);
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
