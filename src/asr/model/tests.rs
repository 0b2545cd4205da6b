//! The network against f32 and against its own whole passes, on the real weights.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::*;
use crate::asr::mel::{MelExtractor, N_FRAMES, SAMPLE_RATE};
use crate::asr::precision::VECTOR_ROWS;
use crate::asr::window::{ShortWindow, PEAK};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/whisper-tiny.en");

fn model(precision: Precision) -> WhisperModel {
    let dir = Path::new(MODEL);
    let config: WhisperConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: read-only map of the weights file; every tensor is copied out.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    WhisperModel::load(vb, config, precision).unwrap()
}

/// The relative distance ‖a − b‖ / ‖b‖.
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    };
    norm(&(a - b).unwrap()) / norm(b)
}

/// The features of the fixture q0004 (a real 2.4 s utterance) after the front end.
fn q0004_features(n_mels: usize) -> Vec<f32> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/q0004.wav"
    ))
    .unwrap();
    let format = crate::audio::AudioFormat {
        encoding: crate::audio::Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    let samples = crate::audio::prepare(&bytes, &format).unwrap().samples;
    MelExtractor::shared(n_mels).log_mel(&samples)
}

/// Each encoder block's output, from the mel of a real utterance.
fn block_outputs(encoder: &Encoder, mel: &Tensor) -> Vec<Tensor> {
    let mut x = encoder.stem(mel).unwrap();
    let mut outputs = Vec::new();
    for block in &encoder.blocks {
        x = block.forward(&x, None, encoder.packed_attention).unwrap();
        outputs.push(x.clone());
    }
    outputs
}

