//! Helpers shared by the subcommands: defaults, decoding flags, progress bars, how to reach a server.

pub(crate) mod catalog;
pub(crate) mod client;
pub(crate) mod drift;
pub(crate) mod eval;
pub(crate) mod keys;
pub(crate) mod serve;
pub(crate) mod transcribe;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use voice_search::asr::{EncoderWindow, Precision, TranscribeOptions, Whisper};
use voice_search::client::{connect, ServerChannel, ServerTarget};

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
    /// Print each word's start, end and confidence.
    #[arg(long)]
    word_times: bool,
    /// Words or names to make likelier (repeatable).
    #[arg(long = "hint")]
    hints: Vec<String>,
    /// Transcripts to return, best first (as `max_alternatives`): above 1, a beam at least
    /// this wide decodes, and its other transcripts feed the catalog search too.
    #[arg(long, default_value_t = 1)]
    alternatives: usize,
    /// Matrix products of the speech model: f32, int8-output, int8-decoder, bf16-int8 or int8 (8 bits
    /// need AVX-512 VNNI or AVX2, bfloat16 AVX-512 BF16).
    #[arg(long, default_value_t = Precision::fastest())]
    pub(crate) precision: Precision,
    /// How much of the 30 s window the encoder computes: short (the speech and a padding
    /// tail, the rest from a silent pass; the whole window when decoding loops) or full.
    #[arg(long, default_value_t = EncoderWindow::default())]
    pub(crate) encoder_window: EncoderWindow,
}

impl DecodingArgs {
    pub(crate) fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            language: self.language.clone(),
            beam_size: self.beam_size.max(1),
            timestamps: self.timestamps,
            word_times: self.word_times,
            phrase_hints: self.hints.clone(),
            alternatives: self.alternatives.max(1),
            ..TranscribeOptions::default()
        }
    }
}

pub(crate) fn load_model(path: &Path, decoding: &DecodingArgs) -> anyhow::Result<Whisper> {
    Whisper::load_with(path, decoding.precision, decoding.encoder_window).with_context(|| {
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

/// How the command-line clients reach a server that asks for TLS or an API key.
#[derive(Args, Clone)]
pub(crate) struct ConnectArgs {
    /// PEM authority that signed the server's certificate; turns TLS on (an https://
    /// address without it trusts the system's authorities).
    #[arg(long, env = "VOICE_SEARCH_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM certificate to show a server that requires one (--tls-client-ca).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// API key for a server with --api-keys. Prefer the environment variable: other
    /// users of the machine can read a command line.
    #[arg(long, env = "VOICE_SEARCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl ConnectArgs {
    /// A connection to `address` ("host:port" or a URL).
    pub(crate) async fn connect(&self, address: &str) -> anyhow::Result<ServerChannel> {
        let target = ServerTarget {
            address: address.to_string(),
            ca_cert: self.ca_cert.clone(),
            client_identity: self.client_cert.clone().zip(self.client_key.clone()),
            api_key: self.api_key.clone(),
        };
        Ok(connect(&target).await?)
    }
}
