//! `voice-search serve`: settings from flags, environment and file, and the server's lifetime.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use voice_search::app::App;
use voice_search::config::ServeConfig;

/// Flags override environment variables, which override the config file, which overrides
/// the built-in defaults.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "VOICE_SEARCH_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "VOICE_SEARCH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Whisper model folder [default: models/whisper-tiny.en].
    #[arg(long, env = "VOICE_SEARCH_MODEL")]
    model: Option<PathBuf>,
    /// Catalog index folder [default: data/index].
    #[arg(long, env = "VOICE_SEARCH_INDEX")]
    index: Option<PathBuf>,
    /// Prometheus metrics address [default: 127.0.0.1:9464].
    #[arg(long, env = "VOICE_SEARCH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Largest gRPC message in bytes [default: 16 MiB].
    #[arg(long, env = "VOICE_SEARCH_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// TOML file replacing the built-in carrier phrases (see src/search/intent.rs).
    #[arg(long, env = "VOICE_SEARCH_CARRIER_PHRASES")]
    carrier_phrases: Option<PathBuf>,
    /// Longest utterance in seconds; longer ones get OUT_OF_RANGE [default: 30].
    #[arg(long, env = "VOICE_SEARCH_MAX_UTTERANCE_SECONDS")]
    max_utterance_seconds: Option<f64>,
    /// Seconds in-flight calls may run on after SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "VOICE_SEARCH_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: Option<u64>,
    /// Transcription worker threads [default: one per core].
    #[arg(long, env = "VOICE_SEARCH_WORKERS")]
    workers: Option<usize>,
    /// Utterances that may wait for a worker; more get RESOURCE_EXHAUSTED
    /// [default: 4 per worker].
    #[arg(long, env = "VOICE_SEARCH_QUEUE_DEPTH")]
    queue_depth: Option<usize>,
    /// Audio one stream may carry, and time it may stay open, in seconds [default: 300].
    #[arg(long, env = "VOICE_SEARCH_MAX_STREAM_SECONDS")]
    max_stream_seconds: Option<f64>,
    /// Seconds a stream may stay silent before DEADLINE_EXCEEDED [default: 10].
    #[arg(long, env = "VOICE_SEARCH_IDLE_TIMEOUT_SECONDS")]
    idle_timeout_seconds: Option<f64>,
    /// Streams open at once; more get RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, env = "VOICE_SEARCH_MAX_STREAMS")]
    max_streams: Option<usize>,
    /// Do not load the built-in demo catalog into an empty index.
    #[arg(long, env = "VOICE_SEARCH_NO_DEMO_CATALOG")]
    no_demo_catalog: bool,
    /// Drift reference profile (`voice-search drift baseline`) [default: none].
    #[arg(long, env = "VOICE_SEARCH_DRIFT_BASELINE")]
    drift_baseline: Option<PathBuf>,
    /// Utterances in the rolling drift window [default: 200].
    #[arg(long, env = "VOICE_SEARCH_DRIFT_WINDOW")]
    drift_window: Option<usize>,
    /// Folder for captured utterances [default: none, capture off].
    #[arg(long, env = "VOICE_SEARCH_CAPTURE_DIR")]
    capture_dir: Option<PathBuf>,
    /// Share of utterances to capture, 0 to 1 [default: 0].
    #[arg(long, env = "VOICE_SEARCH_CAPTURE_FRACTION")]
    capture_fraction: Option<f64>,
    /// Largest capture folder in MiB [default: 1024].
    #[arg(long, env = "VOICE_SEARCH_CAPTURE_MAX_MIB")]
    capture_max_mib: Option<u64>,
    /// Hours a capture is kept [default: 168].
    #[arg(long, env = "VOICE_SEARCH_CAPTURE_MAX_AGE_HOURS")]
    capture_max_age_hours: Option<f64>,
}

impl ServeArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mut config = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.model {
            config.model = v;
        }
        if let Some(v) = self.index {
            config.index = v;
        }
        if let Some(v) = self.metrics_listen {
            config.metrics_listen = v;
        }
        if let Some(v) = self.max_message_bytes {
            config.max_message_bytes = v;
        }
        if let Some(v) = self.carrier_phrases {
            config.carrier_phrases = Some(v);
        }
        if let Some(v) = self.max_utterance_seconds {
            config.max_utterance_seconds = v;
        }
        if let Some(v) = self.shutdown_grace_seconds {
            config.shutdown_grace_seconds = v;
        }
        if let Some(v) = self.workers {
            config.workers = v;
        }
        if let Some(v) = self.queue_depth {
            config.queue_depth = v;
        }
        if let Some(v) = self.max_stream_seconds {
            config.max_stream_seconds = v;
        }
        if let Some(v) = self.idle_timeout_seconds {
            config.idle_timeout_seconds = v;
        }
        if let Some(v) = self.max_streams {
            config.max_streams = v;
        }
        if self.no_demo_catalog {
            config.demo_catalog = false;
        }
        if let Some(v) = self.drift_baseline {
            config.drift_baseline = Some(v);
        }
        if let Some(v) = self.drift_window {
            config.drift_window = v;
        }
        if let Some(v) = self.capture_dir {
            config.capture_dir = Some(v);
        }
        if let Some(v) = self.capture_fraction {
            config.capture_fraction = v;
        }
        if let Some(v) = self.capture_max_mib {
            config.capture_max_mib = v;
        }
        if let Some(v) = self.capture_max_age_hours {
            config.capture_max_age_hours = v;
        }
        Ok(config)
    }
}

pub(crate) fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics", config.metrics_listen))?;
        let app = App::open(&config)?;
        tracing::info!(listen = %listener.local_addr()?, metrics = %metrics.local_addr()?, "voice-search serving gRPC, metrics at /metrics");
        voice_search::service::serve(app, &config, listener, metrics, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
}
