//! The fleet's real parts as processes on loopback ports: `voice-search serve` replicas,
//! an S3 server (moto), Envoy, and a TCP relay that can cut a replica off from the store.
//! Every process is killed when its handle drops, and every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::{SearchRequest, UpsertDocumentsRequest};

use crate::common::http_get;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A loopback port free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Envoy and moto, installed under `target/` by `deploy/envoy/install.sh` on first use.
pub fn install_tools() {
    let status = Command::new(Path::new(ROOT).join("deploy/envoy/install.sh"))
        .status()
        .expect("running deploy/envoy/install.sh");
    assert!(status.success(), "deploy/envoy/install.sh failed");
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// The ids of the first page of hits for `query`.
pub async fn search_ids(addr: SocketAddr, query: &str) -> Result<Vec<String>, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let response = SearchClient::new(channel)
        .search(SearchRequest {
            query: query.into(),
            page_size: 5,
            ..Default::default()
        })
        .await?;
    Ok(response
        .into_inner()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect())
}

/// Upserts documents `(id, title, category)` through the Catalog RPC.
pub async fn upsert(
    addr: SocketAddr,
    documents: &[(&str, &str, &str)],
) -> Result<(), tonic::Status> {
    CatalogClient::new(channel(addr).await)
        .upsert_documents(UpsertDocumentsRequest {
            documents: crate::common::documents(documents),
        })
        .await
        .map(drop)
}

/// What a replica is and where its catalog comes from.
#[derive(Clone)]
pub struct ReplicaSpec {
    pub role: &'static str,
    pub store: String,
    /// Environment for the S3 client.
    pub env: Vec<(String, String)>,
    pub secret: PathBuf,
    pub drain_delay_seconds: f64,
    pub model: PathBuf,
}

/// A `voice-search serve` process.
pub struct Replica {
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    child: Child,
    _folder: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica on `port` (0: any) and waits until its health says SERVING.
    pub async fn start(spec: &ReplicaSpec, port: u16) -> Self {
        let mut replica = Self::spawn(spec, port);
        replica.wait_serving().await;
        replica
    }

    /// Starts a replica on `port` (0: any) without waiting for it.
    pub fn spawn(spec: &ReplicaSpec, port: u16) -> Self {
        let folder = tempfile::tempdir().unwrap();
        let port = if port == 0 { free_port() } else { port };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = folder.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_voice-search"))
            .args([
                "serve",
                "--role",
                spec.role,
                "--snapshot-store",
                &spec.store,
            ])
            .args([
                "--listen",
                &addr.to_string(),
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .arg("--index")
            .arg(folder.path().join("index"))
            .arg("--model")
            .arg(&spec.model)
            .args(["--workers", "1", "--demo-catalog", "false"])
            .arg("--page-token-secret-file")
            .arg(&spec.secret)
            .args([
                "--drain-delay-seconds",
                &spec.drain_delay_seconds.to_string(),
            ])
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting voice-search serve");
        Self {
            addr,
            metrics,
            log,
            child,
            _folder: folder,
        }
    }

    async fn wait_serving(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.addr, self.log_text());
            }
            if self.health().await
                == Some(tonic_health::pb::health_check_response::ServingStatus::Serving)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} never served:\n{}",
                self.addr,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The overall health status, or `None` when it cannot be asked.
    pub async fn health(&self) -> Option<tonic_health::pb::health_check_response::ServingStatus> {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(response.into_inner().status())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Waits for the process to end by itself, for at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_for("the replica to exit", limit, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    /// The body of `GET /metrics` (empty once the replica is gone).
    pub async fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics").await.unwrap_or_default()
    }

    /// The sum of a metric's samples whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.scrape()
            .await
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A page token secret file shared by the replicas of a test.
pub fn secret_file(folder: &Path) -> PathBuf {
    let path = folder.join("page-token-secret");
    std::fs::write(&path, "a secret every replica of this test shares\n").unwrap();
    path
}

/// moto's S3 server on a loopback port, with one bucket.
pub struct S3Server {
    pub endpoint: String,
    child: Child,
}

impl S3Server {
    pub async fn start(bucket: &str) -> Self {
        install_tools();
        let port = free_port();
        let python = Path::new(ROOT).join("target/fleet-venv/bin/python");
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for("moto to listen", Duration::from_secs(60), || async {
            TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        let created = Command::new(&python)
            .args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket=sys.argv[2])",
                &endpoint,
                bucket,
            ])
            .status()
            .unwrap();
        assert!(created.success(), "creating bucket {bucket}");
        Self { endpoint, child }
    }

    /// The AWS variables a replica reaches this server with through `endpoint`.
    pub fn env(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A TCP relay from a loopback port to `target` that can be cut (every connection
/// closed, new ones refused) and restored: the network between a replica and the store.
pub struct Relay {
    pub port: u16,
    open: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (accepting, cutting) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::Acquire) {
                    continue;
                }
                let cutting = cutting.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cutting.notified() => {}
                    }
                });
            }
        });
        Self { port, open, cut }
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// Envoy with `deploy/envoy/envoy.yaml`, its ports moved to free ones: `replicas` are the
/// three replica ports (the first is the writer's).
pub struct Envoy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    _folder: tempfile::TempDir,
}

impl Envoy {
    pub async fn start(replicas: [u16; 3]) -> Self {
        install_tools();
        let folder = tempfile::tempdir().unwrap();
        let listen = free_port();
        let admin = free_port();
        let config = std::fs::read_to_string(Path::new(ROOT).join("deploy/envoy/envoy.yaml"))
            .unwrap()
            .replace("port_value: 50050", &format!("port_value: {listen}"))
            .replace("port_value: 9901", &format!("port_value: {admin}"))
            .replace("port_value: 50061", &format!("port_value: {}", replicas[0]))
            .replace("port_value: 50062", &format!("port_value: {}", replicas[1]))
            .replace("port_value: 50063", &format!("port_value: {}", replicas[2]));
        let path = folder.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(Path::new(ROOT).join("target/envoy/envoy"))
            .arg("-c")
            .arg(&path)
            .args(["--log-level", "warn", "--base-id", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(folder.path().join("envoy.log")).unwrap())
            .spawn()
            .expect("starting envoy");
        let envoy = Self {
            addr: format!("127.0.0.1:{listen}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
            child,
            _folder: folder,
        };
        envoy.wait_healthy(3).await;
        envoy
    }

    /// Envoy's admin `GET path`.
    pub async fn admin(&self, path: &str) -> String {
        http_get(self.admin, path).await.unwrap_or_default()
    }

    /// Waits until `healthy` hosts of the replica cluster pass Envoy's health checks.
    pub async fn wait_healthy(&self, healthy: usize) {
        wait_for("envoy's health checks", Duration::from_secs(60), || async {
            let clusters = self.admin("/clusters").await;
            let passing = clusters
                .lines()
                .filter(|l| l.starts_with("replicas::") && l.ends_with("::health_flags::healthy"))
                .count();
            (passing == healthy).then_some(())
        })
        .await;
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
