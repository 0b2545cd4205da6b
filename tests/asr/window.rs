//! The short encoder window against the whole one on the real weights: the fixtures'
//! transcripts stay within 5% WER of the full window's (measured: 1 of 87 words differs).

use std::path::Path;

use voice_search::asr::{EncoderWindow, Precision, Whisper};
use voice_search::eval::{wer_words, word_edits};

use crate::asr::precision::{speech_fixtures, transcripts};
use crate::common::MODEL_DIR;

#[test]
fn the_short_window_transcribes_the_fixtures_as_the_full_one_does() {
    let load = |window| Whisper::load_with(Path::new(MODEL_DIR), Precision::F32, window).unwrap();
    let clips = speech_fixtures();
    let full = transcripts(&load(EncoderWindow::Full), &clips);
    let short = transcripts(&load(EncoderWindow::Short), &clips);
    let (mut edits, mut words) = (0, 0);
    for (whole, cut) in full.iter().zip(&short) {
        let whole = wer_words(whole);
        edits += word_edits(&whole, &wer_words(cut));
        words += whole.len();
    }
    eprintln!("{edits} of {words} words differ from the full window's");
    let wer = edits as f64 / words as f64;
    assert!(
        wer <= 0.05,
        "WER {wer} against the full window: {short:?} for {full:?}"
    );
}
