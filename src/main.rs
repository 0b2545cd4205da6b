//! The `voice-search` command line: the server and the tools around it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use voice_search::config::ServeConfig;

#[derive(Parser)]
#[command(
    name = "voice-search",
    version,
    about = "Voice search backend: speech in, catalog hits out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
}

/// Flags override environment variables, which override the config file, which overrides
/// the built-in defaults.
#[derive(Args)]
struct ServeArgs {
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
    /// Seconds in-flight calls may run on after SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "VOICE_SEARCH_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: Option<u64>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServeConfig> {
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
        if let Some(v) = self.shutdown_grace_seconds {
            config.shutdown_grace_seconds = v;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args.into_config()?),
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "voice-search serving gRPC");
        voice_search::service::serve(&config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
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
