//! The `voice-search` command line: the server and the tools around it.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use voice_search::asr::{TranscribeOptions, Whisper};
use voice_search::audio::{self, AudioFormat, Encoding};
use voice_search::client;
use voice_search::config::{ServeConfig, DEFAULT_MAX_MESSAGE_BYTES};
use voice_search::eval::{self, ClipResult, Report, RunInfo};
use voice_search::monitor::capture::CapturedUtterance;
use voice_search::monitor::{Baseline, UtteranceFeatures};
use voice_search::pipeline::{HitOptions, Pipeline};
use voice_search::proto::monitor_client::MonitorClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::GetDriftReportRequest;
use voice_search::proto::{
    AudioEncoding, RecognitionConfig, SearchOptions, StreamingVoiceSearchConfig, UtteranceResult,
    VoiceSearchRequest,
};
use voice_search::search::import::{self, ImportEvent};
use voice_search::search::{CarrierPhrases, CatalogIndex, QueryEngine, SearchRequest};

/// Where the catalog index lives unless told otherwise.
const DEFAULT_INDEX: &str = "data/index";
/// Where the default Whisper model lives unless told otherwise.
const DEFAULT_MODEL: &str = "models/whisper-tiny.en";

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
    /// Maintain the catalog index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Search the catalog for a text query, as the Search RPC does.
    Search(SearchArgs),
    /// Measure accuracy and speed over an evaluation manifest.
    Eval(EvalArgs),
    /// Transcribe audio files (WAV) and print their transcripts.
    Transcribe(TranscribeArgs),
    /// Manage Whisper models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Send a WAV file to a running server as a phone would and print what comes back.
    Client(ClientArgs),
    /// Drift detection: build a baseline, print the drift table.
    #[command(subcommand)]
    Drift(DriftCommand),
    /// The capture folder of sampled utterances.
    #[command(subcommand)]
    Capture(CaptureCommand),
}

#[derive(Subcommand)]
enum DriftCommand {
    /// Build a reference profile from an in-process eval report (`eval --report`) or
    /// from a capture folder (live traffic), for `serve --drift-baseline`.
    Baseline {
        /// An eval report written by `voice-search eval --report` (without --server).
        #[arg(long, conflicts_with = "capture", required_unless_present = "capture")]
        report: Option<PathBuf>,
        /// With --report: keep only clips of this condition (repeatable).
        #[arg(long)]
        condition: Vec<String>,
        /// A capture folder (`serve --capture-dir`).
        #[arg(long)]
        capture: Option<PathBuf>,
        /// Where to write the baseline.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the drift table of a running server.
    Report {
        #[arg(long, default_value = "127.0.0.1:50051")]
        server: String,
    },
}

#[derive(Subcommand)]
enum CaptureCommand {
    /// Write DIR/to-label.jsonl: every capture as an eval manifest line, the transcript
    /// and first hit pre-filled; corrected and saved as DIR/manifest.jsonl, it feeds
    /// `voice-search eval --manifest DIR/manifest.jsonl`.
    Manifest { dir: PathBuf },
}

#[derive(Args)]
struct ClientArgs {
    file: PathBuf,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    server: String,
    /// Audio per message, in milliseconds.
    #[arg(long, default_value_t = 100)]
    chunk_ms: u32,
    /// Send at the pace of real time, as a live microphone does.
    #[arg(long)]
    realtime: bool,
    /// Ask for interim transcripts (with hits) while audio arrives.
    #[arg(long)]
    interim: bool,
    /// Send the whole file in one VoiceSearch call instead of streaming it.
    #[arg(long)]
    unary: bool,
    /// Hits per utterance.
    #[arg(long, default_value_t = 5)]
    max_hits: u32,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Convert a CTranslate2 Whisper folder (faster-whisper's format) into a Hugging Face
    /// folder that `--model` accepts.
    Import { from: PathBuf, to: PathBuf },
}

#[derive(Args)]
struct TranscribeArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, env = "VOICE_SEARCH_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    #[command(flatten)]
    decoding: DecodingArgs,
}

/// How Whisper decodes.
#[derive(Args, Clone)]
struct DecodingArgs {
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
    fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            language: self.language.clone(),
            beam_size: self.beam_size.max(1),
            timestamps: self.timestamps,
            phrase_hints: self.hints.clone(),
            ..TranscribeOptions::default()
        }
    }
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Load documents from a JSON Lines file (one object per line, `id` required).
    Import {
        file: PathBuf,
        #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
        index: PathBuf,
        /// Documents per commit; everything up to the last commit survives a crash.
        #[arg(long, default_value_t = import::DEFAULT_BATCH)]
        batch_size: usize,
    },
    /// Print the document count, size on disk and last commit time.
    Stats {
        #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
        index: PathBuf,
    },
}

