//! A StreamingVoiceSearch client that sends a recording as a phone does: one utterance
//! after another (cut where the speaker paused), each in small chunks, optionally at the
//! pace of real time. The `client` command and `eval --server` both use it, so what the
//! eval measures is the real gRPC path. [`connect`] reaches a server as an operator
//! configured it: plaintext or TLS (with a client certificate for mutual TLS), with or
//! without an API key.
//!
//! Calls are retried as gRPC's own retry policy would ([`RetryPolicy`]): UNAVAILABLE and
//! RESOURCE_EXHAUSTED, after a jittered exponential backoff; a stream that fails before
//! an utterance's final result is opened again and the utterances still owed are sent
//! again (the client holds their audio).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Status;

use crate::audio::{self, normalize, vad, AudioError, AudioFormat, Encoding};
use crate::proto::streaming_voice_search_request::Request;
use crate::proto::voice_search_client::VoiceSearchClient;
use crate::proto::{
    AudioEncoding, EndOfUtterance, RecognitionConfig, SearchOptions, StreamingVoiceSearchConfig,
    StreamingVoiceSearchRequest, UtteranceResult,
};

/// Why a recording could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Audio { path: String, source: AudioError },
    #[error("{0} is not a WAV, FLAC, Ogg Opus or WebM Opus file")]
    Format(String),
    #[error(transparent)]
    Status(#[from] Status),
    #[error("{address} is not a server address: {reason}")]
    Address { address: String, reason: String },
    #[error(
        "the API key cannot be sent in a header: it holds characters other than visible ASCII"
    )]
    Key,
    #[error("TLS settings for {address}: {source}")]
    Tls {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the server at {address}: {source} (is `voice-search serve` running there, and does it speak {scheme}?)")]
    Connect {
        address: String,
        scheme: &'static str,
        source: tonic::transport::Error,
    },
}

/// Where a server is and how to prove who we are to it.
#[derive(Debug, Clone, Default)]
pub struct ServerTarget {
    /// "host:port" or a URL; "https://" asks for TLS even without `ca_cert`.
    pub address: String,
    /// PEM authority that signed the server's certificate; turns TLS on. Without it, an
    /// https address trusts the system's authorities.
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate and key shown to a server that asks for one (mutual TLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Sent as `authorization: Bearer KEY` on every call.
    pub api_key: Option<String>,
}

/// Puts the API key, when there is one, on every call.
#[derive(Clone, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Result<Self, ClientError> {
        key.map(|key| {
            format!("Bearer {key}")
                .parse()
                .map_err(|_| ClientError::Key)
        })
        .transpose()
        .map(Self)
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A connection to a server whose calls carry the API key.
pub type ServerChannel = InterceptedService<Channel, ApiKey>;

/// Opens a connection to `target`.
pub async fn connect(target: &ServerTarget) -> Result<ServerChannel, ClientError> {
    let address = &target.address;
    crate::tls::use_ring_for_tls();
    let tls = target.ca_cert.is_some()
        || target.client_identity.is_some()
        || address.starts_with("https://");
    let uri = match address.split_once("://") {
        Some(_) => address.clone(),
        None if tls => format!("https://{address}"),
        None => format!("http://{address}"),
    };
    let mut endpoint = Channel::from_shared(uri.clone()).map_err(|error| ClientError::Address {
        address: address.clone(),
        reason: error.to_string(),
    })?;
    if tls {
        let config = tls_config(target)?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|source| ClientError::Tls {
                address: address.clone(),
                source,
            })?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            address: uri,
            scheme: if tls { "TLS" } else { "plaintext" },
            source,
        })?;
    Ok(InterceptedService::new(
        channel,
        ApiKey::new(target.api_key.as_deref())?,
    ))
}

