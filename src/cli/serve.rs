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
