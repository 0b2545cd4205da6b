//! Audio that lies: WAV headers declaring impossible rates (once a way past the length
//! limit), chunks before the data that a small chunk size once tripped over, and byte
//! counts no format excuses.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use voice_search::audio::{self, AudioError, AudioFormat, Encoding, UtteranceBuffer};
use voice_search::proto::streaming_voice_search_request::Request;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    AudioEncoding, RecognitionConfig, StreamingVoiceSearchConfig, StreamingVoiceSearchRequest,
};

use crate::common::server::{test_config, TestServer};
use crate::common::{fixture_bytes, wav_format};

/// `wav` with its sample rate field (and the byte rate after it) rewritten.
fn with_rate(wav: &[u8], rate: u32) -> Vec<u8> {
    let mut wav = wav.to_vec();
    wav[24..28].copy_from_slice(&rate.to_le_bytes());
    wav[28..32].copy_from_slice(&(rate.wrapping_mul(2)).to_le_bytes());
    wav
}

#[test]
fn a_lying_wav_header_is_refused_as_soon_as_it_arrives() {
    let wav = fixture_bytes("q0004.wav");
    for rate in [0, 100_000_000] {
        let lying = with_rate(&wav, rate);
        let mut buffer = UtteranceBuffer::new(wav_format(), 30.0);
        assert_eq!(
            buffer.push(&lying[..64]),
            Err(AudioError::SampleRateOutOfRange(rate)),
            "rate {rate}"
        );
    }
}

#[tokio::test]
async fn a_lying_wav_header_gets_invalid_argument_while_the_stream_is_open() {
    let server = TestServer::start(test_config()).await;
    let mut client = VoiceSearchClient::new(server.channel().await);
    let message = |request| StreamingVoiceSearchRequest {
        request: Some(request),
    };
    for rate in [0, 100_000_000] {
        let (sender, receiver) = mpsc::channel(4);
        sender
            .send(message(Request::Config(StreamingVoiceSearchConfig {
                recognition: Some(RecognitionConfig {
                    encoding: AudioEncoding::Wav as i32,
                    ..Default::default()
                }),
                search: None,
            })))
            .await
            .unwrap();
        let header = with_rate(&fixture_bytes("q0004.wav"), rate)[..4096].to_vec();
        sender.send(message(Request::Audio(header))).await.unwrap();
        // The client goes on holding the stream: the refusal must not wait for its end.
        let mut responses = client
            .streaming_voice_search(ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        let status = responses.message().await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        drop(sender);
    }
    server.shutdown().await.unwrap();
}

/// `wav` with a LIST chunk of `bytes` inserted before its data chunk.
fn with_list_chunk(wav: &[u8], bytes: usize) -> Vec<u8> {
    let data = wav.windows(4).position(|w| w == b"data").unwrap();
    let mut out = wav[..data].to_vec();
    out.extend_from_slice(b"LIST");
    out.extend_from_slice(&(bytes as u32).to_le_bytes());
    out.extend(std::iter::repeat_n(b'x', bytes));
    out.extend_from_slice(&wav[data..]);
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

#[test]
fn a_long_chunk_before_the_data_reads_the_same_in_any_chunk_size() {
    let wav = with_list_chunk(&fixture_bytes("q0004.wav"), 70_000);
    let whole = audio::prepare(&wav, &wav_format()).unwrap();
    for size in [3_200, 64 * 1024, wav.len()] {
        let mut buffer = UtteranceBuffer::new(wav_format(), 30.0);
        for chunk in wav.chunks(size) {
            buffer.push(chunk).unwrap();
        }
        let pieced = audio::prepare(&buffer.take(), &wav_format()).unwrap();
        assert_eq!(pieced.samples, whole.samples, "chunks of {size} bytes");
    }
}

#[test]
fn no_format_excuses_an_unbounded_utterance() {
    let format = AudioFormat {
        encoding: Encoding::Float32,
        sample_rate: Some(192_000),
        channels: Some(8),
    };
    let mut buffer = UtteranceBuffer::new(format, 1e9);
    let chunk = vec![0u8; 1 << 20];
    let refused = (0..64).find_map(|_| buffer.push(&chunk).err());
    assert!(
        matches!(refused, Some(AudioError::TooManyBytes { .. })),
        "{refused:?}"
    );
}
