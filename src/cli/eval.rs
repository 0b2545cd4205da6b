//! `voice-search eval`: accuracy and speed over a manifest, in process or through a server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::catalog::import_catalog;
use super::{load_model, progress_bar, ConnectArgs, DecodingArgs, DEFAULT_INDEX, DEFAULT_MODEL};
use anyhow::{bail, Context};
use clap::Args;
use voice_search::app::App;
use voice_search::audio::{AudioFormat, Encoding};
use voice_search::client;
use voice_search::config::ServeConfig;
use voice_search::eval::{self, ClipResult, Report, RunInfo};
use voice_search::monitor::UtteranceFeatures;
use voice_search::pipeline::HitOptions;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::SearchOptions;
use voice_search::search::import;

#[derive(Args)]
pub(crate) struct EvalArgs {
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
    /// With --server: TLS and the API key.
    #[command(flatten)]
    connection: ConnectArgs,
    /// Plain text search of the transcript, without the catalog's re-scoring.
    #[arg(long)]
    no_catalog_bias: bool,
    /// With --server: clips streamed at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// With --server: ask for interim results too, as a live client does (finals must
    /// not suffer for them).
    #[arg(long)]
    interim: bool,
}

pub(crate) fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let entries = eval::read_manifest(&args.manifest)?;
    let (clips, run) = match &args.server {
        Some(server) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(evaluate_over_grpc(
                &entries,
                server,
                &args.connection,
                args.concurrency,
                args.interim,
            ))?
        }
        None => evaluate_in_process(&args, &entries)?,
    };
    let report = Report::new(clips).with_run(run);
    print!("{}", report.table());
    if report.calibration.clips > 0 {
        print!("{}", report.calibration.table());
    }
    for clip in &report.clips {
        if let Some(reason) = clip.miss_reason() {
            println!(
                "miss {} ({reason:?}): {:?} -> {:?} (expected {})",
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
pub(crate) fn evaluate_in_process(
    args: &EvalArgs,
    entries: &[eval::ManifestEntry],
) -> anyhow::Result<(Vec<ClipResult>, RunInfo)> {
    // The parts the server runs, opened as the server opens them.
    let app = App::open(&ServeConfig {
        index: args.index.clone(),
        model: args.model.clone(),
        carrier_phrases: args.carrier_phrases.clone(),
        precision: args.decoding.precision,
        encoder_window: args.decoding.encoder_window,
        demo_catalog: false,
        ..ServeConfig::default()
    })?;
    if app.index.stats()?.document_count == 0 {
        match &args.catalog {
            Some(catalog) => import_catalog(&app.index, catalog, import::DEFAULT_BATCH)?,
            None => bail!(
                "the index at {} is empty: pass --catalog FILE.jsonl or run `voice-search index import`",
                args.index.display()
            ),
        }
    }
    let pipeline = app.pipeline;
    if !args.text_queries && pipeline.whisper().is_none() {
        // The server goes on without a model; a speech eval cannot.
        load_model(&args.model, &args.decoding)?;
    }
    if let Some(bias) = pipeline.bias() {
        let stats = bias.stats();
        println!(
            "catalog trie: {} entries, {} sequences, {} nodes, {:.1} MiB",
            stats.entries,
            stats.sequences,
            stats.nodes,
            stats.memory_bytes as f64 / (1 << 20) as f64,
        );
    }
    let options = args.decoding.options();
    let hit_options = HitOptions {
        max_hits: 5,
        categories: Vec::new(),
        catalog_bias: !args.no_catalog_bias,
    };
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    // One untimed utterance first, so that no clip pays for warming caches.
    if let (false, Some(first)) = (args.text_queries, entries.first()) {
        pipeline.run_bytes(&std::fs::read(&first.audio)?, &format, &options, None)?;
    }
    let bar = progress_bar(entries.len() as u64, "clips");
    let mut clips = Vec::with_capacity(entries.len());
    let run_started = Instant::now();
    for entry in entries {
        let started = Instant::now();
        let mut scores = None;
        let mut features = None;
        let mut decision = None;
        let mut rescore_ms = None;
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
            let outcome = pipeline.run_bytes(&bytes, &format, &options, Some(&hit_options))?;
            scores = Some((
                outcome.transcript.no_speech_prob,
                outcome.transcript.avg_logprob,
            ));
            features = Some(UtteranceFeatures::of(
                &outcome,
                Encoding::Wav,
                pipeline.unknown_word_share(&outcome.transcript.text),
            ));
            rescore_ms = Some(outcome.timings.rescore.as_secs_f64() * 1e3);
            decision = outcome.decision;
            (outcome.transcript.text, outcome.hits)
        };
        let top_confidence = hits.first().map(|h| h.confidence);
        clips.push(ClipResult {
            id: entry.id.clone(),
            condition: entry.condition.clone(),
            voice: entry.voice(),
            kind: entry.kind.clone(),
            reference: entry.text.clone(),
            hypothesis,
            expected_doc: entry.expected_doc.clone(),
            hits: hits.into_iter().map(|h| h.hit.id).collect(),
            audio_seconds: entry.duration_s,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            no_speech_prob: scores.map(|s| s.0),
            avg_logprob: scores.map(|s| s.1),
            features,
            error: None,
            rescore_ms,
            decision,
            top_confidence,
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
pub(crate) async fn evaluate_over_grpc(
    entries: &[eval::ManifestEntry],
    server: &str,
    connection: &ConnectArgs,
    concurrency: usize,
    interim: bool,
) -> anyhow::Result<(Vec<ClipResult>, RunInfo)> {
    let channel = connection.connect(server).await?;
    let options = client::SendOptions {
        interim,
        search: SearchOptions {
            max_hits: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    // One untimed utterance first, so that no clip pays for the server's warm-up.
    if let Some(first) = entries.first() {
        let recording = client::Recording::from_file(&first.audio, false)?;
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
            let recording = client::Recording::from_file(&entry.audio, false)?;
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
                voice: entry.voice(),
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
                rescore_ms: None,
                decision: None,
                top_confidence: result.and_then(|r| r.hits.first()).map(|h| h.confidence),
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
