//! Whisper with the real tiny.en weights (fetched by `models/fetch.sh`): the importer,
//! the loader's errors, log-mel against reference values, and transcription of speech,
//! silence, noise, long audio and phrase hints.

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

fn wer(reference: &str, hypothesis: &str) -> f64 {
    let reference = wer_words(reference);
    word_edits(&reference, &wer_words(hypothesis)) as f64 / reference.len().max(1) as f64
}

// ---- The CTranslate2 importer --------------------------------------------------------

/// Writes a CTranslate2 `model.bin` with the given variables (f32 tensors, i16 scalars).
fn write_ct2(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], scalars: &[(&str, i16)]) {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend(((s.len() + 1) as u16).to_le_bytes());
        out.extend(s.as_bytes());
        out.push(0);
    };
    out.extend(6u32.to_le_bytes());
    string(&mut out, "WhisperSpec");
    out.extend(3u32.to_le_bytes());
    out.extend(((tensors.len() + scalars.len()) as u32).to_le_bytes());
    for (name, shape, values) in tensors {
        string(&mut out, name);
        out.push(shape.len() as u8);
        for &d in shape {
            out.extend((d as u32).to_le_bytes());
        }
        out.push(0);
        out.extend(((values.len() * 4) as u32).to_le_bytes());
        for v in values {
            out.extend(v.to_le_bytes());
        }
    }
    for (name, value) in scalars {
        string(&mut out, name);
        out.push(0);
        out.push(2);
        out.extend(2u32.to_le_bytes());
        out.extend(value.to_le_bytes());
    }
    out.extend(1u32.to_le_bytes());
    string(&mut out, "decoder/projection/weight");
    string(&mut out, "decoder/embeddings/weight");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.bin"), out).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"suppress_ids": [1, 2], "suppress_ids_begin": [3]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
}

/// A tiny synthetic Whisper: d_model 8, 2 heads, one layer a side, vocab 20, 4 mel bins.
fn synthetic(key_bias: f32) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let d = 8;
    let mut counter = 0.0f32;
    let mut t = |name: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                counter += 1.0;
                counter / 1000.0
            })
            .collect();
        (name.to_string(), shape, values)
    };
    let mut tensors = vec![
        t("encoder/conv1/weight", vec![d, 4, 3]),
        t("encoder/conv1/bias", vec![d]),
        t("encoder/conv2/weight", vec![d, d, 3]),
        t("encoder/conv2/bias", vec![d]),
        t("encoder/position_encodings/encodings", vec![10, d]),
        t("encoder/layer_norm/gamma", vec![d]),
        t("encoder/layer_norm/beta", vec![d]),
        t("decoder/embeddings/weight", vec![20, d]),
        t("decoder/position_encodings/encodings", vec![6, d]),
        t("decoder/layer_norm/gamma", vec![d]),
        t("decoder/layer_norm/beta", vec![d]),
    ];
    for side in ["encoder", "decoder"] {
        let p = format!("{side}/layer_0");
        tensors.extend([
            t(&format!("{p}/self_attention/layer_norm/gamma"), vec![d]),
            t(&format!("{p}/self_attention/layer_norm/beta"), vec![d]),
            t(
                &format!("{p}/self_attention/linear_0/weight"),
                vec![3 * d, d],
            ),
            t(&format!("{p}/self_attention/linear_1/weight"), vec![d, d]),
            t(&format!("{p}/self_attention/linear_1/bias"), vec![d]),
            t(&format!("{p}/ffn/layer_norm/gamma"), vec![d]),
            t(&format!("{p}/ffn/layer_norm/beta"), vec![d]),
            t(&format!("{p}/ffn/linear_0/weight"), vec![4 * d, d]),
            t(&format!("{p}/ffn/linear_0/bias"), vec![4 * d]),
            t(&format!("{p}/ffn/linear_1/weight"), vec![d, 4 * d]),
            t(&format!("{p}/ffn/linear_1/bias"), vec![d]),
        ]);
        // q, k, v biases fused: the key third is zero (or not, to test the check).
        let bias: Vec<f32> = (0..3 * d)
            .map(|i| {
                if (d..2 * d).contains(&i) {
                    key_bias
                } else {
                    i as f32
                }
            })
            .collect();
        tensors.push((
            format!("{p}/self_attention/linear_0/bias"),
            vec![3 * d],
            bias,
        ));
    }
    let p = "decoder/layer_0/attention";
    tensors.extend([
        t(&format!("{p}/layer_norm/gamma"), vec![d]),
        t(&format!("{p}/layer_norm/beta"), vec![d]),
        t(&format!("{p}/linear_0/weight"), vec![d, d]),
        t(&format!("{p}/linear_0/bias"), vec![d]),
        t(&format!("{p}/linear_1/weight"), vec![2 * d, d]),
        t(&format!("{p}/linear_2/weight"), vec![d, d]),
        t(&format!("{p}/linear_2/bias"), vec![d]),
    ]);
    let kv_bias: Vec<f32> = (0..2 * d)
        .map(|i| if i < d { 0.0 } else { 1.0 + i as f32 })
        .collect();
    tensors.push((format!("{p}/linear_1/bias"), vec![2 * d], kv_bias));
    tensors
}

