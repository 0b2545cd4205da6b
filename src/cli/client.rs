//! `voice-search client`: a recording sent to a server as a phone sends it.

use std::path::PathBuf;
use std::time::Instant;

use super::ConnectArgs;
use anyhow::Context;
use clap::Args;
use voice_search::client;
use voice_search::config::DEFAULT_MAX_MESSAGE_BYTES;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    RecognitionConfig, SearchOptions, StreamingVoiceSearchConfig, UtteranceResult,
    VoiceSearchRequest,
};

#[derive(Args)]
pub(crate) struct ClientArgs {
    file: PathBuf,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    connection: ConnectArgs,
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

pub(crate) fn client(args: ClientArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut voice = VoiceSearchClient::new(args.connection.connect(&args.server).await?)
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
            let encoding = client::file_encoding(&audio)
                .ok_or_else(|| client::ClientError::Format(args.file.display().to_string()))?;
            let started = Instant::now();
            let request = VoiceSearchRequest {
                config: Some(StreamingVoiceSearchConfig {
                    recognition: Some(RecognitionConfig {
                        encoding: encoding as i32,
                        ..Default::default()
                    }),
                    search: Some(search),
                }),
                audio,
            };
            let response = client::RetryPolicy::default()
                .run(|| {
                    let (mut voice, request) = (voice.clone(), request.clone());
                    async move { Ok(voice.voice_search(request).await?.into_inner()) }
                })
                .await?;
            if let Some(result) = response.result {
                print_result(0, &result, Some(started.elapsed()));
            }
            return Ok(());
        }
        let recording = client::Recording::from_file(&args.file, true)?;
        let options = client::SendOptions {
            chunk_ms: args.chunk_ms.max(1),
            realtime: args.realtime,
            interim: args.interim,
            search,
        };
        println!(
            "{}: {} utterance(s), {:.1} s at {} Hz",
            args.file.display(),
            recording.utterance_count(),
            recording.seconds(),
            recording.sample_rate
        );
        client::stream_recording(&mut voice, &recording, &options, |received| {
            print_result(received.utterance_index, &received.result, received.latency)
        })
        .await?;
        Ok(())
    })
}

pub(crate) fn print_result(
    index: u32,
    result: &UtteranceResult,
    latency: Option<std::time::Duration>,
) {
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

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    server: String,
    /// The service to ask about (`voicesearch.v1.VoiceSearch`, ...); empty for the server.
    #[arg(long, default_value = "")]
    service: String,
    #[command(flatten)]
    connection: ConnectArgs,
}

/// Longest a health check may take, connection included.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Prints the server's `grpc.health.v1` status; an error (exit 1) unless SERVING, so
/// that a container's health check or a script can rely on the exit code.
pub(crate) fn health(args: HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let status = runtime.block_on(async {
        tokio::time::timeout(HEALTH_TIMEOUT, async {
            let channel = args.connection.connect(&args.server).await?;
            let response = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: args.service.clone(),
                })
                .await?;
            anyhow::Ok(response.into_inner().status())
        })
        .await
        .with_context(|| format!("{} did not answer within {HEALTH_TIMEOUT:?}", args.server))?
    })?;
    println!("{}", status.as_str_name());
    anyhow::ensure!(
        status == ServingStatus::Serving,
        "{} is not serving",
        args.server
    );
    Ok(())
}
