//! Spoken queries as a front door receives them: whole utterances, and streams of
//! utterances. A stream is driven by plain events ([`Inbound`]) and answers with plain
//! results ([`StreamResult`]); its rules live here: the config comes first, utterances are
//! answered in order and transcribed one at a time, interim results come only when a
//! worker is free, the first error ends the stream only after the finals already owed,
//! the length, idle and open-time limits hold whether or not the client reads, and a
//! client that leaves results unread is handed to the transport to drop. A transport (the
//! gRPC service today) only converts its messages to these events and the results back;
//! nothing here knows gRPC.

mod session;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};

pub use session::{Session, SessionError, SessionLimits, Utterance, INTERIM_EVERY_SECONDS};

use crate::asr::TranscribeOptions;
use crate::audio::{self, AudioError, AudioFormat, UtteranceBuffer};
use crate::monitor::{DriftMonitor, Monitor};
use crate::pipeline::{DecodedAudio, HitOptions, Pipeline, PipelineError, UtteranceOutcome};
use crate::workers::{JobFailed, JobHandle, PoolFull, PoolSize, WorkerPool};

/// Limits of the voice front door.
#[derive(Debug, Clone, Copy)]
pub struct VoiceLimits {
    pub session: SessionLimits,
    /// A stream owed nothing that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Streams open at once.
    pub max_streams: usize,
}

/// What a stream's config says.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub format: AudioFormat,
    pub options: TranscribeOptions,
    pub hits: HitOptions,
    /// Interim results while an utterance is spoken.
    pub interim_results: bool,
    /// Interim results carry hits too.
    pub search_interim: bool,
}

/// What a client sends on a stream. The stream's end (the client half-closed) ends the
/// utterance being received.
#[derive(Debug)]
pub enum Inbound {
    Config(StreamConfig),
    Audio(Vec<u8>),
    EndOfUtterance,
}

/// One result of a stream: interim ones while an utterance is spoken, then its final one.
#[derive(Debug)]
pub struct StreamResult {
    pub index: u32,
    pub is_final: bool,
    pub outcome: UtteranceOutcome,
}

/// Why one utterance has no result.
#[derive(Debug, thiserror::Error)]
pub enum UtteranceError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    PoolFull(#[from] PoolFull),
    #[error(transparent)]
    Failed(#[from] JobFailed),
}

/// Why a stream ended early. `E` is the transport's own reason (a message it could not
/// read or convert), passed back as it came.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E> {
    #[error("{0}")]
    Transport(E),
    #[error("no config within {seconds:.0} s of opening the stream")]
    NoConfig { seconds: f64 },
    #[error("{what} before the config: the first message of a stream must be the config")]
    BeforeConfig { what: &'static str },
    #[error(
        "a second config: the config comes once, as the first message; open a new stream \
         for other settings"
    )]
    SecondConfig,
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no message for {seconds:.0} s: send audio, end_of_utterance or close the stream")]
    Idle { seconds: f64 },
    #[error("the stream has been open for {seconds:.0} s, the limit: open a new stream")]
    OpenTooLong { seconds: f64 },
    #[error("utterance {index}: {source}")]
    Utterance { index: u32, source: UtteranceError },
}

/// As many streams are open as the server allows.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server has as many streams open as it allows; retry with backoff")]
pub struct StreamsFull;

/// What a stream answers, in order; an error is the last item. The stream holds its place
/// among the open ones until its last item is taken (or it is dropped), so that results
/// left unread count against the limit; the place is free before the end is seen, so a
/// client that saw it may open the next stream at once.
pub struct StreamResults<E> {
    results: mpsc::Receiver<StreamResult>,
    /// The error the driver ended with; closed without a value when it ended well.
    ended: Option<oneshot::Receiver<StreamError<E>>>,
    /// Told when the last item has been taken.
    taken: Option<oneshot::Sender<()>>,
    place: Option<OwnedSemaphorePermit>,
}

impl<E> Stream for StreamResults<E> {
    type Item = Result<StreamResult, StreamError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(result) = ready!(self.results.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(result)));
        }
        let error = match self.ended.as_mut() {
            Some(ended) => ready!(Pin::new(ended).poll(cx)).ok(),
            None => None,
        };
        self.ended = None;
        self.place = None;
        if let Some(taken) = self.taken.take() {
            taken.send(()).ok();
        }
        Poll::Ready(error.map(Err))
    }
}

/// Utterances of one stream received in full and waiting for the one in flight.
const MAX_WAITING_UTTERANCES: usize = 2;

