//! The real server on an ephemeral loopback port, called through real gRPC clients.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use voice_search::config::ServeConfig;
use voice_search::service::ServeError;

/// A server running in this process until dropped or shut down.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where the Prometheus endpoint listens.
    pub metrics_addr: SocketAddr,
    /// Holds the server's index folder until the server is gone.
    _index: tempfile::TempDir,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        config.metrics_listen = metrics_addr;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = voice_search::app::App::open(&config).unwrap();
        let task = tokio::spawn(async move {
            voice_search::service::serve(app, &config, listener, metrics, async {
                stopped.await.ok();
            })
            .await
        });
        Self {
            addr,
            metrics_addr,
            _index: index,
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
        use voice_search::proto::{
            catalog_client::CatalogClient, Document, UpsertDocumentsRequest,
        };
        let documents = documents
            .iter()
            .map(|&(id, title, category)| Document {
                id: id.into(),
                title: title.into(),
                category: category.into(),
                ..Default::default()
            })
            .collect();
        CatalogClient::new(self.channel().await)
            .upsert_documents(UpsertDocumentsRequest { documents })
            .await
            .unwrap();
    }

    /// The body of `GET /metrics`.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
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

async fn health_status(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn health_answers_serving_for_every_service() {
    let server = TestServer::start(test_config()).await;
    for service in [
        "",
        "voicesearch.v1.VoiceSearch",
        "voicesearch.v1.Search",
        "voicesearch.v1.Catalog",
    ] {
        assert_eq!(
            health_status(server.channel().await, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start(test_config()).await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("v1 reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "voicesearch.v1.VoiceSearch",
        "voicesearch.v1.Search",
        "voicesearch.v1.Catalog",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // grpcurl 1.8.6 speaks only v1alpha; it also asks for the file that defines a symbol.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "voicesearch.v1.VoiceSearch".into(),
            ),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha reflection did not return the file descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server_cleanly() {
    let config = ServeConfig {
        shutdown_grace_seconds: 1,
        ..test_config()
    };
    let server = TestServer::start(config).await;
    let addr = server.addr;
    assert_eq!(
        health_status(server.channel().await, "").await,
        ServingStatus::Serving
    );
    server.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn an_empty_index_gets_the_demo_catalog_on_first_start() {
    use voice_search::proto::search_client::SearchClient;
    use voice_search::proto::{catalog_client::CatalogClient, GetStatsRequest, SearchRequest};
    let server = TestServer::start(ServeConfig::default()).await;
    let stats = CatalogClient::new(server.channel().await)
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let expected = voice_search::search::import::DEMO_CATALOG.lines().count() as u64;
    assert_eq!(stats.document_count, expected);
    let hits = SearchClient::new(server.channel().await)
        .search(SearchRequest {
            query: "watch the shawshank redemption".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].title, "The Shawshank Redemption");
    server.shutdown().await.unwrap();
}