fn tls_config(target: &ServerTarget) -> Result<ClientTlsConfig, ClientError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ClientError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new();
    config = match &target.ca_cert {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &target.client_identity {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// A recording ready to send: each utterance's bytes in the encoding the server is told.
#[derive(Debug, Clone)]
pub struct Recording {
    /// FLOAT32 for a WAV file (decoded here), else the file's own codec, sent as it is.
    encoding: AudioEncoding,
    /// Of the audio as decoded (for FLOAT32, as sent).
    pub sample_rate: u32,
    pub channels: u16,
    /// Each utterance's bytes and its length in seconds.
    utterances: Vec<(Vec<u8>, f64)>,
}

/// The encoding a file's first bytes announce: WAV, FLAC, Ogg (Opus) or WebM.
pub fn file_encoding(bytes: &[u8]) -> Option<AudioEncoding> {
    const WEBM: &[u8] = &[0x1a, 0x45, 0xdf, 0xa3];
    [
        (&b"RIFF"[..], AudioEncoding::Wav),
        (b"fLaC", AudioEncoding::Flac),
        (b"OggS", AudioEncoding::OggOpus),
        (WEBM, AudioEncoding::WebmOpus),
    ]
    .into_iter()
    .find(|(magic, _)| bytes.starts_with(magic))
    .map(|(_, encoding)| encoding)
}

impl Recording {
    /// Reads an audio file. A WAV file is decoded and sent as FLOAT32, which carries
    /// every WAV sample format unchanged; with `split` it is cut where the speaker paused.
    /// FLAC, Ogg Opus and WebM Opus files are sent as they are, one utterance each, as a
    /// phone's recorder sends them (decoded here only to check them and time them).
    pub fn from_file(path: &Path, split: bool) -> Result<Self, ClientError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ClientError::Read {
            path: name.clone(),
            source,
        })?;
        let encoding = file_encoding(&bytes).ok_or_else(|| ClientError::Format(name.clone()))?;
        let decode = |encoding| {
            let format = AudioFormat {
                encoding,
                sample_rate: None,
                channels: None,
            };
            audio::decode(&bytes, &format).map_err(|source| ClientError::Audio {
                path: name.clone(),
                source,
            })
        };
        let compressed = match encoding {
            AudioEncoding::Flac => Some(Encoding::Flac),
            AudioEncoding::OggOpus => Some(Encoding::OggOpus),
            AudioEncoding::WebmOpus => Some(Encoding::WebmOpus),
            _ => None,
        };
        if let Some(codec) = compressed {
            let decoded = decode(codec)?;
            return Ok(Self {
                encoding,
                sample_rate: decoded.sample_rate,
                channels: decoded.channels,
                utterances: vec![(bytes, decoded.duration_seconds())],
            });
        }
        let decoded = decode(Encoding::Wav)?;
        let frames = decoded.frames();
        let spans = if split {
            let mono = normalize::downmix(&decoded.samples, decoded.channels);
            let rate = decoded.sample_rate as f64;
            vad::split_utterances(&mono, decoded.sample_rate)
                .into_iter()
                .map(|(start, end)| {
                    (
                        ((start * rate) as usize).min(frames),
                        ((end * rate) as usize).min(frames),
                    )
                })
                .filter(|(start, end)| end > start)
                .collect()
        } else {
            vec![(0, frames)]
        };
        let channels = decoded.channels as usize;
        let utterances = spans
            .into_iter()
            .map(|(start, end)| {
                let samples = &decoded.samples[start * channels..end * channels];
                let bytes = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
                (bytes, (end - start) as f64 / decoded.sample_rate as f64)
            })
            .collect();
        Ok(Self {
            encoding: AudioEncoding::Float32,
            sample_rate: decoded.sample_rate,
            channels: decoded.channels,
            utterances,
        })
    }

    pub fn utterance_count(&self) -> usize {
        self.utterances.len()
    }

    pub fn utterance_seconds(&self, index: usize) -> f64 {
        self.utterances[index].1
    }

    /// The length of the whole recording.
    pub fn seconds(&self) -> f64 {
        self.utterances.iter().map(|(_, seconds)| seconds).sum()
    }

    /// The config the recording is sent with: a compressed file's own headers say its
    /// rate and channels.
    fn recognition(&self, interim: bool) -> RecognitionConfig {
        let pcm = self.encoding == AudioEncoding::Float32;
        RecognitionConfig {
            encoding: self.encoding as i32,
            sample_rate_hz: if pcm { self.sample_rate } else { 0 },
            channels: if pcm { self.channels as u32 } else { 0 },
            interim_results: interim,
            ..Default::default()
        }
    }

    /// One utterance in chunks of about `chunk_ms` of audio each (compressed bytes are
    /// cut evenly, wherever that falls; FLOAT32 on whole frames).
    fn chunks(&self, index: usize, chunk_ms: u32) -> Vec<Vec<u8>> {
        let (bytes, seconds) = &self.utterances[index];
        let share = (chunk_ms as f64 / 1000.0 / seconds.max(1e-3)).min(1.0);
        let mut size = ((bytes.len() as f64 * share).ceil() as usize).max(1);
        if self.encoding == AudioEncoding::Float32 {
            let frame = 4 * self.channels as usize;
            size = size.div_ceil(frame) * frame;
        }
        bytes.chunks(size).map(<[u8]>::to_vec).collect()
    }
}

/// How to send a recording.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Audio per message, in milliseconds.
    pub chunk_ms: u32,
    /// Wait between chunks as long as they last, as a live microphone would.
    pub realtime: bool,
    /// Ask for interim results.
    pub interim: bool,
    pub search: SearchOptions,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            chunk_ms: 100,
            realtime: false,
            interim: false,
            search: SearchOptions::default(),
        }
    }
}

/// One result as it arrives.
#[derive(Debug, Clone)]
pub struct Received {
    pub utterance_index: u32,
    pub result: UtteranceResult,
    /// For a final result: time from the utterance's last audio being sent to this result.
    pub latency: Option<Duration>,
}