/// How long a stream's last results wait for a client that is not reading before the
/// transport is asked to drop that client.
const UNREAD_GRACE: Duration = Duration::from_secs(5);

/// Results a stream may have ready before the client reads them.
const RESULTS_BUFFERED: usize = 8;

/// The voice front door: whole utterances and streams, run on the worker pool and
/// recorded by the monitor.
#[derive(Clone)]
pub struct Voice {
    pipeline: Pipeline,
    pool: WorkerPool,
    monitor: Arc<Monitor>,
    limits: VoiceLimits,
    streams: Arc<Semaphore>,
}

impl Voice {
    pub fn new(
        pipeline: Pipeline,
        pool: WorkerPool,
        monitor: Arc<Monitor>,
        limits: VoiceLimits,
    ) -> Self {
        Self {
            pipeline,
            pool,
            monitor,
            limits,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
        }
    }

    /// A front door with no model or index and one worker: every utterance fails with
    /// `NoModel`, which is enough to exercise the stream's rules (the unit tests, the
    /// integration tests and the fuzz targets build theirs here).
    pub fn without_model(limits: VoiceLimits) -> Self {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 4,
        });
        let monitor = Monitor::new(DriftMonitor::new(None, 10), None, None);
        Self::new(Pipeline::default(), pool, Arc::new(monitor), limits)
    }

    /// Runs one whole utterance (hits when `hits` says which).
    pub async fn utterance(
        &self,
        format: AudioFormat,
        options: TranscribeOptions,
        hits: Option<HitOptions>,
        bytes: Vec<u8>,
    ) -> Result<UtteranceOutcome, UtteranceError> {
        let started = Instant::now();
        let bytes =
            UtteranceBuffer::whole(format, self.limits.session.max_utterance_seconds, bytes)?
                .take();
        let outcome = self.submit(bytes, format, options, hits)?.await??;
        self.monitor.metrics.utterance(&outcome, started.elapsed());
        Ok(outcome)
    }

    /// Opens a stream fed by `inbound`; its results come back in order. Ends when the
    /// client has half-closed and every final is sent, at the first error (after the
    /// finals owed), or when the results are dropped (the client has gone, and the work
    /// in flight is cancelled). A client that leaves results unread is held to the
    /// stream's time limit all the same; if they are still unread [`UNREAD_GRACE`] after
    /// the stream ended, `drop_client` is called, for the transport to disconnect it.
    pub fn stream<E: std::fmt::Display + Send + 'static>(
        &self,
        inbound: impl Stream<Item = Result<Inbound, E>> + Send + 'static,
        drop_client: impl FnOnce() + Send + 'static,
    ) -> Result<StreamResults<E>, StreamsFull> {
        let place = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| StreamsFull)?;
        let (out, results) = mpsc::channel(RESULTS_BUFFERED);
        let (end, ended) = oneshot::channel();
        let (taken, all_taken) = oneshot::channel();
        let voice = self.clone();
        tokio::spawn(async move {
            voice.run_stream(Box::pin(inbound), out, end).await;
            if tokio::time::timeout(UNREAD_GRACE, all_taken).await.is_err() {
                tracing::info!(
                    grace = ?UNREAD_GRACE,
                    "a client left a stream's results unread after it ended"
                );
                drop_client();
            }
        });
        Ok(StreamResults {
            results,
            ended: Some(ended),
            taken: Some(taken),
            place: Some(place),
        })
    }

    async fn run_stream<E: std::fmt::Display>(
        self,
        inbound: Events<E>,
        out: mpsc::Sender<StreamResult>,
        end: oneshot::Sender<StreamError<E>>,
    ) {
        let metrics = &self.monitor.metrics;
        metrics.active_streams.inc();
        let ended = StreamDriver {
            voice: &self,
            out: &out,
        }
        .drive(inbound)
        .await;
        metrics.active_streams.dec();
        if let Err(error) = ended {
            tracing::info!(%error, "stream ended with an error");
            // Delivered after the results queued before it, needing no room among them.
            end.send(error).ok();
        }
    }

    /// Queues a whole utterance on the pool: its one decode (the last check of its
    /// length), the pipeline run, then the monitor's record of it (drift window,
    /// capture). Unary calls and stream finals both come here.
    fn submit(
        &self,
        bytes: Vec<u8>,
        format: AudioFormat,
        options: TranscribeOptions,
        hits: Option<HitOptions>,
    ) -> Result<PendingOutcome, PoolFull> {
        let (pipeline, monitor) = (self.pipeline.clone(), self.monitor.clone());
        let max_seconds = self.limits.session.max_utterance_seconds;
        self.pool.submit(move |cancelled| {
            let options = options.cancelled_by(cancelled);
            let audio = DecodedAudio::timed(|| audio::decode_within(&bytes, &format, max_seconds))?;
            drop(bytes);
            let outcome = pipeline.run(&audio, &options, hits.as_ref())?;
            monitor.observe(&outcome, &format, &audio.decoded);
            Ok(outcome)
        })
    }
}

