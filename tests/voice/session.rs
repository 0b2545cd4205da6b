//! The library's stream driven by plain events, with the real model and no gRPC: what
//! any front door (gRPC today, gRPC-Web or a WebSocket tomorrow) builds on.

use tokio_stream::StreamExt;
use voice_search::app::App;
use voice_search::asr::TranscribeOptions;
use voice_search::audio::{AudioError, AudioFormat, Encoding};
use voice_search::config::ServeConfig;
use voice_search::pipeline::HitOptions;
use voice_search::voice::{Inbound, SessionError, StreamConfig, StreamError};

use super::{linear16, CONFERENCE};
use crate::common::server::test_config;

#[tokio::test]
async fn finals_come_in_order_then_the_error_that_ended_the_stream() {
    let index = tempfile::tempdir().unwrap();
    let app = App::open(&ServeConfig {
        index: index.path().to_owned(),
        max_utterance_seconds: 5.0,
        ..test_config()
    })
    .unwrap();
    let (speech, rate) = linear16("q0004.wav");
    let config = StreamConfig {
        format: AudioFormat {
            encoding: Encoding::Linear16,
            sample_rate: Some(rate),
            channels: Some(1),
        },
        options: TranscribeOptions::default(),
        hits: HitOptions::default(),
        interim_results: true,
        search_interim: false,
    };
    let mut events: Vec<Result<Inbound, String>> = vec![Ok(Inbound::Config(config))];
    for _ in 0..2 {
        events.extend(speech.chunks(3_200).map(|c| Ok(Inbound::Audio(c.to_vec()))));
        events.push(Ok(Inbound::EndOfUtterance));
    }
    events.push(Ok(Inbound::Audio(vec![0; 2 * rate as usize * 6])));

    let answers: Vec<_> = app
        .voice
        .stream(tokio_stream::iter(events), || {})
        .unwrap()
        .collect()
        .await;
    let (error, results) = answers.split_last().unwrap();
    let finals: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.is_final)
        .map(|r| (r.index, r.outcome.transcript.text.as_str()))
        .collect();
    assert_eq!(finals, [(0, CONFERENCE), (1, CONFERENCE)]);
    assert!(
        matches!(
            error,
            Err(StreamError::Session(SessionError::Audio {
                index: 2,
                source: AudioError::TooLong { .. }
            }))
        ),
        "{error:?}"
    );
}
