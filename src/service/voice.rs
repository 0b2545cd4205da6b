//! `voicesearch.v1.VoiceSearch`: spoken queries in, transcripts and hits out.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::status::counted;
use crate::asr::TranscribeOptions;
use crate::audio::{AudioFormat, Encoding};
use crate::config::ServeConfig;
use crate::monitor::Monitor;
use crate::pipeline::{HitOptions, Pipeline, PipelineError, UtteranceOutcome};
use crate::proto::streaming_voice_search_request::Request as StreamRequest;
use crate::proto::voice_search_server::VoiceSearch;
use crate::proto::{
    self, AudioEncoding, RecognitionConfig, StreamingVoiceSearchConfig,
    StreamingVoiceSearchRequest, StreamingVoiceSearchResponse, TranscribeRequest,
    TranscribeResponse, UtteranceResult, VoiceSearchRequest, VoiceSearchResponse,
};
use crate::search::query::MAX_PAGE_SIZE;
use crate::session::{Session, SessionLimits, Utterance};
use crate::workers::{JobFailed, JobHandle, PoolFull, WorkerPool};

/// Hits per utterance when the config does not say.
const DEFAULT_MAX_HITS: usize = 5;

/// Serves the voice RPCs.
pub struct VoiceSearchService {
    pipeline: Pipeline,
    pool: WorkerPool,
    monitor: Arc<Monitor>,
    limits: SessionLimits,
    idle_timeout: Duration,
    streams: Arc<Semaphore>,
}

impl VoiceSearchService {
    pub fn new(
        pipeline: Pipeline,
        pool: WorkerPool,
        monitor: Arc<Monitor>,
        config: &ServeConfig,
    ) -> Self {
        Self {
            pipeline,
            pool,
            monitor,
            limits: config.session_limits(),
            idle_timeout: config.idle_timeout(),
            streams: Arc::new(Semaphore::new(config.max_streams)),
        }
    }

    /// Runs one whole utterance through the pipeline on the worker pool.
    async fn run(
        &self,
        config: Option<RecognitionConfig>,
        audio: Vec<u8>,
        hits: Option<HitOptions>,
    ) -> Result<UtteranceOutcome, Status> {
        let started = Instant::now();
        let config = config.ok_or_else(|| Status::invalid_argument("config is missing"))?;
        let format = audio_format(&config)?;
        let options = transcribe_options(&config, self.limits.max_utterance_seconds)?;
        let job = submit_utterance(
            &self.pool,
            &self.pipeline,
            &self.monitor,
            audio,
            format,
            options,
            hits,
        )?;
        let outcome = job.await??;
        self.monitor.metrics.utterance(&outcome, started.elapsed());
        Ok(outcome)
    }

    /// What a stream needs once the call has returned its response stream.
    fn stream_worker(&self) -> StreamWorker {
        StreamWorker {
            pipeline: self.pipeline.clone(),
            pool: self.pool.clone(),
            monitor: self.monitor.clone(),
            limits: self.limits,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Queues a whole utterance on the pool: the pipeline run, then the monitor's record of
/// it (drift window, capture). Unary calls and stream finals both come through here.
fn submit_utterance(
    pool: &WorkerPool,
    pipeline: &Pipeline,
    monitor: &Arc<Monitor>,
    bytes: Vec<u8>,
    format: AudioFormat,
    options: TranscribeOptions,
    hits: Option<HitOptions>,
) -> Result<PendingOutcome, PoolFull> {
    let (pipeline, monitor) = (pipeline.clone(), monitor.clone());
    pool.submit(move |cancelled| {
        let options = options.cancelled_by(cancelled);
        let outcome = pipeline.run(&bytes, &format, &options, hits.as_ref())?;
        monitor.observe(&outcome, &format, &bytes);
        Ok(outcome)
    })
}

fn transcribe_options(
    config: &RecognitionConfig,
    max_seconds: f64,
) -> Result<TranscribeOptions, Status> {
    let alternatives = match config.max_alternatives as usize {
        n if n > MAX_ALTERNATIVES => {
            return Err(Status::invalid_argument(format!(
                "max_alternatives {n} is over the limit of {MAX_ALTERNATIVES}"
            )))
        }
        n => n.max(1),
    };
    Ok(TranscribeOptions {
        language: Some(config.language.clone()).filter(|l| !l.is_empty()),
        phrase_hints: config.phrase_hints.clone(),
        max_seconds,
        alternatives,
        ..TranscribeOptions::default()
    })
}

/// Most transcripts one utterance may ask for, as Google Speech-to-Text allows.
const MAX_ALTERNATIVES: usize = 10;

/// The wire audio description as the front end's.
pub fn audio_format(config: &RecognitionConfig) -> Result<AudioFormat, Status> {
    let encoding = match AudioEncoding::try_from(config.encoding) {
        Ok(AudioEncoding::Linear16) => Encoding::Linear16,
        Ok(AudioEncoding::Float32) => Encoding::Float32,
        Ok(AudioEncoding::Wav) => Encoding::Wav,
        Ok(AudioEncoding::Mulaw) => Encoding::Mulaw,
        Ok(AudioEncoding::Unspecified) => {
            return Err(Status::invalid_argument(
                "encoding is unspecified: set LINEAR16, FLOAT32, WAV or MULAW",
            ))
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "encoding {} is unknown: use LINEAR16, FLOAT32, WAV or MULAW",
                config.encoding
            )))
        }
    };
    let channels = u16::try_from(config.channels).map_err(|_| {
        Status::invalid_argument(format!(
            "{} channels are out of range: it must be 1 to 8",
            config.channels
        ))
    })?;
    let format = AudioFormat {
        encoding,
        sample_rate: Some(config.sample_rate_hz).filter(|&r| r != 0),
        channels: match (encoding, channels) {
            (Encoding::Wav, 0) => None,
            (_, 0) => Some(1),
            (_, n) => Some(n),
        },
    };
    format.validate()?;
    Ok(format)
}