/// What one utterance's pipeline run gives, awaited on the worker pool.
type PendingOutcome = JobHandle<Result<UtteranceOutcome, PipelineError>>;

/// A transcription in flight for a stream.
struct InFlight {
    index: u32,
    is_final: bool,
    /// A final's length as counted against the stream's limit so far.
    counted_seconds: f64,
    /// When the utterance ended (final results), for the end-to-end latency.
    ended: Instant,
    outcome: PendingOutcome,
}

/// One stream's run: reads its events, feeds its session, and sends each utterance's
/// results in order. Utterances of one stream are transcribed one at a time.
struct StreamDriver<'a> {
    voice: &'a Voice,
    out: &'a mpsc::Sender<StreamResult>,
}

/// Where a stream's events come from.
type Events<E> = std::pin::Pin<Box<dyn Stream<Item = Result<Inbound, E>> + Send>>;

impl StreamDriver<'_> {
    /// Returns when the stream is done or the client has gone; an error is what the
    /// stream ends with.
    async fn drive<E>(&self, mut inbound: Events<E>) -> Result<(), StreamError<E>> {
        let opened = Instant::now();
        let limits = self.voice.limits;
        let Some(config) = first_config(&mut inbound, limits.idle_timeout).await? else {
            return Ok(());
        };
        let mut session = Session::new(config.format, limits.session, config.interim_results);
        let mut in_flight: Option<InFlight> = None;
        let mut waiting: VecDeque<(Utterance, Instant)> = VecDeque::new();
        let mut client_open = true;
        // The first error ends the stream, but only after the results of every utterance
        // already received in full, so that nothing the client sent is lost.
        let mut failure: Option<StreamError<E>> = None;
        let mut last_activity = Instant::now();
        let closes_at = opened + Duration::from_secs_f64(limits.session.max_stream_seconds);
        loop {
            if in_flight.is_none() {
                if let Some((utterance, ended)) = waiting.pop_front() {
                    match self.start_final(utterance, ended, &config) {
                        Ok(job) => in_flight = Some(job),
                        Err(error) => {
                            failure.get_or_insert(error);
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
                () = self.out.closed() => return Ok(()),
                result = async { (&mut in_flight.as_mut().expect("guarded").outcome).await },
                    if in_flight.is_some() =>
                {
                    let done = in_flight.take().expect("guarded");
                    last_activity = Instant::now();
                    if let (true, Ok(Ok(outcome))) = (done.is_final, &result) {
                        session.settle(done.counted_seconds, outcome.audio.duration_seconds);
                    }
                    match self.result(&done, result) {
                        // A client that stops reading holds the stream only until its
                        // time is up, never past it.
                        Ok(Some(result)) => match tokio::time::timeout_at(
                            closes_at.into(),
                            self.out.send(result),
                        )
                        .await
                        {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(_)) => return Ok(()),
                            Err(_) => {
                                return Err(StreamError::OpenTooLong {
                                    seconds: limits.session.max_stream_seconds,
                                })
                            }
                        },
                        Ok(None) => Ok(()),
                        Err(error) => Err(error),
                    }
                }
                // Utterances waiting for their turn hold memory: past a few, the client
                // waits (HTTP/2 flow control pushes back) instead of the server buffering.
                event = inbound.next(), if client_open && waiting.len() < MAX_WAITING_UTTERANCES => {
                    last_activity = Instant::now();
                    self.receive(event, &mut session, &mut waiting, &mut in_flight, &config)
                        .map(|open| client_open = open)
                }
                () = tokio::time::sleep_until((last_activity + limits.idle_timeout).into()), if idle => {
                    Err(StreamError::Idle { seconds: limits.idle_timeout.as_secs_f64() })
                }
                () = tokio::time::sleep_until(closes_at.into()), if failure.is_none() => {
                    Err(StreamError::OpenTooLong { seconds: limits.session.max_stream_seconds })
                }
            };
            if let Err(error) = event {
                failure.get_or_insert(error);
                client_open = false;
                in_flight.take_if(|job| !job.is_final);
            }
        }
    }

    /// Takes one inbound event; returns whether the client may send more.
    fn receive<E>(
        &self,
        event: Option<Result<Inbound, E>>,
        session: &mut Session,
        waiting: &mut VecDeque<(Utterance, Instant)>,
        in_flight: &mut Option<InFlight>,
        config: &StreamConfig,
    ) -> Result<bool, StreamError<E>> {
        // A message the transport could not read, or the client reset the stream (then
        // nobody hears the error, which is harmless).
        let Some(event) = event.transpose().map_err(StreamError::Transport)? else {
            if session.has_audio() {
                waiting.push_back((session.finish_utterance()?, Instant::now()));
                in_flight.take_if(|job| !job.is_final);
            }
            return Ok(false);
        };
        match event {
            Inbound::Audio(chunk) => {
                session.push(&chunk)?;
                if in_flight.is_none() && waiting.is_empty() {
                    *in_flight = self.start_interim(session, config);
                }
            }
            Inbound::EndOfUtterance => {
                waiting.push_back((session.finish_utterance()?, Instant::now()));
                in_flight.take_if(|job| !job.is_final);
            }
            Inbound::Config(_) => return Err(StreamError::SecondConfig),
        }
        Ok(true)
    }

    fn start_final<E>(
        &self,
        utterance: Utterance,
        ended: Instant,
        config: &StreamConfig,
    ) -> Result<InFlight, StreamError<E>> {
        let outcome = self
            .voice
            .submit(
                utterance.bytes,
                config.format,
                config.options.clone(),
                Some(config.hits.clone()),
            )
            .map_err(|full| StreamError::Utterance {
                index: utterance.index,
                source: full.into(),
            })?;
        Ok(InFlight {
            index: utterance.index,
            is_final: true,
            counted_seconds: utterance.counted_seconds,
            ended,
            outcome,
        })
    }

    /// Starts an interim transcription when one is due and a worker is free with nothing
    /// waiting; a busy pool only skips it, so that interims never displace finals.
    fn start_interim(&self, session: &mut Session, config: &StreamConfig) -> Option<InFlight> {
        let (index, bytes) = session.interim_due()?;
        let pipeline = self.voice.pipeline.clone();
        let (format, options) = (config.format, config.options.clone());
        let hits = config.search_interim.then(|| config.hits.clone());
        let outcome = self
            .voice
            .pool
            .submit_spare(move |cancelled| {
                let options = options.cancelled_by(cancelled);
                let audio = DecodedAudio::timed(|| audio::decode_prefix(&bytes, &format))?;
                pipeline.run(&audio, &options, hits.as_ref())
            })
            .ok()?;
        Some(InFlight {
            index,
            is_final: false,
            counted_seconds: 0.0,
            ended: Instant::now(),
            outcome,
        })
    }

    /// The result of a finished job (an interim one has hits only when asked for them,
    /// see `start_interim`); a failed interim result is only skipped, a failed final one
    /// ends the stream.
    fn result<E>(
        &self,
        job: &InFlight,
        result: Result<Result<UtteranceOutcome, PipelineError>, JobFailed>,
    ) -> Result<Option<StreamResult>, StreamError<E>> {
        let failed = |source: UtteranceError| StreamError::Utterance {
            index: job.index,
            source,
        };
        let outcome = match (result, job.is_final) {
            (Ok(Ok(outcome)), _) => outcome,
            (Ok(Err(error)), true) => return Err(failed(error.into())),
            (Err(error), true) => return Err(failed(error.into())),
            (_, false) => return Ok(None),
        };
        if !job.is_final && outcome.transcript.text.is_empty() {
            return Ok(None);
        }
        if job.is_final {
            self.voice
                .monitor
                .metrics
                .utterance(&outcome, job.ended.elapsed());
        }
        Ok(Some(StreamResult {
            index: job.index,
            is_final: job.is_final,
            outcome,
        }))
    }
}

/// The config, or `None` when the client closed the stream without sending anything.
async fn first_config<E>(
    inbound: &mut Events<E>,
    timeout: Duration,
) -> Result<Option<StreamConfig>, StreamError<E>> {
    let event = tokio::time::timeout(timeout, inbound.next())
        .await
        .map_err(|_| StreamError::NoConfig {
            seconds: timeout.as_secs_f64(),
        })?;
    match event.transpose().map_err(StreamError::Transport)? {
        None => Ok(None),
        Some(Inbound::Config(config)) => Ok(Some(config)),
        Some(Inbound::Audio(_)) => Err(StreamError::BeforeConfig { what: "audio" }),
        Some(Inbound::EndOfUtterance) => Err(StreamError::BeforeConfig {
            what: "end_of_utterance",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Encoding;
    use tokio_stream::wrappers::ReceiverStream;

    fn voice(idle_timeout: Duration, max_streams: usize) -> Voice {
        Voice::without_model(VoiceLimits {
            session: SessionLimits {
                max_utterance_seconds: 2.0,
                max_stream_seconds: 60.0,
            },
            idle_timeout,
            max_streams,
        })
    }

    fn config() -> Inbound {
        Inbound::Config(StreamConfig {
            format: AudioFormat {
                encoding: Encoding::Linear16,
                sample_rate: Some(16_000),
                channels: Some(1),
            },
            options: TranscribeOptions::default(),
            hits: HitOptions::default(),
            interim_results: false,
            search_interim: false,
        })
    }

    /// Everything a stream fed `events` (then half-closed) answers.
    async fn answers(
        voice: &Voice,
        events: Vec<Result<Inbound, String>>,
    ) -> Vec<Result<StreamResult, StreamError<String>>> {
        let results = voice.stream(tokio_stream::iter(events), || {}).unwrap();
        results.collect().await
    }

    fn only_error(answers: Vec<Result<StreamResult, StreamError<String>>>) -> StreamError<String> {
        let [Err(error)] = <[_; 1]>::try_from(answers).expect("one answer") else {
            panic!("not an error");
        };
        error
    }

    #[tokio::test]
    async fn the_config_comes_first_and_once() {
        let voice = voice(Duration::from_secs(5), 4);
        let error = only_error(answers(&voice, vec![Ok(Inbound::Audio(vec![0; 32]))]).await);
        assert!(
            matches!(error, StreamError::BeforeConfig { what: "audio" }),
            "{error}"
        );
        let error = only_error(answers(&voice, vec![Ok(config()), Ok(config())]).await);
        assert!(matches!(error, StreamError::SecondConfig), "{error}");
        assert!(answers(&voice, Vec::new()).await.is_empty());
        assert!(answers(&voice, vec![Ok(config())]).await.is_empty());
    }

    #[tokio::test]
    async fn the_transport_reason_and_session_errors_end_the_stream() {
        let voice = voice(Duration::from_secs(5), 4);
        let error = only_error(answers(&voice, vec![Ok(config()), Err("unreadable".into())]).await);
        assert!(matches!(&error, StreamError::Transport(reason) if reason == "unreadable"));
        let error =
            only_error(answers(&voice, vec![Ok(config()), Ok(Inbound::EndOfUtterance)]).await);
        assert!(matches!(
            error,
            StreamError::Session(SessionError::EmptyUtterance { index: 0 })
        ));
        let too_long = Inbound::Audio(vec![0; 5 * 32_000]);
        let error = only_error(answers(&voice, vec![Ok(config()), Ok(too_long)]).await);
        assert!(matches!(
            error,
            StreamError::Session(SessionError::Audio {
                index: 0,
                source: AudioError::TooLong { .. }
            })
        ));
    }

    #[tokio::test]
    async fn a_failed_final_names_its_utterance() {
        let voice = voice(Duration::from_secs(5), 4);
        let events = vec![
            Ok(config()),
            Ok(Inbound::Audio(vec![0; 3_200])),
            Ok(Inbound::EndOfUtterance),
        ];
        let error = only_error(answers(&voice, events).await);
        assert!(
            matches!(
                error,
                StreamError::Utterance {
                    index: 0,
                    source: UtteranceError::Pipeline(PipelineError::NoModel)
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_silent_stream_is_closed_and_the_stream_count_is_bounded() {
        let voice = voice(Duration::from_millis(50), 1);
        let (events, inbound) = mpsc::channel::<Result<Inbound, String>>(4);
        events.send(Ok(config())).await.unwrap();
        let mut results = voice.stream(ReceiverStream::new(inbound), || {}).unwrap();
        assert!(matches!(
            voice.stream(tokio_stream::empty::<Result<Inbound, String>>(), || {}),
            Err(StreamsFull)
        ));
        let error = results.next().await.unwrap().unwrap_err();
        assert!(matches!(error, StreamError::Idle { .. }), "{error}");
        assert!(results.next().await.is_none());
        drop(events);
        // The first stream has ended, so its place is free again.
        assert!(voice
            .stream(tokio_stream::empty::<Result<Inbound, String>>(), || {})
            .is_ok());
    }
}
