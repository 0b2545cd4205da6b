//! The unary voice RPCs on a real server with the real model: transcripts, hits, and a
//! precise status for every kind of bad input, the server still answering afterwards.

use tonic::Code;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    self, AudioEncoding, RecognitionConfig, StreamingVoiceSearchConfig, TranscribeRequest,
    VoiceSearchRequest,
};

use crate::common::fixture_bytes;
use crate::common::server::{test_config, TestServer};

fn config(encoding: AudioEncoding, rate: u32) -> RecognitionConfig {
    RecognitionConfig {
        encoding: encoding as i32,
        sample_rate_hz: rate,
        channels: 1,
        ..Default::default()
    }
}

fn wav_config() -> RecognitionConfig {
    RecognitionConfig {
        encoding: AudioEncoding::Wav as i32,
        ..Default::default()
    }
}

async fn transcribe(
    client: &mut VoiceSearchClient<tonic::transport::Channel>,
    config: RecognitionConfig,
    audio: Vec<u8>,
) -> Result<proto::TranscribeResponse, tonic::Status> {
    client
        .transcribe(TranscribeRequest {
            config: Some(config),
            audio,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn transcribe_and_voice_search_over_grpc() {
    let server = TestServer::start(test_config()).await;
    let mut voice = VoiceSearchClient::new(server.channel().await);
    let response = transcribe(&mut voice, wav_config(), fixture_bytes("q0004.wav"))
        .await
        .unwrap();
    let transcript = response.transcript.unwrap();
    assert_eq!(
        transcript.text,
        "You will now be placed into the conference."
    );
    assert_eq!(transcript.language, "en");
    assert!(!transcript.segments.is_empty());
    assert!(transcript.words.is_empty(), "words only when asked for");
    let timed = RecognitionConfig {
        enable_word_time_offsets: true,
        ..wav_config()
    };
    let response = transcribe(&mut voice, timed, fixture_bytes("q0004.wav"))
        .await
        .unwrap();
    crate::common::assert_word_times(&response.transcript.unwrap());
    let audio = response.audio.unwrap();
    assert_eq!((audio.sample_rate_hz, audio.channels), (16_000, 1));
    assert!(audio.voice_detected);

    server
        .add_documents(&[("dus", "Düsseldorf", "city"), ("ber", "Berlin", "city")])
        .await;
    let response = voice
        .voice_search(VoiceSearchRequest {
            config: Some(StreamingVoiceSearchConfig {
                recognition: Some(wav_config()),
                search: None,
            }),
            audio: fixture_bytes("q0006.wav"),
        })
        .await
        .unwrap()
        .into_inner();
    let result = response.result.unwrap();
    assert!(result.is_final);
    assert_eq!(result.hits[0].id, "dus", "{:?}", result.transcript);

    // Silence: an empty transcript and no hits, never an invented sentence.
    let silence = voice
        .voice_search(VoiceSearchRequest {
            config: Some(StreamingVoiceSearchConfig {
                recognition: Some(wav_config()),
                search: None,
            }),
            audio: fixture_bytes("q0118.wav"),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(silence.transcript.unwrap().text, "");
    assert!(silence.hits.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_audio_gets_a_precise_status_and_the_server_goes_on() {
    let server = TestServer::start(test_config()).await;
    let mut voice = VoiceSearchClient::new(server.channel().await);
    let good = fixture_bytes("q0004.wav");
    let nan: Vec<u8> = [0.1f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let long = vec![0u8; 2 * 16_000 * 31];
    let cases: Vec<(&str, RecognitionConfig, Vec<u8>, Code, &str)> = vec![
        (
            "unspecified encoding",
            config(AudioEncoding::Unspecified, 16_000),
            good.clone(),
            Code::InvalidArgument,
            "unspecified",
        ),
        (
            "unknown encoding",
            RecognitionConfig {
                encoding: 42,
                ..wav_config()
            },
            good.clone(),
            Code::InvalidArgument,
            "unknown",
        ),
        (
            "rate too low",
            config(AudioEncoding::Linear16, 4_000),
            vec![0; 100],
            Code::InvalidArgument,
            "4000 Hz",
        ),
        (
            "rate too high",
            config(AudioEncoding::Linear16, 400_000),
            vec![0; 100],
            Code::InvalidArgument,
            "400000 Hz",
        ),
        (
            "corrupt WAV header",
            wav_config(),
            b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk".to_vec(),
            Code::InvalidArgument,
            "WAV",
        ),
        (
            "truncated WAV",
            wav_config(),
            good[..good.len() / 2].to_vec(),
            Code::InvalidArgument,
            "truncated",
        ),
        (
            "odd LINEAR16",
            config(AudioEncoding::Linear16, 16_000),
            vec![0; 101],
            Code::InvalidArgument,
            "101 bytes",
        ),
        (
            "NaN floats",
            config(AudioEncoding::Float32, 16_000),
            nan,
            Code::InvalidArgument,
            "NaN",
        ),
        (
            "empty audio",
            wav_config(),
            Vec::new(),
            Code::InvalidArgument,
            "no audio",
        ),
        (
            "too long",
            config(AudioEncoding::Linear16, 16_000),
            long,
            Code::OutOfRange,
            "limit is 30.0 s",
        ),
        (
            "other language",
            RecognitionConfig {
                language: "de".into(),
                ..wav_config()
            },
            good.clone(),
            Code::InvalidArgument,
            "English-only",
        ),
        (
            "a NUL in a hint",
            RecognitionConfig {
                phrase_hints: vec!["Szczecin".into(), "yes\0".into()],
                ..wav_config()
            },
            good.clone(),
            Code::InvalidArgument,
            "U+0000",
        ),
        (
            "hints of 5,000 characters",
            RecognitionConfig {
                phrase_hints: vec!["\u{FFFD}".repeat(5_000)],
                ..wav_config()
            },
            good.clone(),
            Code::InvalidArgument,
            "5000 characters",
        ),
        (
            "hints past the prompt's tokens",
            RecognitionConfig {
                phrase_hints: vec!["Zqx Vrk".into(); 150],
                ..wav_config()
            },
            good.clone(),
            Code::InvalidArgument,
            "tokens",
        ),
    ];
    for (what, config, audio, code, message) in cases {
        let status = transcribe(&mut voice, config, audio).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{what}: {}",
            status.message()
        );
    }
    let response = transcribe(&mut voice, wav_config(), good).await.unwrap();
    assert_eq!(
        response.transcript.unwrap().text,
        "You will now be placed into the conference."
    );
    server.shutdown().await.unwrap();
}