/// Hits wanted, from the wire options.
pub fn hit_options(search: Option<&proto::SearchOptions>) -> Result<HitOptions, Status> {
    let max_hits = match search.map_or(0, |s| s.max_hits as usize) {
        0 => DEFAULT_MAX_HITS,
        n if n > MAX_PAGE_SIZE => {
            return Err(Status::invalid_argument(format!(
                "max_hits {n} is over the limit of {MAX_PAGE_SIZE}"
            )))
        }
        n => n,
    };
    let categories = search
        .and_then(|s| s.filters.as_ref())
        .map(|f| f.categories.clone())
        .unwrap_or_default();
    Ok(HitOptions {
        max_hits,
        categories,
        catalog_bias: !search.is_some_and(|s| s.disable_catalog_bias),
    })
}

/// Responses a stream may have ready before the client reads them.
const RESPONSES_BUFFERED: usize = 8;

/// What one utterance's pipeline run gives, awaited on the worker pool.
type PendingOutcome = JobHandle<Result<UtteranceOutcome, PipelineError>>;

/// A transcription in flight for a stream.
struct InFlight {
    index: u32,
    is_final: bool,
    /// When the utterance ended (final results), for the end-to-end latency.
    ended: Instant,
    outcome: PendingOutcome,
}

/// Runs one stream: reads its messages, feeds its session, and sends each utterance's
/// results in order. Utterances of one stream are transcribed one at a time.
struct StreamWorker {
    pipeline: Pipeline,
    pool: WorkerPool,
    monitor: Arc<Monitor>,
    limits: SessionLimits,
    idle_timeout: Duration,
}

/// The stream as the worker reads it.
struct StreamSettings {
    format: AudioFormat,
    options: TranscribeOptions,
    hits: HitOptions,
    search_interim: bool,
}

type Responses = mpsc::Sender<Result<StreamingVoiceSearchResponse, Status>>;