fn load_safetensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn importer_splits_fused_projections_and_derives_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("ct2"), dir.path().join("hf"));
    let tensors = synthetic(0.0);
    write_ct2(
        &from,
        &tensors,
        &[("encoder/num_heads", 2), ("decoder/num_heads", 2)],
    );
    ct2::import(&from, &to).unwrap();

    let out = load_safetensors(&to.join("model.safetensors"));
    let qkv = &tensors
        .iter()
        .find(|(n, ..)| n == "encoder/layer_0/self_attention/linear_0/weight")
        .unwrap()
        .2;
    let k = out["model.encoder.layers.0.self_attn.k_proj.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(k, qkv[64..128], "the key rows are the middle third");
    assert_eq!(
        out["model.encoder.layers.0.self_attn.q_proj.weight"].dims(),
        [8, 8]
    );
    assert!(
        !out.contains_key("model.encoder.layers.0.self_attn.k_proj.bias"),
        "zero key bias dropped"
    );
    let v_bias = out["model.decoder.layers.0.encoder_attn.v_proj.bias"]
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(v_bias[0], 9.0);
    assert_eq!(out["model.decoder.embed_tokens.weight"].dims(), [20, 8]);

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(to.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["d_model"], 8);
    assert_eq!(config["encoder_layers"], 1);
    assert_eq!(config["encoder_attention_heads"], 2);
    assert_eq!(config["num_mel_bins"], 4);
    assert_eq!(config["max_source_positions"], 10);
    assert_eq!(config["vocab_size"], 20);
    assert_eq!(config["suppress_tokens"], serde_json::json!([1, 2]));
}

#[test]
fn importer_refuses_a_nonzero_key_bias_and_names_missing_tensors() {
    let dir = tempfile::tempdir().unwrap();
    write_ct2(&dir.path().join("bias"), &synthetic(0.5), &[]);
    let error = ct2::import(&dir.path().join("bias"), &dir.path().join("out1")).unwrap_err();
    assert!(
        error.to_string().contains("key part should be zero"),
        "{error}"
    );

    let mut missing = synthetic(0.0);
    missing.retain(|(name, ..)| name != "decoder/layer_0/attention/linear_2/weight");
    write_ct2(&dir.path().join("missing"), &missing, &[]);
    let error = ct2::import(&dir.path().join("missing"), &dir.path().join("out2")).unwrap_err();
    assert!(
        matches!(&error, AsrError::MissingTensor(name) if name == "decoder/layer_0/attention/linear_2/weight"),
        "{error}"
    );

    let error = ct2::import(&dir.path().join("nowhere"), &dir.path().join("out3")).unwrap_err();
    assert!(error.to_string().contains("model.bin"), "{error}");
}

