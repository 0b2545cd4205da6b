//! A StreamingVoiceSearch client that sends a recording as a phone does: one utterance
//! after another (cut where the speaker paused), each in small chunks, optionally at the
//! pace of real time. The `client` command and `eval --server` both use it, so what the
//! eval measures is the real gRPC path. [`connect`] reaches a server as an operator
//! configured it: plaintext or TLS (with a client certificate for mutual TLS), with or
//! without an API key.

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

/// A recording decoded and cut into utterances.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Interleaved samples at full scale 1.0, as the file holds them.
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
    /// Utterances as `(first frame, end frame)`, covering the whole recording.
    pub utterances: Vec<(usize, usize)>,
}

impl Recording {
    /// Reads a WAV file; `split` cuts it where the speaker paused, otherwise it is one
    /// utterance.
    pub fn from_wav(path: &Path, split: bool) -> Result<Self, ClientError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ClientError::Read {
            path: name.clone(),
            source,
        })?;
        let decoded = audio::decode(
            &bytes,
            &AudioFormat {
                encoding: Encoding::Wav,
                sample_rate: None,
                channels: None,
            },
        )
        .map_err(|source| ClientError::Audio { path: name, source })?;
        let frames = decoded.frames();
        let utterances = if split {
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
        Ok(Self {
            samples: decoded.samples,
            sample_rate: decoded.sample_rate,
            channels: decoded.channels,
            utterances,
        })
    }

    pub fn utterance_seconds(&self, index: usize) -> f64 {
        let (start, end) = self.utterances[index];
        (end - start) as f64 / self.sample_rate as f64
    }

    /// The config the recording is sent with: FLOAT32 carries every WAV sample format
    /// unchanged, so the server hears exactly what the file holds.
    fn recognition(&self, interim: bool) -> RecognitionConfig {
        RecognitionConfig {
            encoding: AudioEncoding::Float32 as i32,
            sample_rate_hz: self.sample_rate,
            channels: self.channels as u32,
            interim_results: interim,
            ..Default::default()
        }
    }

    /// One utterance as FLOAT32 chunks of `chunk_frames` frames.
    fn chunks(&self, index: usize, chunk_frames: usize) -> Vec<Vec<u8>> {
        let (start, end) = self.utterances[index];
        let channels = self.channels as usize;
        self.samples[start * channels..end * channels]
            .chunks(chunk_frames.max(1) * channels)
            .map(|chunk| chunk.iter().flat_map(|s| s.to_le_bytes()).collect())
            .collect()
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

/// Streams `recording` over one StreamingVoiceSearch call, calling `on_result` for every
/// result as it arrives; returns the final results in utterance order.
pub async fn stream_recording(
    client: &mut VoiceSearchClient<ServerChannel>,
    recording: &Recording,
    options: &SendOptions,
    mut on_result: impl FnMut(&Received),
) -> Result<Vec<Received>, ClientError> {
    let chunk_frames = (recording.sample_rate as u64 * options.chunk_ms as u64 / 1000) as usize;
    let config = StreamingVoiceSearchConfig {
        recognition: Some(recording.recognition(options.interim)),
        search: Some(options.search.clone()),
    };
    let utterances: Vec<Vec<Vec<u8>>> = (0..recording.utterances.len())
        .map(|i| recording.chunks(i, chunk_frames))
        .collect();
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
    let mut finals = Vec::new();
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
            utterance_index: index,
            result,
            latency,
        };
        on_result(&received);
        if received.result.is_final {
            finals.push(received);
        }
    }
    feeder.abort();
    Ok(finals)
}
