//! Word times through the pipeline on the real model: each word's start and end fall
//! within 150 ms of those an independent aligner found in the same clip
//! (`tests/fixtures/word_times.json`, written by `scripts/word_times_reference.py` with
//! faster-whisper), counted from the utterance's first sample; the words are those of
//! the transcript, in order, inside the audio and not overlapping; none come unless
//! asked for.

use voice_search::asr::{TranscribeOptions, WordTime};
use voice_search::pipeline::Pipeline;

use crate::common::{fixture_bytes, fixture_path, fixture_pipeline, wav_format};

/// Farthest a word boundary may lie from the independent aligner's.
const TOLERANCE_SECONDS: f32 = 0.15;

fn words(pipeline: &Pipeline, clip: &str, word_times: bool) -> (String, Vec<WordTime>, f32) {
    let options = TranscribeOptions {
        word_times,
        ..TranscribeOptions::default()
    };
    let outcome = pipeline
        .run_bytes(&fixture_bytes(clip), &wav_format(), &options, None)
        .unwrap();
    let duration = outcome.audio.duration_seconds as f32;
    (outcome.transcript.text, outcome.transcript.words, duration)
}

#[test]
fn word_times_agree_with_an_independent_aligner() {
    let (_index, pipeline) = fixture_pipeline();
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_path("word_times.json")).unwrap()).unwrap();
    for (clip, expected) in reference.as_object().unwrap() {
        let expected = expected.as_array().unwrap();
        let (text, words, duration) = words(&pipeline, clip, true);
        let joined: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(
            joined.join(" "),
            text,
            "{clip}: the words are the transcript's"
        );
        assert!(
            !words.is_empty() && words.len() <= expected.len(),
            "{clip}: {words:?} against {expected:?}"
        );
        let mut previous_end = 0.0;
        for (word, theirs) in words.iter().zip(expected) {
            assert!(
                previous_end <= word.start_seconds
                    && word.start_seconds <= word.end_seconds
                    && word.end_seconds <= duration,
                "{clip}: {word:?} after {previous_end} s, in {duration} s of audio"
            );
            previous_end = word.end_seconds;
            assert!((0.0..=1.0).contains(&word.confidence), "{clip}: {word:?}");
            for (ours, key) in [(word.start_seconds, "start"), (word.end_seconds, "end")] {
                let independent = theirs[key].as_f64().unwrap() as f32;
                assert!(
                    (ours - independent).abs() <= TOLERANCE_SECONDS,
                    "{clip}: {:?} {key}s at {ours:.2} s, the independent aligner's {:?} at {independent:.2} s",
                    word.word,
                    theirs["word"]
                );
            }
        }
    }
}

#[test]
fn no_word_times_unless_asked_for() {
    let (_index, pipeline) = fixture_pipeline();
    let (text, words, _) = words(&pipeline, "q0004.wav", false);
    assert!(!text.is_empty());
    assert!(words.is_empty(), "{words:?}");
}
