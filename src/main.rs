//! The `voice-search` command line: the server and the tools around it. Each subcommand
//! lives in its own module under `cli/`.

mod cli;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use cli::catalog::{IndexCommand, SearchArgs};
use cli::client::{ClientArgs, HealthArgs};
use cli::drift::{CaptureCommand, DriftCommand};
use cli::eval::EvalArgs;
use cli::keys::KeysCommand;
use cli::serve::ServeArgs;
use cli::transcribe::TranscribeArgs;

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
    Serve(Box<ServeArgs>),
    /// Maintain the catalog index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Search the catalog for a text query, as the Search RPC does.
    Search(SearchArgs),
    /// Measure accuracy and speed over an evaluation manifest.
    Eval(Box<EvalArgs>),
    /// Transcribe audio files (WAV) and print their transcripts.
    Transcribe(TranscribeArgs),
    /// Manage Whisper models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Send a WAV file to a running server as a phone would and print what comes back.
    Client(ClientArgs),
    /// Ask a running server's health (grpc.health.v1); exit 0 only when SERVING.
    Health(HealthArgs),
    /// Drift detection: build a baseline, print the drift table.
    #[command(subcommand)]
    Drift(DriftCommand),
    /// The capture folder of sampled utterances.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// API keys the server can require (`serve --api-keys`).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Convert a CTranslate2 Whisper folder (faster-whisper's format) into a Hugging Face
    /// folder that `--model` accepts.
    Import { from: PathBuf, to: PathBuf },
}

/// Our own events from `info` up; symphonia's demuxer reports every WebM it opens at
/// `info`, which says nothing an operator needs.
const DEFAULT_LOG_FILTER: &str = "info,symphonia_format_mkv=warn";

fn main() -> anyhow::Result<()> {
    // candle splits large element-wise ops over a pool of spinning threads of its own,
    // beside the rayon pool every matrix product here runs on; on few cores the two pools
    // take turns spinning, which slows every utterance.
    // Set before any thread starts, so nothing reads the environment meanwhile.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cli::serve::serve(args.into_config()?),
        Command::Index(command) => cli::catalog::index(command),
        Command::Search(args) => cli::catalog::search(args),
        Command::Eval(args) => cli::eval::evaluate(*args),
        Command::Transcribe(args) => cli::transcribe::transcribe(args),
        Command::Client(args) => cli::client::client(args),
        Command::Health(args) => cli::client::health(args),
        Command::Drift(command) => cli::drift::drift(command),
        Command::Capture(command) => cli::drift::capture(command),
        Command::Keys(command) => cli::keys::keys(command),
        Command::Model(ModelCommand::Import { from, to }) => {
            voice_search::asr::ct2::import(&from, &to)?;
            println!("imported {} into {}", from.display(), to.display());
            Ok(())
        }
    }
}