/// On q0004, the 8-bit encoder's blocks stay within 5% of f32's outputs, the bfloat16
/// encoder's within 1%; the 8-bit decoder's hidden states within 8%, and what decoding
/// reads of them through the 8-bit output projection, the next tokens'
/// log-probabilities, within 0.05 nats on average and 0.5 at most (the test prints the
/// errors it measures).
#[test]
fn low_precision_layers_stay_close_to_f32() {
    if !crate::asr::kernels::int8::available() {
        eprintln!("no 8-bit kernel on this CPU: the 8-bit layers are not used here");
        return;
    }
    let reference = model(Precision::F32);
    let eight_bit = model(Precision::Int8);
    let bf16 = crate::asr::kernels::bf16::available().then(|| model(Precision::Bf16Int8));
    let n_mels = reference.config.num_mel_bins;
    let mel =
        Tensor::from_vec(q0004_features(n_mels), (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
    let exact = block_outputs(&reference.encoder, &mel);
    let approximate = block_outputs(&eight_bit.encoder, &mel);
    for (layer, (a, b)) in approximate.iter().zip(&exact).enumerate() {
        let error = relative_error(a, b);
        eprintln!("encoder block {layer}: {error}");
        assert!(error < 0.05, "encoder block {layer}: {error}");
    }
    if let Some(bf16) = &bf16 {
        for (layer, (a, b)) in block_outputs(&bf16.encoder, &mel)
            .iter()
            .zip(&exact)
            .enumerate()
        {
            let error = relative_error(a, b);
            eprintln!("bfloat16 encoder block {layer}: {error}");
            assert!(error < 0.01, "bfloat16 encoder block {layer}: {error}");
        }
    }

    // The decoder on the same (f32) audio states, teacher-forced with the transcript
    // four times over: more tokens than VECTOR_ROWS, so the 8-bit path runs.
    let audio = reference.encoder.forward(&mel).unwrap();
    let tokenizer =
        tokenizers::Tokenizer::from_file(Path::new(MODEL).join("tokenizer.json")).unwrap();
    let text = " You will now be placed into the conference.".repeat(4);
    let mut tokens = vec![50257, 50362];
    tokens.extend(tokenizer.encode(text, false).unwrap().get_ids());
    assert!(tokens.len() > VECTOR_ROWS);
    let ids = tokens.clone();
    let tokens = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = |model: &WhisperModel| {
        let mut cache = model.decoder.cache(&audio).unwrap();
        model.decoder.forward(&tokens, &mut cache).unwrap()
    };
    let (approximate, exact) = (hidden(&eight_bit), hidden(&reference));
    let error = relative_error(&approximate, &exact);
    eprintln!("decoder hidden states: {error}");
    assert!(error < 0.08, "decoder hidden states: {error}");
    // What decoding reads: each next token's log-probability.
    let log_probs = |model: &WhisperModel, hidden: &Tensor| {
        let rows = hidden.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let rows: Vec<&[f32]> = rows[..rows.len() - 1].iter().map(Vec::as_slice).collect();
        let targets: Vec<Vec<u32>> = ids[1..].iter().map(|&t| vec![t]).collect();
        let (_, chosen) = model.decoder.target_log_probs(&rows, &targets);
        chosen.into_iter().map(|t| t[0]).collect::<Vec<f32>>()
    };
    let (a, b) = (
        log_probs(&eight_bit, &approximate),
        log_probs(&reference, &exact),
    );
    let largest = a
        .iter()
        .zip(&b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let mean = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).sum::<f32>() / a.len() as f32;
    eprintln!("next-token log-probabilities: mean difference {mean}, largest {largest}");
    assert!(
        mean < 0.05 && largest < 0.5,
        "log-probabilities: mean {mean}, largest {largest}"
    );
}

/// The padded encoding of a window: over silence, exactly the full pass; over the
/// speech of q0004 (2.4 s), the computed positions' states within 10% of the full
/// pass over the same features, the padding's within 40%: the padding hears the speech
/// in the full pass only. What that costs in words is measured on the dev set
/// (`asr::window`).
#[test]
fn padded_encoding_follows_the_full_pass() {
    let model = model(Precision::F32);
    let encoder = &model.encoder;
    let n_mels = model.config.num_mel_bins;
    // The least a short window computes, as for q0004.
    let first = ShortWindow::frames(SAMPLE_RATE).expect("a second is a short window");
    let silence = Tensor::full(PEAK - 2.0, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
    let padding = encoder.padding(&silence, first / 2).unwrap();
    let padded = encoder
        .forward_padded(
            &silence.narrow(2, 0, first + 2).unwrap(),
            first / 2,
            &padding,
        )
        .unwrap();
    let full = encoder.forward(&silence).unwrap();
    let error = relative_error(&padded, &full);
    assert!(error < 1e-5, "silence: {error}");

    let mut features = q0004_features(n_mels);
    // The speech's floor is the silent pass's: shifted as a short window is.
    let loudest = features.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for value in &mut features {
        *value += PEAK - loudest;
    }
    let mel = Tensor::from_vec(features, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
    let padded = encoder
        .forward_padded(&mel.narrow(2, 0, first + 2).unwrap(), first / 2, &padding)
        .unwrap();
    let full = encoder.forward(&mel).unwrap();
    let positions = first / 2;
    let part = |t: &Tensor, from: usize, len: usize| t.narrow(1, from, len).unwrap();
    let computed = relative_error(&part(&padded, 0, positions), &part(&full, 0, positions));
    let rest = 1500 - positions;
    let silent = relative_error(
        &part(&padded, positions, rest),
        &part(&full, positions, rest),
    );
    eprintln!("speech positions: {computed}, padding: {silent}");
    assert!(computed < 0.1, "speech positions: {computed}");
    assert!(silent < 0.4, "padding: {silent}");
}

/// A short window's decoder cache, its silent positions' keys and values made at
/// load, is the cache computed from all of the window's states.
#[test]
fn a_padded_decoder_cache_is_the_whole_one() {
    let model = model(Precision::fastest());
    let n_mels = model.config.num_mel_bins;
    let first = ShortWindow::frames(SAMPLE_RATE).expect("a second is a short window");
    let silence = Tensor::full(PEAK - 2.0, (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
    let padding = model.encoder.padding(&silence, first / 2).unwrap();
    let cross = model.decoder.cross_padding(&padding).unwrap();
    let mel =
        Tensor::from_vec(q0004_features(n_mels), (1, n_mels, N_FRAMES), &Device::Cpu).unwrap();
    // More than the least window, so that part of the padding is skipped.
    let time = first / 2 + 50;
    let audio = model
        .encoder
        .forward_padded(&mel.narrow(2, 0, 2 * time + 2).unwrap(), time, &padding)
        .unwrap();
    let whole = model.decoder.cache(&audio).unwrap();
    let padded = model.decoder.cache_padded(&audio, time, &cross).unwrap();
    for ((k, v), (pk, pv)) in whole.cross_kv.iter().zip(&padded.cross_kv) {
        assert_eq!(k.dims(), pk.dims());
        assert!(relative_error(k, pk) < 1e-6 && relative_error(v, pv) < 1e-6);
    }
    assert!(model
        .decoder
        .cache_padded(&audio, first / 2 - 1, &cross)
        .is_err());
}