/// When and how often a failed call is tried again: the retry policy of gRPC's service
/// config (maxAttempts, initialBackoff, maxBackoff, backoffMultiplier, and the codes).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Whether a failure may succeed when tried again: the server, or a replica behind
    /// the balancer, was unreachable, draining or full; or the connection broke under
    /// the call. A balancer resets a stream whose replica dies after answering began
    /// (HTTP/2 RST_STREAM, which gRPC reads as INTERNAL); tonic then makes the status
    /// from the transport's error, where a status the server sent has no source.
    pub fn retries(error: &ClientError) -> bool {
        let ClientError::Status(status) = error else {
            return false;
        };
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::ResourceExhausted
        ) || std::error::Error::source(status).is_some()
    }

    /// The pause before try `attempt` (2, 3, ...): a uniformly random share of the
    /// exponential backoff, so that clients failed together do not return together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(2).min(30) as i32;
        let ceiling = self
            .initial_backoff
            .mul_f64(self.multiplier.powi(exponent))
            .min(self.max_backoff);
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("the system's random source");
        ceiling.mul_f64(f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX))
    }

    /// After failed try `attempt` (1, 2, ...): false when `error` is final or the tries
    /// are spent; otherwise waits the backoff and says to try again.
    pub async fn wait_to_retry(&self, attempt: u32, error: &ClientError) -> bool {
        if !Self::retries(error) || attempt >= self.max_attempts {
            return false;
        }
        let pause = self.backoff(attempt + 1);
        tracing::info!(%error, attempt = attempt + 1, ?pause, "retrying");
        tokio::time::sleep(pause).await;
        true
    }

    /// Runs `call` until it succeeds, fails for good, or runs out of tries.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(error) if self.wait_to_retry(attempt, &error).await => attempt += 1,
                other => return other,
            }
        }
    }
}

/// Streams `recording` over StreamingVoiceSearch, calling `on_result` for every result as
/// it arrives; returns the final results in utterance order. A stream that fails with a
/// retryable status is opened again (within the default [`RetryPolicy`]) for the
/// utterances whose final result had not come.
pub async fn stream_recording(
    client: &mut VoiceSearchClient<ServerChannel>,
    recording: &Recording,
    options: &SendOptions,
    mut on_result: impl FnMut(&Received),
) -> Result<Vec<Received>, ClientError> {
    let policy = RetryPolicy::default();
    let mut finals: Vec<Received> = Vec::new();
    let mut attempt = 1;
    loop {
        let from = finals.len();
        let sent = stream_utterances(
            client,
            recording,
            from,
            options,
            &mut on_result,
            &mut finals,
        );
        match sent.await {
            // Only the utterances still owed a final are sent again.
            Err(error) if policy.wait_to_retry(attempt, &error).await => attempt += 1,
            other => return other.map(|()| finals),
        }
    }
}

/// One StreamingVoiceSearch call for the utterances of `recording` from `from` on; their
/// results keep the recording's utterance numbers. Finals are pushed onto `finals` as
/// they come, so that a failed call leaves what it received.
async fn stream_utterances(
    client: &mut VoiceSearchClient<ServerChannel>,
    recording: &Recording,
    from: usize,
    options: &SendOptions,
    on_result: &mut impl FnMut(&Received),
    finals: &mut Vec<Received>,
) -> Result<(), ClientError> {
    let config = StreamingVoiceSearchConfig {
        recognition: Some(recording.recognition(options.interim)),
        search: Some(options.search.clone()),
    };
    let utterances: Vec<Vec<Vec<u8>>> = (from..recording.utterance_count())
        .map(|i| recording.chunks(i, options.chunk_ms))
        .collect();
    if utterances.is_empty() {
        return Ok(());
    }
    let ended_at = Arc::new(Mutex::new(vec![None; utterances.len()]));
    let (sender, receiver) = mpsc::channel(8);
    let feeder = {
        let ended_at = ended_at.clone();
        let pace = options
            .realtime
            .then(|| Duration::from_millis(options.chunk_ms as u64));
        tokio::spawn(async move {
            let message = |request| StreamingVoiceSearchRequest {
                request: Some(request),
            };
            if sender.send(message(Request::Config(config))).await.is_err() {
                return;
            }
            for (index, chunks) in utterances.into_iter().enumerate() {
                for chunk in chunks {
                    if sender.send(message(Request::Audio(chunk))).await.is_err() {
                        return;
                    }
                    if let Some(pace) = pace {
                        tokio::time::sleep(pace).await;
                    }
                }
                let end = message(Request::EndOfUtterance(EndOfUtterance {}));
                if sender.send(end).await.is_err() {
                    return;
                }
                ended_at.lock().expect("not poisoned")[index] = Some(Instant::now());
            }
        })
    };
    let mut responses = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let outcome = async {
        while let Some(response) = responses.message().await? {
            let Some(result) = response.result else {
                continue;
            };
            let index = response.utterance_index;
            let latency = result.is_final.then(|| {
                ended_at
                    .lock()
                    .expect("not poisoned")
                    .get(index as usize)
                    .copied()
                    .flatten()
                    .map_or(Duration::ZERO, |at| at.elapsed())
            });
            let received = Received {
                utterance_index: index + from as u32,
                result,
                latency,
            };
            on_result(&received);
            if received.result.is_final {
                finals.push(received);
            }
        }
        Ok(())
    }
    .await;
    feeder.abort();
    outcome
}