impl StreamWorker {
    /// Returns when the stream is done or the client has gone; an error is the status
    /// the stream ends with.
    async fn drive(
        &self,
        mut inbound: Streaming<StreamingVoiceSearchRequest>,
        out: &Responses,
    ) -> Result<(), Status> {
        let opened = Instant::now();
        let config = match self.first_message(&mut inbound).await? {
            Some(config) => config,
            None => return Ok(()),
        };
        let recognition = config.recognition.ok_or_else(|| {
            Status::invalid_argument(
                "config.recognition is missing: it must say how the audio is encoded",
            )
        })?;
        let settings = StreamSettings {
            format: audio_format(&recognition)?,
            options: transcribe_options(&recognition, self.limits.max_utterance_seconds)?,
            hits: hit_options(config.search.as_ref())?,
            search_interim: config.search.as_ref().is_some_and(|s| s.search_interim),
        };
        let mut session = Session::new(settings.format, self.limits, recognition.interim_results);
        let mut in_flight: Option<InFlight> = None;
        let mut waiting: VecDeque<(Utterance, Instant)> = VecDeque::new();
        let mut client_open = true;
        // The first error ends the stream, but only after the results of every utterance
        // already received in full, so that nothing the client sent is lost.
        let mut failure: Option<Status> = None;
        let mut last_activity = Instant::now();
        let closes_at = opened + Duration::from_secs_f64(self.limits.max_stream_seconds);
        loop {
            if in_flight.is_none() {
                if let Some((utterance, ended)) = waiting.pop_front() {
                    match self.start_final(utterance, ended, &settings) {
                        Ok(job) => in_flight = Some(job),
                        Err(status) => {
                            failure.get_or_insert(status);
                            waiting.clear();
                        }
                    }
                }
            }
            if !client_open && in_flight.is_none() {
                return failure.map_or(Ok(()), Err);
            }
            let idle = in_flight.is_none() && client_open;
            let event = tokio::select! {
                // The client cancelled or disconnected: dropping the job frees its place.
                () = out.closed() => return Ok(()),
                result = async { (&mut in_flight.as_mut().expect("guarded").outcome).await },
                    if in_flight.is_some() =>
                {
                    let done = in_flight.take().expect("guarded");
                    last_activity = Instant::now();
                    match self.respond(&done, result, &settings) {
                        Ok(Some(response)) => {
                            if out.send(Ok(response)).await.is_err() {
                                return Ok(());
                            }
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(status) => Err(status),
                    }
                }
                message = inbound.message(), if client_open => {
                    last_activity = Instant::now();
                    self.receive(message, &mut session, &mut waiting, &mut in_flight, &settings)
                        .map(|open| client_open = open)
                }
                () = tokio::time::sleep_until((last_activity + self.idle_timeout).into()), if idle => {
                    Err(Status::deadline_exceeded(format!(
                        "no message for {:.0} s: send audio, end_of_utterance or close the stream",
                        self.idle_timeout.as_secs_f64()
                    )))
                }
                () = tokio::time::sleep_until(closes_at.into()), if failure.is_none() => {
                    Err(Status::out_of_range(format!(
                        "the stream has been open for {:.0} s, the limit: open a new stream",
                        self.limits.max_stream_seconds
                    )))
                }
            };
            if let Err(status) = event {
                failure.get_or_insert(status);
                client_open = false;
                in_flight.take_if(|job| !job.is_final);
            }
        }
    }

    /// Takes one inbound message; returns whether the client may send more.
    fn receive(
        &self,
        message: Result<Option<StreamingVoiceSearchRequest>, Status>,
        session: &mut Session,
        waiting: &mut VecDeque<(Utterance, Instant)>,
        in_flight: &mut Option<InFlight>,
        settings: &StreamSettings,
    ) -> Result<bool, Status> {
        // A message over the size limit, or the client reset the stream (then nobody
        // hears the status, which is harmless).
        let Some(message) = message? else {
            if session.has_audio() {
                waiting.push_back((session.finish_utterance()?, Instant::now()));
                in_flight.take_if(|job| !job.is_final);
            }
            return Ok(false);
        };
        match message.request {
            Some(StreamRequest::Audio(chunk)) => {
                session.push(&chunk)?;
                if in_flight.is_none() && waiting.is_empty() {
                    *in_flight = self.start_interim(session, settings);
                }
            }
            Some(StreamRequest::EndOfUtterance(_)) => {
                waiting.push_back((session.finish_utterance()?, Instant::now()));
                in_flight.take_if(|job| !job.is_final);
            }
            Some(StreamRequest::Config(_)) => {
                return Err(Status::invalid_argument(
                    "a second config: the config comes once, as the first message; open a \
                     new stream for other settings",
                ))
            }
            None => return Err(empty_message()),
        }
        Ok(true)
    }

    /// The config, or `None` when the client closed the stream without sending anything.
    async fn first_message(
        &self,
        inbound: &mut Streaming<StreamingVoiceSearchRequest>,
    ) -> Result<Option<StreamingVoiceSearchConfig>, Status> {
        let message = tokio::time::timeout(self.idle_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no config within {:.0} s of opening the stream",
                    self.idle_timeout.as_secs_f64()
                ))
            })??;
        let Some(message) = message else {
            return Ok(None);
        };
        match message.request {
            Some(StreamRequest::Config(config)) => Ok(Some(config)),
            Some(StreamRequest::Audio(_)) => Err(Status::invalid_argument(
                "audio before the config: the first message of a stream must be the config",
            )),
            Some(StreamRequest::EndOfUtterance(_)) => Err(Status::invalid_argument(
                "end_of_utterance before the config: the first message of a stream must be \
                 the config",
            )),
            None => Err(empty_message()),
        }
    }

    fn start_final(
        &self,
        utterance: Utterance,
        ended: Instant,
        settings: &StreamSettings,
    ) -> Result<InFlight, Status> {
        let outcome = submit_utterance(
            &self.pool,
            &self.pipeline,
            &self.monitor,
            utterance.bytes,
            settings.format,
            settings.options.clone(),
            Some(settings.hits.clone()),
        )
        .map_err(|full| utterance_status(utterance.index, full.into()))?;
        Ok(InFlight {
            index: utterance.index,
            is_final: true,
            ended,
            outcome,
        })
    }

    /// Starts an interim transcription when one is due and a worker can take it; a busy
    /// pool only skips it.
    fn start_interim(&self, session: &mut Session, settings: &StreamSettings) -> Option<InFlight> {
        let (index, bytes) = session.interim_due()?;
        let pipeline = self.pipeline.clone();
        let (format, options) = (settings.format, settings.options.clone());
        let hits = settings.search_interim.then(|| settings.hits.clone());
        let outcome = self
            .pool
            .submit(move |cancelled| {
                let options = options.cancelled_by(cancelled);
                pipeline.run_prefix(&bytes, &format, &options, hits.as_ref())
            })
            .ok()?;
        Some(InFlight {
            index,
            is_final: false,
            ended: Instant::now(),
            outcome,
        })
    }

    /// The response for a finished job; a failed interim result is only skipped, a failed
    /// final one ends the stream.
    fn respond(
        &self,
        job: &InFlight,
        result: Result<Result<UtteranceOutcome, PipelineError>, JobFailed>,
        settings: &StreamSettings,
    ) -> Result<Option<StreamingVoiceSearchResponse>, Status> {
        let outcome = match (result, job.is_final) {
            (Ok(Ok(outcome)), _) => outcome,
            (Ok(Err(error)), true) => return Err(utterance_status(job.index, error.into())),
            (Err(failed), true) => return Err(utterance_status(job.index, failed.into())),
            (_, false) => return Ok(None),
        };
        if !job.is_final && outcome.transcript.text.is_empty() {
            return Ok(None);
        }
        if job.is_final {
            self.monitor
                .metrics
                .utterance(&outcome, job.ended.elapsed());
        }
        let hits = if job.is_final || settings.search_interim {
            outcome.hits.into_iter().map(proto::Hit::from).collect()
        } else {
            Vec::new()
        };
        Ok(Some(StreamingVoiceSearchResponse {
            utterance_index: job.index,
            result: Some(UtteranceResult {
                is_final: job.is_final,
                audio: Some(proto::AudioInfo::from(&outcome.audio)),
                transcript: Some(proto::Transcript::from(outcome.transcript)),
                hits,
            }),
        }))
    }
}

