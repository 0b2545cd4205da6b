//! Random stream event sequences on the modelless front door: a stream ends with at most
//! one error, last.

use tokio_stream::StreamExt;
use voice_search::pipeline::HitOptions;
use voice_search::voice::{Inbound, StreamConfig};

use crate::audio::fuzz::random_format;
use crate::common::seeded::{Seeded, CASES};
use crate::common::{fixture_bytes, modelless_voice};

fn random_event(seed: &mut Seeded, wav: &[u8]) -> Result<Inbound, String> {
    match seed.below(8) {
        0 => Ok(Inbound::Config(StreamConfig {
            format: random_format(seed),
            options: Default::default(),
            hits: HitOptions::default(),
            interim_results: seed.below(2) == 0,
            search_interim: seed.below(2) == 0,
        })),
        1..=4 => {
            let at = seed.below(wav.len());
            let end = (at + seed.below(16_384)).min(wav.len());
            Ok(Inbound::Audio(wav[at..end].to_vec()))
        }
        5 | 6 => Ok(Inbound::EndOfUtterance),
        _ => Err("unreadable".to_string()),
    }
}

#[tokio::test]
async fn random_stream_events_end_every_stream_with_at_most_one_error_last() {
    let voice = modelless_voice();
    let wav = fixture_bytes("q0004.wav");
    let mut seed = Seeded(90);
    let mut ended_with_error = 0;
    for case in 0..CASES {
        // Mostly a config first, as a client would begin; sometimes anything.
        let mut events = Vec::new();
        if seed.below(4) != 0 {
            events.push(Ok(Inbound::Config(StreamConfig {
                format: random_format(&mut seed),
                options: Default::default(),
                hits: HitOptions::default(),
                interim_results: seed.below(2) == 0,
                search_interim: false,
            })));
        }
        events.extend((0..seed.below(12)).map(|_| random_event(&mut seed, &wav)));
        let answers: Vec<_> = voice
            .stream(tokio_stream::iter(events), || {})
            .expect("each stream ends before the next opens")
            .collect()
            .await;
        let errors = answers.iter().filter(|answer| answer.is_err()).count();
        assert!(errors <= 1, "case {case}: {errors} errors");
        if errors == 1 {
            ended_with_error += 1;
            assert!(
                answers.last().unwrap().is_err(),
                "case {case}: error not last"
            );
        }
    }
    assert!(
        0 < ended_with_error && ended_with_error < CASES,
        "the cases should be mixed: {ended_with_error} ended with an error"
    );
}
