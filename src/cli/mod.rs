//! Helpers shared by the subcommands: defaults, decoding flags, progress bars, the gRPC connection.

pub(crate) mod catalog;
pub(crate) mod client;
pub(crate) mod drift;
pub(crate) mod eval;
pub(crate) mod keys;
pub(crate) mod serve;
pub(crate) mod transcribe;

use std::path::Path;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;
use voice_search::asr::{TranscribeOptions, Whisper};

/// Where the catalog index lives unless told otherwise.
pub(crate) const DEFAULT_INDEX: &str = "data/index";
/// Where the default Whisper model lives unless told otherwise.
pub(crate) const DEFAULT_MODEL: &str = "models/whisper-tiny.en";

/// How Whisper decodes.
#[derive(Args, Clone)]
pub(crate) struct DecodingArgs {
    /// Language code; default: English for English-only models, detected otherwise.
    #[arg(long)]
    language: Option<String>,
    /// Beam size; 1 decodes greedily.
    #[arg(long, default_value_t = 1)]
    beam_size: usize,
    /// Print segment timestamps.
    #[arg(long)]
    timestamps: bool,
    /// Words or names to make likelier (repeatable).
    #[arg(long = "hint")]
    hints: Vec<String>,
}

impl DecodingArgs {
    pub(crate) fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            language: self.language.clone(),
            beam_size: self.beam_size.max(1),
            timestamps: self.timestamps,
            phrase_hints: self.hints.clone(),
            ..TranscribeOptions::default()
        }
    }
}

pub(crate) fn load_model(path: &Path) -> anyhow::Result<Whisper> {
    Whisper::load(path).with_context(|| {
        format!(
            "loading the Whisper model at {} (models/fetch.sh tiny.en fetches the default)",
            path.display()
        )
    })
}

pub(crate) fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} ({{eta}} left)"
        ))
        .expect("valid template"),
    );
    bar
}

/// A gRPC channel to `server` ("host:port" or a URL).
pub(crate) async fn connect(server: &str) -> anyhow::Result<Channel> {
    let uri = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    Channel::from_shared(uri.clone())
        .with_context(|| format!("{server} is not a server address"))?
        .connect()
        .await
        .with_context(|| {
            format!("cannot reach the server at {uri}: is `voice-search serve` running?")
        })
}
