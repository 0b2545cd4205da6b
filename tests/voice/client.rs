//! The streaming client (`voice-search client`, `eval --server`) sends a WAV file as
//! FLOAT32 and FLAC, Ogg Opus and WebM Opus files as they are, in pieces, and each answers
//! with the WAV's words; a file of none of these is refused before anything is sent.

use voice_search::client::{
    connect, stream_recording, ClientError, Recording, SendOptions, ServerTarget,
};
use voice_search::proto::voice_search_client::VoiceSearchClient;

use crate::common::fixture_path;
use crate::common::server::{test_config, TestServer};

#[tokio::test]
async fn every_file_format_is_sent_and_answered_with_the_wavs_words() {
    let server = TestServer::start(test_config()).await;
    let target = ServerTarget {
        address: server.addr.to_string(),
        ..Default::default()
    };
    let mut client = VoiceSearchClient::new(connect(&target).await.unwrap());
    // 50 ms pieces: several messages per utterance, compressed ones cut mid-page.
    let options = SendOptions {
        chunk_ms: 50,
        ..Default::default()
    };
    for name in ["q0004.wav", "q0004.flac", "q0004.opus", "q0004.webm"] {
        let recording = Recording::from_file(&fixture_path(name), false).unwrap();
        assert_eq!(recording.utterance_count(), 1, "{name}");
        assert!(
            (recording.seconds() - 2.388).abs() < 0.05,
            "{name}: {}",
            recording.seconds()
        );
        let finals = stream_recording(&mut client, &recording, &options, |_| {})
            .await
            .unwrap();
        let transcript = finals[0].result.transcript.as_ref().unwrap();
        assert_eq!(
            transcript.text, "You will now be placed into the conference.",
            "{name}"
        );
    }
    let not_audio = Recording::from_file(&fixture_path("catalog.jsonl"), false).unwrap_err();
    assert!(matches!(not_audio, ClientError::Format(_)), "{not_audio}");
    server.shutdown().await.unwrap();
}