#[derive(Args)]
struct SearchArgs {
    query: String,
    #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
    index: PathBuf,
    /// Keep only this category (repeatable).
    #[arg(long)]
    category: Vec<String>,
    #[arg(long, default_value_t = 5)]
    limit: usize,
    /// TOML file replacing the built-in carrier phrases.
    #[arg(long, env = "VOICE_SEARCH_CARRIER_PHRASES")]
    carrier_phrases: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// JSON Lines manifest: id, audio, text, expected_doc, condition per clip.
    #[arg(long)]
    manifest: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Search with each clip's reference transcript instead of its audio.
    #[arg(long)]
    text_queries: bool,
    /// With --text-queries: corrupt each transcript the way a recognizer errs, from this seed.
    #[arg(long)]
    corrupt_seed: Option<u64>,
    #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
    index: PathBuf,
    /// Import this catalog first when the index is empty.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// TOML file replacing the built-in carrier phrases.
    #[arg(long, env = "VOICE_SEARCH_CARRIER_PHRASES")]
    carrier_phrases: Option<PathBuf>,
    #[arg(long, env = "VOICE_SEARCH_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Drive a running server over gRPC (StreamingVoiceSearch) instead of running the
    /// pipeline in this process; --index, --catalog, --model and decoding flags then
    /// belong to the server.
    #[arg(long)]
    server: Option<String>,
    /// With --server: clips streamed at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
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
        Command::Index(IndexCommand::Import {
            file,
            index,
            batch_size,
        }) => import_catalog(&CatalogIndex::open(&index)?, &file, batch_size),
        Command::Index(IndexCommand::Stats { index }) => index_stats(&index),
        Command::Search(args) => search(args),
        Command::Eval(args) => evaluate(args),
        Command::Transcribe(args) => transcribe(args),
        Command::Client(args) => client(args),
        Command::Drift(DriftCommand::Baseline {
            report,
            condition,
            capture,
            out,
        }) => drift_baseline(report, &condition, capture, &out),
        Command::Drift(DriftCommand::Report { server }) => drift_report(&server),
        Command::Capture(CaptureCommand::Manifest { dir }) => {
            let lines = voice_search::monitor::capture::labelling_manifest(&dir)?;
            let path = dir.join("to-label.jsonl");
            std::fs::write(&path, &lines).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "{} captures listed in {}",
                lines.lines().count(),
                path.display()
            );
            Ok(())
        }
        Command::Model(ModelCommand::Import { from, to }) => {
            voice_search::asr::ct2::import(&from, &to)?;
            println!("imported {} into {}", from.display(), to.display());
            Ok(())
        }
    }
}

fn load_model(path: &Path) -> anyhow::Result<Whisper> {
    Whisper::load(path).with_context(|| {
        format!(
            "loading the Whisper model at {} (models/fetch.sh tiny.en fetches the default)",
            path.display()
        )
    })
}

fn transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let whisper = load_model(&args.model)?;
    let options = args.decoding.options();
    let bar = progress_bar(args.files.len() as u64, "files");
    if args.files.len() == 1 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let prepared =
            audio::prepare(&bytes, &format).with_context(|| file.display().to_string())?;
        let transcript = if prepared.info.voice.speech {
            whisper.transcribe(&prepared.samples, &options)?
        } else {
            voice_search::asr::Transcript::silent()
        };
        bar.suspend(|| {
            println!("{}\t{}", file.display(), transcript.text);
            if args.decoding.timestamps {
                let shift = prepared.info.voice.start_seconds as f32;
                for segment in &transcript.segments {
                    println!(
                        "  [{:6.2} -> {:6.2}] {}",
                        segment.start_seconds + shift,
                        segment.end_seconds + shift,
                        segment.text
                    );
                }
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}} ({{eta}} left)"
        ))
        .expect("valid template"),
    );
    bar
}

fn import_catalog(index: &CatalogIndex, file: &Path, batch_size: usize) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let bar = progress_bar(text.lines().count() as u64, "lines");
    let started = Instant::now();
    let summary = import::import_jsonl(
        index,
        BufReader::new(text.as_bytes()),
        batch_size,
        |event| match event {
            ImportEvent::Rejected { line, error } => {
                bar.suspend(|| eprintln!("line {line}: {error}"))
            }
            ImportEvent::Committed { line, .. } => {
                bar.set_position(line as u64);
                // On stdout, one line per commit: what a caller may rely on after a crash.
                bar.suspend(|| println!("committed through line {line}"));
            }
        },
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} added, {} replaced, {} rejected in {seconds:.1} s ({:.0} documents/s)",
        file.display(),
        summary.added,
        summary.replaced,
        summary.rejected,
        (summary.added + summary.replaced) as f64 / seconds
    );
    Ok(())
}