fn empty_message() -> Status {
    Status::invalid_argument("a message with nothing set: set config, audio or end_of_utterance")
}

/// A status about one utterance names it.
fn utterance_status(index: u32, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("utterance {index}: {}", status.message()),
    )
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<StreamingVoiceSearchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VoiceSearch for VoiceSearchService {
    type StreamingVoiceSearchStream = ResponseStream;

    async fn streaming_voice_search(
        &self,
        request: Request<Streaming<StreamingVoiceSearchRequest>>,
    ) -> Result<Response<Self::StreamingVoiceSearchStream>, Status> {
        const RPC: &str = "StreamingVoiceSearch";
        let metrics = &self.monitor.metrics;
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return counted(
                metrics,
                RPC,
                Err(Status::resource_exhausted(
                    "the server has as many streams open as it allows; retry with backoff",
                )),
            );
        };
        let inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(RESPONSES_BUFFERED);
        let worker = self.stream_worker();
        metrics.active_streams.inc();
        tokio::spawn(async move {
            // Held until the stream ends, so it counts against the limit until then.
            let _permit = permit;
            let outcome = worker.drive(inbound, &sender).await;
            let metrics = &worker.monitor.metrics;
            metrics.active_streams.dec();
            if let Err(status) = counted(metrics, RPC, outcome) {
                tracing::info!(code = ?status.code(), message = status.message(), "stream ended with an error");
                sender.send(Err(status)).await.ok();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn voice_search(
        &self,
        request: Request<VoiceSearchRequest>,
    ) -> Result<Response<VoiceSearchResponse>, Status> {
        let result = async {
            let request = request.into_inner();
            let config = request.config.unwrap_or_default();
            let hits = hit_options(config.search.as_ref())?;
            let outcome = self
                .run(config.recognition, request.audio, Some(hits))
                .await?;
            Ok(Response::new(VoiceSearchResponse {
                result: Some(UtteranceResult {
                    is_final: true,
                    audio: Some(proto::AudioInfo::from(&outcome.audio)),
                    transcript: Some(proto::Transcript::from(outcome.transcript)),
                    hits: outcome.hits.into_iter().map(proto::Hit::from).collect(),
                }),
            }))
        }
        .await;
        counted(&self.monitor.metrics, "VoiceSearch", result)
    }

    async fn transcribe(
        &self,
        request: Request<TranscribeRequest>,
    ) -> Result<Response<TranscribeResponse>, Status> {
        let result = async {
            let request = request.into_inner();
            let outcome = self.run(request.config, request.audio, None).await?;
            Ok(Response::new(TranscribeResponse {
                audio: Some(proto::AudioInfo::from(&outcome.audio)),
                transcript: Some(proto::Transcript::from(outcome.transcript)),
            }))
        }
        .await;
        counted(&self.monitor.metrics, "Transcribe", result)
    }
}
