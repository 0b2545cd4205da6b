//! Model files: the CTranslate2 importer on synthetic and real weights, and the loader's
//! errors for a wrong folder.

use super::*;

// ---- The CTranslate2 importer --------------------------------------------------------

/// Writes a CTranslate2 `model.bin` with the given variables (f32 tensors, i16 scalars).
pub(crate) fn write_ct2(
    dir: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    scalars: &[(&str, i16)],
) {
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
pub(crate) fn synthetic(key_bias: f32) -> Vec<(String, Vec<usize>, Vec<f32>)> {
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
    transcribe_q0004(&model, &TranscribeOptions::default());
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
