//! Any sequence of stream events (configs of any format, audio chunks, ends of utterance,
//! unreadable messages), through the stream's rules with no model: every stream ends,
//! never a panic, with at most one error and that one last.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio_stream::StreamExt;
use voice_search::audio::{AudioFormat, Encoding};
use voice_search::pipeline::HitOptions;
use voice_search::voice::{Inbound, SessionLimits, StreamConfig, Voice, VoiceLimits};

fn voice() -> &'static (tokio::runtime::Runtime, Voice) {
    static VOICE: OnceLock<(tokio::runtime::Runtime, Voice)> = OnceLock::new();
    VOICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let voice = Voice::without_model(VoiceLimits {
            session: SessionLimits {
                max_utterance_seconds: 2.0,
                max_stream_seconds: 6.0,
            },
            idle_timeout: Duration::from_secs(5),
            max_streams: 4,
        });
        (runtime, voice)
    })
}

/// Reads events from `input`: a tag byte, then what the event needs.
fn events(mut input: &[u8]) -> Vec<Result<Inbound, String>> {
    let mut events = Vec::new();
    while let Some((&tag, rest)) = input.split_first() {
        input = rest;
        let event = match tag % 4 {
            0 => {
                let Some((&[kind, rate, interim], rest)) = input.split_first_chunk::<3>() else {
                    break;
                };
                input = rest;
                let encoding = [Encoding::Wav, Encoding::Linear16, Encoding::Float32, Encoding::Mulaw, Encoding::OggOpus, Encoding::Flac, Encoding::WebmOpus]
                    [usize::from(kind % 7)];
                let rates = [None, Some(0), Some(8_000), Some(16_000), Some(4_000_000)];
                Ok(Inbound::Config(StreamConfig {
                    format: AudioFormat {
                        encoding,
                        sample_rate: rates[usize::from(rate) % rates.len()],
                        channels: [None, Some(1), Some(2), Some(0)][usize::from(kind / 4 % 4)],
                    },
                    options: Default::default(),
                    hits: HitOptions::default(),
                    interim_results: interim % 2 == 1,
                    search_interim: interim % 4 >= 2,
                }))
            }
            1 => {
                let Some((&length, rest)) = input.split_first() else {
                    break;
                };
                // A length byte in units of 64 bytes, so that chunks reach real sizes.
                let take = (usize::from(length) * 64).min(rest.len());
                let repeat = usize::from(length % 8) + 1;
                input = &rest[take..];
                Ok(Inbound::Audio(rest[..take].repeat(repeat)))
            }
            2 => Ok(Inbound::EndOfUtterance),
            _ => Err("unreadable".to_string()),
        };
        events.push(event);
    }
    events
}

fuzz_target!(|input: &[u8]| {
    let (runtime, voice) = voice();
    let answers: Vec<_> = runtime.block_on(async {
        let results = voice
            .stream(tokio_stream::iter(events(input)), || {})
            .expect("streams end before the next one opens");
        results.collect().await
    });
    let errors = answers.iter().filter(|answer| answer.is_err()).count();
    assert!(errors <= 1, "{errors} errors");
    if errors == 1 {
        assert!(answers.last().unwrap().is_err(), "an error before the last answer");
    }
});
