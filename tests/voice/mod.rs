//! The voice front door with the real model and a real index: the unary RPCs with a
//! precise status for every bad input (`unary`); the library's stream driven by plain
//! events (`session`), the streaming client with every file format (`client`), and
//! StreamingVoiceSearch on a real server: several utterances per stream, interim results,
//! chunking invariance (`results`), every bad input with the server answering afterwards,
//! the full queue, the stream limit and cancellation (`limits`), clients that stop
//! reading (`slow_clients`); random event sequences (`fuzz`); streams and searches
//! together for a bounded while (`soak`).

mod client;
mod fuzz;
mod limits;
mod results;
mod session;
mod slow_clients;
mod soak;
mod unary;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use voice_search::config::ServeConfig;
use voice_search::proto::streaming_voice_search_request::Request;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    self, AudioEncoding, EndOfUtterance, RecognitionConfig, SearchOptions,
    StreamingVoiceSearchConfig, StreamingVoiceSearchRequest, StreamingVoiceSearchResponse,
    VoiceSearchRequest,
};

use crate::common::fixture_bytes;
use crate::common::server::{test_config, TestServer};

pub(crate) type Client = VoiceSearchClient<Channel>;

pub(crate) fn config(encoding: AudioEncoding, rate: u32) -> StreamingVoiceSearchConfig {
    StreamingVoiceSearchConfig {
        recognition: Some(RecognitionConfig {
            encoding: encoding as i32,
            sample_rate_hz: rate,
            ..Default::default()
        }),
        search: None,
    }
}

pub(crate) fn configure(config: StreamingVoiceSearchConfig) -> StreamingVoiceSearchRequest {
    StreamingVoiceSearchRequest {
        request: Some(Request::Config(config)),
    }
}

pub(crate) fn audio(bytes: &[u8]) -> StreamingVoiceSearchRequest {
    StreamingVoiceSearchRequest {
        request: Some(Request::Audio(bytes.to_vec())),
    }
}

pub(crate) fn end() -> StreamingVoiceSearchRequest {
    StreamingVoiceSearchRequest {
        request: Some(Request::EndOfUtterance(EndOfUtterance {})),
    }
}

/// A fixture's samples as raw LINEAR16 bytes, with its sample rate.
pub(crate) fn linear16(name: &str) -> (Vec<u8>, u32) {
    let reader = hound::WavReader::new(std::io::Cursor::new(fixture_bytes(name))).unwrap();
    let rate = reader.spec().sample_rate;
    let bytes = reader
        .into_samples::<i16>()
        .flat_map(|s| s.unwrap().to_le_bytes())
        .collect();
    (bytes, rate)
}

/// `bytes` as audio messages of at most `size` bytes each.
fn pieces(bytes: &[u8], size: usize) -> Vec<StreamingVoiceSearchRequest> {
    bytes.chunks(size).map(audio).collect()
}

/// Sends `messages`, half-closes, and gathers every response and how the stream ended.
async fn exchange(
    client: &mut Client,
    messages: Vec<StreamingVoiceSearchRequest>,
) -> (Vec<StreamingVoiceSearchResponse>, Result<(), Status>) {
    let mut responses = Vec::new();
    let mut stream = match client
        .streaming_voice_search(tokio_stream::iter(messages))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return (responses, Err(status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(response)) => responses.push(response),
            Ok(None) => return (responses, Ok(())),
            Err(status) => return (responses, Err(status)),
        }
    }
}

pub(crate) fn finals(responses: &[StreamingVoiceSearchResponse]) -> Vec<&proto::UtteranceResult> {
    responses
        .iter()
        .filter_map(|r| r.result.as_ref())
        .filter(|r| r.is_final)
        .collect()
}

fn text(result: &proto::UtteranceResult) -> &str {
    &result.transcript.as_ref().unwrap().text
}

const CONFERENCE: &str = "You will now be placed into the conference.";

/// One good utterance: the server must still answer correctly.
async fn assert_still_answers(client: &mut Client) {
    let (responses, ended) = exchange(
        client,
        vec![
            configure(config(AudioEncoding::Wav, 0)),
            audio(&fixture_bytes("q0004.wav")),
        ],
    )
    .await;
    ended.unwrap();
    assert_eq!(text(finals(&responses)[0]), CONFERENCE);
}
