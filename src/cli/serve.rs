//! `voice-search serve`: settings from flags, environment and file, and the server's lifetime.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use voice_search::app::App;
use voice_search::config::{ServeConfig, ServeFlags};

/// Flags override environment variables, which override the config file, which overrides
/// the built-in defaults.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (their names with underscores as keys).
    #[arg(long, env = "VOICE_SEARCH_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ServeFlags,
}

impl ServeArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mut config = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        self.settings.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

pub(crate) fn serve(config: ServeConfig) -> anyhow::Result<()> {
    raise_file_limit(config.max_connections);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let door = voice_search::service::Door::open(&config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics", config.metrics_listen))?;
        let app = App::start(&config).await?;
        tracing::info!(listen = %listener.local_addr()?, metrics = %metrics.local_addr()?, "voice-search serving gRPC, metrics at /metrics");
        voice_search::service::serve(app, door, &config, listener, metrics, shutdown_signal())
            .await?;
        Ok(())
    })
}

/// Descriptors the server needs besides client connections: the index's files, the
/// model, the listeners, logs.
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-file limit to the hard one: each connection holds a descriptor,
/// and a soft limit of 1024 would refuse clients well before `max_connections`.
fn raise_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + RESERVED_FILES => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below max_connections plus {RESERVED_FILES}: lower max_connections or raise the hard limit"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
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