#[test]
fn importer_converts_the_real_tiny_en() {
    let original = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/ct2-tiny.en");
    assert!(
        original.join("model.bin").is_file(),
        "run models/fetch.sh first"
    );
    let dir = tempfile::tempdir().unwrap();
    ct2::import(&original, dir.path()).unwrap();
    let out = load_safetensors(&dir.path().join("model.safetensors"));
    let expected: &[(&str, &[usize])] = &[
        ("model.encoder.conv1.weight", &[384, 80, 3]),
        ("model.encoder.conv2.weight", &[384, 384, 3]),
        ("model.encoder.embed_positions.weight", &[1500, 384]),
        ("model.decoder.embed_tokens.weight", &[51864, 384]),
        ("model.decoder.embed_positions.weight", &[448, 384]),
    ];
    for (name, shape) in expected {
        assert_eq!(out[*name].dims(), *shape, "{name}");
    }
    for side in ["encoder", "decoder"] {
        for layer in 0..4 {
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                let name = format!("model.{side}.layers.{layer}.self_attn.{proj}.weight");
                assert_eq!(out[&name].dims(), [384, 384], "{name}");
            }
            assert_eq!(
                out[&format!("model.{side}.layers.{layer}.fc1.weight")].dims(),
                [1536, 384]
            );
        }
    }
    // Encoder: convolutions, positions, final norm and 15 per block; decoder: embeddings,
    // positions, final norm and 24 per block. Every tensor lands once (k biases dropped).
    assert_eq!(out.len(), 7 + 4 * 15 + 4 + 4 * 24);
    assert!(out.values().all(|t| t.dtype() == DType::F16));

    let model = Whisper::load(dir.path()).unwrap();
    let transcript = model
        .transcribe(&prepared("q0004.wav"), &TranscribeOptions::default())
        .unwrap();
    assert_eq!(
        wer(Q0004_TEXT, &transcript.text),
        0.0,
        "{}",
        transcript.text
    );
}

#[test]
fn a_wrong_folder_gets_an_error_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let error = Whisper::load(dir.path())
        .err()
        .expect("empty folder refused");
    assert!(
        error.to_string().contains("config.json is missing"),
        "{error}"
    );

    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(Path::new(MODEL_DIR).join(file), dir.path().join(file)).unwrap();
    }
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"encoder_layers\": 4", "\"encoder_layers\": 5"),
    )
    .unwrap();
    let error = Whisper::load(dir.path())
        .err()
        .expect("a fifth layer is not there");
    assert!(
        error.to_string().contains("model.encoder.layers.4"),
        "{error}"
    );

    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"d_model\": 384", "\"d_model\": 256"),
    )
    .unwrap();
    let error = Whisper::load(dir.path()).err().expect("mis-shaped");
    assert!(error.to_string().contains("shape"), "{error}");
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
    let transcript = whisper()
        .transcribe(&prepared("q0004.wav"), &TranscribeOptions::default())
        .unwrap();
    assert_eq!(
        wer(Q0004_TEXT, &transcript.text),
        0.0,
        "{}",
        transcript.text
    );
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

    let short = TranscribeOptions {
        max_seconds: 30.0,
        ..TranscribeOptions::default()
    };
    assert!(matches!(
        whisper().transcribe(&samples, &short),
        Err(AsrError::TooLong { .. })
    ));
}

#[test]
fn timestamps_and_beam_search() {
    let samples = prepared("q0004.wav");
    let options = TranscribeOptions {
        timestamps: true,
        beam_size: 4,
        ..TranscribeOptions::default()
    };
    let transcript = whisper().transcribe(&samples, &options).unwrap();
    assert_eq!(
        wer(Q0004_TEXT, &transcript.text),
        0.0,
        "{}",
        transcript.text
    );
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