fn index_stats(path: &Path) -> anyhow::Result<()> {
    let stats = CatalogIndex::open(path)?.stats()?;
    println!("index:          {}", path.display());
    println!("documents:      {}", stats.document_count);
    println!("size on disk:   {} bytes", stats.size_bytes);
    match stats.last_commit {
        Some(at) => println!(
            "last commit:    {} s after the Unix epoch",
            at.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        ),
        None => println!("last commit:    never"),
    }
    Ok(())
}

fn search(args: SearchArgs) -> anyhow::Result<()> {
    let engine = QueryEngine::new(
        Arc::new(CatalogIndex::open(&args.index)?),
        CarrierPhrases::load(args.carrier_phrases.as_deref())?,
    );
    let results = engine.search(&SearchRequest {
        query: args.query,
        categories: args.category,
        page_size: args.limit,
        page_token: String::new(),
    })?;
    println!("query: {}", results.interpreted_query);
    for (rank, hit) in results.hits.iter().enumerate() {
        println!(
            "{:>2}. {:<16} {:>7.2}  [{}] {}",
            rank + 1,
            hit.id,
            hit.score,
            hit.category,
            hit.title
        );
    }
    Ok(())
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let entries = eval::read_manifest(&args.manifest)?;
    let (clips, run) = match &args.server {
        Some(server) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(evaluate_over_grpc(&entries, server, args.concurrency))?
        }
        None => evaluate_in_process(&args, &entries)?,
    };
    let report = Report::new(clips).with_run(run);
    print!("{}", report.table());
    for clip in report.clips.iter().filter(|c| c.expected_doc.is_some()) {
        if clip.hits.first() != clip.expected_doc.as_ref() {
            println!(
                "miss {}: {:?} -> {:?} (expected {})",
                clip.id,
                clip.hypothesis,
                clip.hits.first(),
                clip.expected_doc.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(path) = &args.report {
        report.write(path)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// Runs every clip through the pipeline in this process, one after another.
fn evaluate_in_process(
    args: &EvalArgs,
    entries: &[eval::ManifestEntry],
) -> anyhow::Result<(Vec<ClipResult>, RunInfo)> {
    let index = Arc::new(CatalogIndex::open(&args.index)?);
    if index.stats()?.document_count == 0 {
        match &args.catalog {
            Some(catalog) => import_catalog(&index, catalog, import::DEFAULT_BATCH)?,
            None => bail!(
                "the index at {} is empty: pass --catalog FILE.jsonl or run `voice-search index import`",
                args.index.display()
            ),
        }
    }
    let mut pipeline = Pipeline {
        whisper: None,
        search: Some(Arc::new(QueryEngine::new(
            index,
            CarrierPhrases::load(args.carrier_phrases.as_deref())?,
        ))),
    };
    if !args.text_queries {
        pipeline.whisper = Some(Arc::new(load_model(&args.model)?));
    }
    let options = args.decoding.options();
    let hit_options = HitOptions {
        max_hits: 5,
        categories: Vec::new(),
    };
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    // One untimed utterance first, so that no clip pays for warming caches.
    if let (false, Some(first)) = (args.text_queries, entries.first()) {
        pipeline.run(&std::fs::read(&first.audio)?, &format, &options, None)?;
    }
    let bar = progress_bar(entries.len() as u64, "clips");
    let mut clips = Vec::with_capacity(entries.len());
    let run_started = Instant::now();
    for entry in entries {
        let started = Instant::now();
        let mut scores = None;
        let mut features = None;
        let (hypothesis, hits) = if args.text_queries {
            let query = match args.corrupt_seed {
                Some(seed) => eval::corrupt::corrupt(&entry.text, seed),
                None => entry.text.clone(),
            };
            let hits = if query.trim().is_empty() {
                Vec::new()
            } else {
                pipeline.search_text(&query, &hit_options)?
            };
            (query, hits)
        } else {
            let bytes = std::fs::read(&entry.audio)
                .with_context(|| format!("reading {}", entry.audio.display()))?;
            let outcome = pipeline.run(&bytes, &format, &options, Some(&hit_options))?;
            scores = Some((
                outcome.transcript.no_speech_prob,
                outcome.transcript.avg_logprob,
            ));
            features = Some(UtteranceFeatures::of(
                &outcome,
                Encoding::Wav,
                pipeline.unknown_word_share(&outcome.transcript.text),
            ));
            (outcome.transcript.text, outcome.hits)
        };
        clips.push(ClipResult {
            id: entry.id.clone(),
            condition: entry.condition.clone(),
            kind: entry.kind.clone(),
            reference: entry.text.clone(),
            hypothesis,
            expected_doc: entry.expected_doc.clone(),
            hits: hits.into_iter().map(|h| h.id).collect(),
            audio_seconds: entry.duration_s,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            no_speech_prob: scores.map(|s| s.0),
            avg_logprob: scores.map(|s| s.1),
            features,
            error: None,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((
        clips,
        RunInfo::new("in process", 1, run_started.elapsed(), entries.len()),
    ))
}

/// Streams every clip to a running server, `concurrency` at a time, through the same
/// client as `voice-search client`; latency runs from the last audio sent to the final
/// result received.
async fn evaluate_over_grpc(
    entries: &[eval::ManifestEntry],
    server: &str,
    concurrency: usize,
) -> anyhow::Result<(Vec<ClipResult>, RunInfo)> {
    let channel = connect(server).await?;
    let options = client::SendOptions {
        search: SearchOptions {
            max_hits: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    // One untimed utterance first, so that no clip pays for the server's warm-up.
    if let Some(first) = entries.first() {
        let recording = client::Recording::from_wav(&first.audio, false)?;
        client::stream_recording(
            &mut VoiceSearchClient::new(channel.clone()),
            &recording,
            &options,
            |_| {},
        )
        .await?;
    }
    let bar = progress_bar(entries.len() as u64, "clips");
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut calls = Vec::with_capacity(entries.len());
    for entry in entries.iter().cloned() {
        let slot = slots.clone().acquire_owned().await?;
        let mut voice = VoiceSearchClient::new(channel.clone());
        let options = options.clone();
        let bar = bar.clone();
        calls.push(tokio::spawn(async move {
            let _slot = slot;
            let recording = client::Recording::from_wav(&entry.audio, false)?;
            let outcome = client::stream_recording(&mut voice, &recording, &options, |_| {}).await;
            bar.inc(1);
            let (final_result, error) = match outcome {
                Ok(mut finals) if !finals.is_empty() => (Some(finals.remove(0)), None),
                Ok(_) => (None, Some("the server sent no final result".to_string())),
                Err(client::ClientError::Status(status)) => (
                    None,
                    Some(format!("{:?}: {}", status.code(), status.message())),
                ),
                Err(other) => return Err(anyhow::Error::from(other)),
            };
            let result = final_result.as_ref().map(|r| &r.result);
            let transcript = result
                .and_then(|r| r.transcript.clone())
                .unwrap_or_default();
            Ok(ClipResult {
                id: entry.id.clone(),
                condition: entry.condition.clone(),
                kind: entry.kind.clone(),
                reference: entry.text.clone(),
                hypothesis: transcript.text,
                expected_doc: entry.expected_doc.clone(),
                hits: result
                    .map(|r| r.hits.iter().map(|h| h.id.clone()).collect())
                    .unwrap_or_default(),
                audio_seconds: entry.duration_s,
                latency_ms: final_result
                    .as_ref()
                    .and_then(|r| r.latency)
                    .map_or(0.0, |l| l.as_secs_f64() * 1e3),
                no_speech_prob: result.map(|_| transcript.no_speech_probability),
                avg_logprob: None,
                features: None,
                error,
            })
        }));
    }
    let mut clips = Vec::with_capacity(calls.len());
    for call in calls {
        clips.push(call.await??);
    }
    bar.finish_and_clear();
    let run = RunInfo::new(
        &format!("gRPC {server}"),
        concurrency,
        started.elapsed(),
        clips.len(),
    );
    Ok((clips, run))
}

/// A gRPC channel to `server` ("host:port" or a URL).
async fn connect(server: &str) -> anyhow::Result<Channel> {
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

fn client(args: ClientArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut voice = VoiceSearchClient::new(connect(&args.server).await?)
            .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES);
        let search = SearchOptions {
            max_hits: args.max_hits,
            search_interim: args.interim,
            ..Default::default()
        };
        if args.unary {
            let audio = std::fs::read(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let started = Instant::now();
            let response = voice
                .voice_search(VoiceSearchRequest {
                    config: Some(StreamingVoiceSearchConfig {
                        recognition: Some(RecognitionConfig {
                            encoding: AudioEncoding::Wav as i32,
                            ..Default::default()
                        }),
                        search: Some(search),
                    }),
                    audio,
                })
                .await?
                .into_inner();
            if let Some(result) = response.result {
                print_result(0, &result, Some(started.elapsed()));
            }
            return Ok(());
        }
        let recording = client::Recording::from_wav(&args.file, true)?;
        let options = client::SendOptions {
            chunk_ms: args.chunk_ms.max(1),
            realtime: args.realtime,
            interim: args.interim,
            search,
        };
        println!(
            "{}: {} utterance(s), {:.1} s at {} Hz",
            args.file.display(),
            recording.utterances.len(),
            recording.samples.len() as f64
                / recording.channels as f64
                / recording.sample_rate as f64,
            recording.sample_rate
        );
        client::stream_recording(&mut voice, &recording, &options, |received| {
            print_result(received.utterance_index, &received.result, received.latency)
        })
        .await?;
        Ok(())
    })
}

fn drift_baseline(
    report: Option<PathBuf>,
    conditions: &[String],
    capture: Option<PathBuf>,
    out: &Path,
) -> anyhow::Result<()> {
    let (features, source) = match (report, capture) {
        (Some(report), _) => {
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("reading {}", report.display()))?;
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an eval report", report.display()))?;
            let features: Vec<UtteranceFeatures> = parsed["clips"]
                .as_array()
                .context("the report has no clips")?
                .iter()
                .filter(|clip| {
                    conditions.is_empty()
                        || conditions
                            .iter()
                            .any(|c| clip["condition"].as_str() == Some(c))
                })
                .filter_map(|clip| serde_json::from_value(clip["features"].clone()).ok())
                .collect();
            let source = if conditions.is_empty() {
                report.display().to_string()
            } else {
                format!("{} ({})", report.display(), conditions.join(", "))
            };
            (features, source)
        }
        (None, Some(dir)) => {
            let mut features = Vec::new();
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&path)?;
                    if let Ok(record) = serde_json::from_str::<CapturedUtterance>(&text) {
                        features.push(record.features);
                    }
                }
            }
            (features, dir.display().to_string())
        }
        (None, None) => bail!("give --report or --capture"),
    };
    if features.is_empty() {
        bail!("no utterance features found: an eval report needs clips run in process (not --server, not --text-queries)");
    }
    let baseline = Baseline::from_features(&features, &source)?;
    baseline.save(out)?;
    println!(
        "baseline of {} utterances from {source} written to {}",
        baseline.utterances,
        out.display()
    );
    Ok(())
}

fn drift_report(server: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let channel = connect(server).await?;
        anyhow::Ok(
            MonitorClient::new(channel)
                .get_drift_report(GetDriftReportRequest {})
                .await?
                .into_inner(),
        )
    })?;
    println!(
        "window: {} of {} utterances; baseline: {}",
        report.utterances_in_window,
        report.window_size,
        if report.baseline_source.is_empty() {
            "none (serve --drift-baseline FILE)"
        } else {
            &report.baseline_source
        }
    );
    println!(
        "{:<24} {:>18} {:>18} {:>8}  state",
        "feature", "reference", "current", "PSI"
    );
    for row in &report.features {
        println!(
            "{:<24} {:>18} {:>18} {:>8.3}  {}",
            row.feature,
            row.reference,
            row.current,
            row.psi,
            row.state().as_str_name()
        );
    }
    Ok(())
}

fn print_result(index: u32, result: &UtteranceResult, latency: Option<std::time::Duration>) {
    let text = result.transcript.as_ref().map_or("", |t| t.text.as_str());
    if !result.is_final {
        match result.hits.first() {
            Some(hit) => println!("[{index} interim] {text}  -> {} {}", hit.id, hit.title),
            None => println!("[{index} interim] {text}"),
        }
        return;
    }
    match latency {
        Some(latency) => println!(
            "[{index}] {text}    ({:.0} ms)",
            latency.as_secs_f64() * 1e3
        ),
        None => println!("[{index}] {text}"),
    }
    for (rank, hit) in result.hits.iter().enumerate() {
        println!(
            "    {:>2}. {:<16} {:>7.2}  [{}] {}",
            rank + 1,
            hit.id,
            hit.score,
            hit.category,
            hit.title
        );
    }
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics", config.metrics_listen))?;
        tracing::info!(listen = %listener.local_addr()?, metrics = %metrics.local_addr()?, "voice-search serving gRPC, metrics at /metrics");
        voice_search::service::serve(&config, listener, metrics, shutdown_signal()).await?;
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
