//! Whisper with the real tiny.en weights (fetched by `models/fetch.sh`): the importer and
//! the loader's errors (`import`), log-mel against reference values, and transcription of
//! speech, silence, noise, long audio and phrase hints; the 8-bit paths against f32
//! (`precision`) and the short encoder window against the whole one (`window`); word
//! times against an independent aligner (`word_times`); mutated CTranslate2 models
//! (`fuzz`).

mod fuzz;
pub(crate) mod import;
mod precision;
mod window;
mod word_times;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use voice_search::asr::mel::{MelExtractor, N_FRAMES};
use voice_search::asr::{ct2, AsrError, TranscribeOptions, Whisper};
use voice_search::audio;
use voice_search::eval::{wer_words, word_edits};

use crate::common::{fixture_bytes, fixture_path, wav_format, whisper, MODEL_DIR};

/// The reference transcript of the human fixture q0004.
const Q0004_TEXT: &str = "You will now be placed into the conference.";

fn prepared(name: &str) -> Vec<f32> {
    audio::prepare(&fixture_bytes(name), &wav_format())
        .unwrap()
        .samples
}

/// `model`'s transcript of q0004 with `options`, which must match its reference word for
/// word.
fn transcribe_q0004(model: &Whisper, options: &TranscribeOptions) -> voice_search::asr::Transcript {
    let transcript = model.transcribe(&prepared("q0004.wav"), options).unwrap();
    assert_eq!(
        wer(Q0004_TEXT, &transcript.text),
        0.0,
        "{}",
        transcript.text
    );
    transcript
}

fn wer(reference: &str, hypothesis: &str) -> f64 {
    let reference = wer_words(reference);
    word_edits(&reference, &wer_words(hypothesis)) as f64 / reference.len().max(1) as f64
}

// ---- Features ------------------------------------------------------------------------

#[test]
fn log_mel_matches_reference_values() {
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_path("mel_q0006.json")).unwrap()).unwrap();
    // The raw 16 kHz samples, as the reference saw them (no front end).
    let mut reader = hound::WavReader::open(fixture_path("q0006.wav")).unwrap();
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    let mel = MelExtractor::new(80).log_mel(&samples);
    let frames = reference["frames"].as_array().unwrap();
    let mut worst = 0f32;
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.as_u64().unwrap() as usize;
        for (m, expected) in reference["values"][i]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            worst =
                worst.max((mel[m * N_FRAMES + frame] - expected.as_f64().unwrap() as f32).abs());
        }
    }
    assert!(
        worst < 1e-4,
        "largest difference from the reference: {worst}"
    );
    let mean = mel.iter().map(|&v| v as f64).sum::<f64>() / mel.len() as f64;
    assert!(
        (mean - reference["mean"].as_f64().unwrap()).abs() < 1e-4,
        "mean {mean}"
    );
}

// ---- Transcription -------------------------------------------------------------------

#[test]
fn human_speech_transcribes_to_its_reference() {
    let transcript = transcribe_q0004(whisper(), &TranscribeOptions::default());
    assert_eq!(transcript.language, "en");
    assert!(
        transcript.confidence > 0.5 && transcript.no_speech_prob < 0.5,
        "{transcript:?}"
    );
}

#[test]
fn silence_and_noise_give_empty_text() {
    let options = TranscribeOptions::default();
    // Straight into the model, without the front end's voice detector.
    let silence = whisper().transcribe(&vec![0.0; 32_000], &options).unwrap();
    assert_eq!(silence.text, "", "digital silence: {silence:?}");
    assert!(silence.no_speech_prob > 0.6, "{}", silence.no_speech_prob);
    let noise = audio::prepare(&fixture_bytes("q0122.wav"), &wav_format()).unwrap();
    let transcript = whisper().transcribe(&noise.samples, &options).unwrap();
    assert_eq!(transcript.text, "", "pink noise");
    // And through the front end, which stops both before the model.
    for name in ["q0118.wav", "q0122.wav"] {
        assert!(
            !audio::prepare(&fixture_bytes(name), &wav_format())
                .unwrap()
                .info
                .voice
                .speech,
            "{name}"
        );
    }
}

