//! The real server on an ephemeral loopback port, for the tests to call through real
//! gRPC clients.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use voice_search::config::ServeConfig;
use voice_search::service::ServeError;

/// A server running in this process until dropped or shut down.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where the Prometheus endpoint listens.
    pub metrics_addr: SocketAddr,
    /// Holds the server's index folder, when the test did not give one, until the
    /// server is gone.
    _index: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

/// The server settings tests start from: the index starts empty (no demo catalog).
pub fn test_config() -> ServeConfig {
    ServeConfig {
        demo_catalog: false,
        ..ServeConfig::default()
    }
}

impl TestServer {
    /// Starts a server with `config`, its index in a fresh temporary folder.
    pub async fn start(mut config: ServeConfig) -> Self {
        let index = tempfile::tempdir().unwrap();
        config.index = index.path().to_owned();
        let mut server = Self::start_in(config).await;
        server._index = Some(index);
        server
    }

    /// Starts a server with `config`, its index where `config.index` says.
    pub async fn start_in(mut config: ServeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        config.metrics_listen = metrics_addr;
        let (stop, stopped) = oneshot::channel::<()>();
        let door = voice_search::service::Door::open(&config).unwrap();
        let app = voice_search::app::App::open(&config).unwrap();
        let task = tokio::spawn(async move {
            voice_search::service::serve(app, door, &config, listener, metrics, async {
                stopped.await.ok();
            })
            .await
        });
        Self {
            addr,
            metrics_addr,
            _index: None,
            stop: Some(stop),
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Upserts `(id, title, category)` documents through the Catalog RPC.
    pub async fn add_documents(&self, documents: &[(&str, &str, &str)]) {
        use voice_search::proto::{catalog_client::CatalogClient, UpsertDocumentsRequest};
        CatalogClient::new(self.channel().await)
            .upsert_documents(UpsertDocumentsRequest {
                documents: super::documents(documents),
            })
            .await
            .unwrap();
    }

    /// The server's drift report (Monitor RPC).
    pub async fn drift_report(&self) -> voice_search::proto::DriftReport {
        use voice_search::proto::{monitor_client::MonitorClient, GetDriftReportRequest};
        MonitorClient::new(self.channel().await)
            .get_drift_report(GetDriftReportRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// The body of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        let response = super::http_get(self.metrics_addr, "/metrics")
            .await
            .expect("the metrics endpoint answers");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// Polls the metrics until `metric` reads `value`; panics after 30 s.
    pub async fn wait_for_metric(&self, metric: &str, value: f64) {
        for _ in 0..3000 {
            if sample(&self.scrape().await, metric) == value {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{metric} never reached {value}");
    }

    /// Sends the shutdown signal and waits for the server to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop.take().unwrap().send(()).ok();
        (&mut self.task).await.unwrap()
    }
}

/// The value of the first sample line of a scrape starting with `prefix`.
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in the scrape:\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
