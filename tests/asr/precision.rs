//! The low-precision paths against f32 on the real weights: with the decoder in 8 bits
//! (the encoder in f32 or bfloat16), and with both in 8 bits, the fixtures' transcripts
//! stay within 5% WER of f32's (measured: 2 words of 87 differ with the decoder in 8
//! bits, a name's spelling and a misheard word in the noisy q0016, and 1 with both).
//! Skipped where the CPU lacks AVX-512 VNNI and AVX2 (bfloat16: AVX-512 BF16). The layers' own bounds are
//! unit tests beside the network (`asr::model`).

use std::path::Path;

use voice_search::asr::{EncoderWindow, Precision, TranscribeOptions, Whisper};
use voice_search::eval::{wer_words, word_edits};

use crate::common::{fixture_path, MODEL_DIR};

/// Every fixture with speech in it, as the manifest lists them.
pub(crate) fn speech_fixtures() -> Vec<String> {
    std::fs::read_to_string(fixture_path("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|entry| !entry["text"].as_str().unwrap().is_empty())
        .map(|entry| entry["audio"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn transcripts(model: &Whisper, clips: &[String]) -> Vec<String> {
    clips
        .iter()
        .map(|clip| {
            let samples = voice_search::audio::prepare(
                &crate::common::fixture_bytes(clip),
                &crate::common::wav_format(),
            )
            .unwrap()
            .samples;
            model
                .transcribe(&samples, &TranscribeOptions::default())
                .unwrap()
                .text
        })
        .collect()
}

#[test]
fn low_precision_transcribes_the_fixtures_as_f32_does() {
    if !voice_search::asr::kernels::int8::available() {
        eprintln!("no 8-bit kernel on this CPU: the 8-bit paths are not used here");
        return;
    }
    let load = |precision| {
        Whisper::load_with(Path::new(MODEL_DIR), precision, EncoderWindow::default()).unwrap()
    };
    let clips = speech_fixtures();
    let reference = transcripts(&load(Precision::F32), &clips);
    let bf16 = voice_search::asr::kernels::bf16::available();
    let precisions = [Precision::Int8Decoder, Precision::Bf16Int8, Precision::Int8];
    for precision in precisions
        .into_iter()
        .filter(|&p| bf16 || p != Precision::Bf16Int8)
    {
        let eight_bit = transcripts(&load(precision), &clips);
        let (mut edits, mut words) = (0, 0);
        for (exact, approximate) in reference.iter().zip(&eight_bit) {
            let exact = wer_words(exact);
            edits += word_edits(&exact, &wer_words(approximate));
            words += exact.len();
        }
        let wer = edits as f64 / words as f64;
        eprintln!("{precision}: {edits} of {words} words differ from f32");
        assert!(
            wer <= 0.05,
            "{precision}: WER {wer} against f32: {eight_bit:?} for {reference:?}"
        );
    }
}