#[test]
fn a_noisy_query_stays_under_a_wer_bound() {
    // Pink noise at 10 dB SNR; faster-whisper's tiny.en gets it word for word.
    let transcript = whisper()
        .transcribe(&prepared("q0070.wav"), &TranscribeOptions::default())
        .unwrap();
    let error = wer("watch the silence of the lambs", &transcript.text);
    assert!(error <= 0.34, "WER {error}: {}", transcript.text);
}

#[test]
fn long_audio_is_transcribed_window_by_window() {
    // About 45 s: twelve different fixture utterances, each through the front end, joined
    // with 1.5 s of faint noise between them.
    let pieces = [
        ("q0004.wav", "conference"),
        ("q0025.wav", "area"),
        ("q0006.wav", "germany"),
        ("q0049.wav", "password"),
        ("q0068.wav", "service"),
        ("q0066.wav", "without"),
        ("q0107.wav", "invalid"),
        ("q0011.wav", "full"),
        ("q0070.wav", "lambs"),
        ("q0017.wav", "urgent"),
        ("q0008.wav", "play"),
    ];
    let mut samples = Vec::new();
    let mut noise = 12345u32;
    for (name, _) in pieces {
        samples.extend(prepared(name));
        samples.extend((0..24_000).map(|_| {
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((noise >> 16) as f32 / 65_536.0 - 0.5) * 0.002
        }));
    }
    let seconds = samples.len() as f32 / 16_000.0;
    assert!(seconds > 40.0, "{seconds}");
    let transcript = whisper()
        .transcribe(&samples, &TranscribeOptions::default())
        .unwrap();
    // Complete and in order: each piece's word comes after the previous piece's.
    let words = wer_words(&transcript.text);
    let mut from = 0;
    for (name, word) in pieces {
        let at = words[from..].iter().position(|w| w == word);
        assert!(
            at.is_some(),
            "{word:?} of {name} missing after word {from}: {}",
            transcript.text
        );
        from += at.unwrap_or(0) + 1;
    }
    let last = transcript.segments.last().unwrap();
    assert!(
        last.end_seconds > 35.0 && last.end_seconds <= seconds + 0.5,
        "{:?}",
        transcript.segments
    );
    assert!(transcript
        .segments
        .windows(2)
        .all(|w| w[0].start_seconds <= w[1].start_seconds));
}

#[test]
fn timestamps_and_beam_search() {
    let samples = prepared("q0004.wav");
    let options = TranscribeOptions {
        timestamps: true,
        beam_size: 4,
        ..TranscribeOptions::default()
    };
    let transcript = transcribe_q0004(whisper(), &options);
    let seconds = samples.len() as f32 / 16_000.0;
    for segment in &transcript.segments {
        assert!(
            segment.start_seconds < segment.end_seconds && segment.end_seconds <= seconds + 0.5,
            "{segment:?}"
        );
    }
}

#[test]
fn phrase_hints_reach_the_decoder() {
    let samples = prepared("q0006.wav");
    let plain = whisper()
        .transcribe(&samples, &TranscribeOptions::default())
        .unwrap();
    let hinted = TranscribeOptions {
        phrase_hints: vec!["Düsseldorf".into()],
        ..TranscribeOptions::default()
    };
    let hinted = whisper().transcribe(&samples, &hinted).unwrap();
    assert!(!plain.text.contains("Düsseldorf"), "{}", plain.text);
    assert!(hinted.text.contains("Düsseldorf"), "{}", hinted.text);
}

#[test]
fn an_english_only_model_refuses_other_languages() {
    let options = TranscribeOptions {
        language: Some("de".into()),
        ..TranscribeOptions::default()
    };
    let error = whisper()
        .transcribe(&prepared("q0004.wav"), &options)
        .unwrap_err();
    assert!(
        matches!(error, AsrError::Language(ref code, _) if code == "de"),
        "{error}"
    );
}
