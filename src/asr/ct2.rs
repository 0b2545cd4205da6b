//! Import of a CTranslate2 Whisper folder (what faster-whisper users have) into the
//! Hugging Face layout the loader reads: fused q/k/v projections are split, the all-zero
//! key bias CTranslate2 stores is checked and dropped, and `config.json` is derived from
//! the tensor shapes.
//!
//! `model.bin` layout (little-endian): u32 version, string spec name, u32 revision,
//! u32 variable count, then per variable: string name, u8 rank, u32 × rank shape, u8
//! dtype, u32 byte length, data; then u32 alias count and (alias, target) string pairs.
//! A string is a u16 length followed by that many bytes, the last a NUL.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::AsrError;

/// The model.bin versions this reader knows.
const SUPPORTED_BINARY_VERSIONS: std::ops::RangeInclusive<u32> = 5..=6;
/// Whisper's token vocabulary size with and without the language tokens.
const MULTILINGUAL_VOCAB: usize = 51_865;

/// One variable of a CTranslate2 model.
struct Variable {
    shape: Vec<usize>,
    dtype: DType,
    /// Small integer scalars (head counts, flags); tensors are read into `data`. Shared
    /// with the variable's aliases, so that a file of many aliases costs no copies.
    data: Arc<[u8]>,
}

/// Reads `model.bin`: every variable by name, aliases resolved.
fn read_model_bin(bytes: &[u8]) -> Result<HashMap<String, Variable>, AsrError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u32()?;
    if !SUPPORTED_BINARY_VERSIONS.contains(&version) {
        return Err(AsrError::Import(format!(
            "model.bin has binary version {version}; this importer reads versions 5 and 6"
        )));
    }
    let spec = reader.string()?;
    if spec != "WhisperSpec" {
        return Err(AsrError::Import(format!(
            "model.bin holds a {spec}, not a WhisperSpec"
        )));
    }
    let _revision = reader.u32()?;
    let count = reader.u32()?;
    let mut variables = HashMap::new();
    for _ in 0..count {
        let name = reader.string()?;
        let rank = reader.u8()? as usize;
        let shape = (0..rank)
            .map(|_| reader.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = match reader.u8()? {
            0 => DType::F32,
            1 => DType::U8, // int8: only scalars use it here; tensors would need scales
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            other => {
                return Err(AsrError::Import(format!(
                    "{name}: unknown dtype code {other}"
                )))
            }
        };
        let length = reader.u32()? as usize;
        let needed = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |bytes, &d| bytes.checked_mul(d));
        if needed != Some(length) {
            return Err(AsrError::Import(format!(
                "{name}: shape {shape:?} of {dtype:?} does not fit its {length} bytes"
            )));
        }
        let data = reader.take(length)?.into();
        variables.insert(name, Variable { shape, dtype, data });
    }
    let aliases = reader.u32().unwrap_or(0);
    for _ in 0..aliases {
        let alias = reader.string()?;
        let target = reader.string()?;
        let variable = variables
            .get(&target)
            .ok_or_else(|| AsrError::Import(format!("alias {alias} points at missing {target}")))?;
        let copy = Variable {
            shape: variable.shape.clone(),
            dtype: variable.dtype,
            data: Arc::clone(&variable.data),
        };
        variables.insert(alias, copy);
    }
    Ok(variables)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AsrError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                AsrError::Import(format!(
                    "model.bin ends early: wanted {n} bytes at offset {}",
                    self.at
                ))
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, AsrError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AsrError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, AsrError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, AsrError> {
        let length = self.u16()? as usize;
        let bytes = self.take(length)?;
        let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(text.to_vec())
            .map_err(|_| AsrError::Import("a name in model.bin is not UTF-8".into()))
    }
}

/// Turns CTranslate2 variables into Hugging Face tensors.
struct Converter {
    variables: HashMap<String, Variable>,
    out: BTreeMap<String, Tensor>,
}

impl Converter {
    fn tensor(&self, name: &str) -> Result<Tensor, AsrError> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| AsrError::MissingTensor(name.to_string()))?;
        Tensor::from_raw_buffer(&v.data, v.dtype, &v.shape, &Device::Cpu)
            .map_err(|e| AsrError::Import(format!("{name}: {e}")))
    }

    fn scalar(&self, name: &str) -> Result<i64, AsrError> {
        let v = self
            .variables
            .get(name)
            .ok_or_else(|| AsrError::MissingTensor(name.to_string()))?;
        Ok(match (v.dtype, &v.data[..]) {
            (DType::U8, [b, ..]) => *b as i8 as i64,
            (DType::I16, [a, b, ..]) => i16::from_le_bytes([*a, *b]) as i64,
            (DType::I32, [a, b, c, d, ..]) => i32::from_le_bytes([*a, *b, *c, *d]) as i64,
            _ => return Err(AsrError::Import(format!("{name} is not an integer scalar"))),
        })
    }

    fn put(&mut self, name: String, tensor: Tensor) {
        self.out.insert(name, tensor);
    }

    fn copy(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        let tensor = self.tensor(from)?;
        self.put(to.to_string(), tensor);
        Ok(())
    }

    fn layer_norm(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        self.copy(&format!("{from}/gamma"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/beta"), &format!("{to}.bias"))
    }

    fn linear(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        self.copy(&format!("{from}/weight"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/bias"), &format!("{to}.bias"))
    }

    /// Splits a fused projection into `parts` equal row blocks. A `None` part name drops
    /// that block's bias (Whisper's key projection has none) after checking it is zero.
    fn split(&mut self, from: &str, to: &[(&str, bool)]) -> Result<(), AsrError> {
        let weight = self.tensor(&format!("{from}/weight"))?;
        let bias = self.tensor(&format!("{from}/bias"))?;
        let rows = weight.dim(0).map_err(candle)?;
        if rows % to.len() != 0 {
            return Err(AsrError::BadShape {
                name: format!("{from}/weight"),
                expected: format!("rows divisible by {}", to.len()),
                found: format!("{:?}", weight.dims()),
            });
        }
        let block = rows / to.len();
        for (i, (name, has_bias)) in to.iter().enumerate() {
            self.put(
                format!("{name}.weight"),
                weight.narrow(0, i * block, block).map_err(candle)?,
            );
            let part = bias.narrow(0, i * block, block).map_err(candle)?;
            if *has_bias {
                self.put(format!("{name}.bias"), part);
            } else {
                let largest = part
                    .to_dtype(DType::F32)
                    .and_then(|t| t.abs()?.max(0)?.to_scalar::<f32>())
                    .map_err(candle)?;
                if largest != 0.0 {
                    return Err(AsrError::Import(format!(
                        "{from}/bias: the key part should be zero (Whisper has no key bias) but reaches {largest}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A block's self-attention: its norm, the fused q/k/v and the output projection.
    fn self_attention(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        self.attention_common(
            &format!("{from}/self_attention"),
            &format!("{to}.self_attn"),
        )?;
        self.split(
            &format!("{from}/self_attention/linear_0"),
            &[
                (&format!("{to}.self_attn.q_proj"), true),
                (&format!("{to}.self_attn.k_proj"), false),
                (&format!("{to}.self_attn.v_proj"), true),
            ],
        )?;
        self.linear(
            &format!("{from}/self_attention/linear_1"),
            &format!("{to}.self_attn.out_proj"),
        )
    }

    /// A block's MLP and its norm.
    fn feed_forward(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        self.layer_norm(
            &format!("{from}/ffn/layer_norm"),
            &format!("{to}.final_layer_norm"),
        )?;
        self.linear(&format!("{from}/ffn/linear_0"), &format!("{to}.fc1"))?;
        self.linear(&format!("{from}/ffn/linear_1"), &format!("{to}.fc2"))
    }

    fn attention_common(&mut self, from: &str, to: &str) -> Result<(), AsrError> {
        self.layer_norm(&format!("{from}/layer_norm"), &format!("{to}_layer_norm"))
    }

    /// Layers of one side (`encoder` or `decoder`), counted by their feed-forward weights.
    fn count_layers(&self, side: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.variables
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }

    /// The encoder's stem, positions, layers and final norm.
    fn encoder(&mut self, layers: usize) -> Result<(), AsrError> {
        self.copy("encoder/conv1/weight", "model.encoder.conv1.weight")?;
        self.copy("encoder/conv1/bias", "model.encoder.conv1.bias")?;
        self.copy("encoder/conv2/weight", "model.encoder.conv2.weight")?;
        self.copy("encoder/conv2/bias", "model.encoder.conv2.bias")?;
        self.copy(
            "encoder/position_encodings/encodings",
            "model.encoder.embed_positions.weight",
        )?;
        for i in 0..layers {
            let (from, to) = (
                format!("encoder/layer_{i}"),
                format!("model.encoder.layers.{i}"),
            );
            self.self_attention(&from, &to)?;
            self.feed_forward(&from, &to)?;
        }
        self.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")?;
        Ok(())
    }

    /// The decoder's embeddings, layers (self- and cross-attention) and final norm.
    fn decoder(&mut self, layers: usize) -> Result<(), AsrError> {
        self.copy(
            "decoder/embeddings/weight",
            "model.decoder.embed_tokens.weight",
        )?;
        self.copy(
            "decoder/position_encodings/encodings",
            "model.decoder.embed_positions.weight",
        )?;
        for i in 0..layers {
            let (from, to) = (
                format!("decoder/layer_{i}"),
                format!("model.decoder.layers.{i}"),
            );
            self.self_attention(&from, &to)?;
            self.attention_common(&format!("{from}/attention"), &format!("{to}.encoder_attn"))?;
            self.linear(
                &format!("{from}/attention/linear_0"),
                &format!("{to}.encoder_attn.q_proj"),
            )?;
            self.split(
                &format!("{from}/attention/linear_1"),
                &[
                    (&format!("{to}.encoder_attn.k_proj"), false),
                    (&format!("{to}.encoder_attn.v_proj"), true),
                ],
            )?;
            self.linear(
                &format!("{from}/attention/linear_2"),
                &format!("{to}.encoder_attn.out_proj"),
            )?;
            self.feed_forward(&from, &to)?;
        }
        self.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")?;
        Ok(())
    }

    /// The Hugging Face `config.json`, derived from the converted shapes and CTranslate2's
    /// config.
    fn hf_config(
        &self,
        ct2_config: &Value,
        encoder_layers: usize,
        decoder_layers: usize,
    ) -> Result<Value, AsrError> {
        let dims = |name: &str, rank: usize| {
            let dims = self
                .out
                .get(name)
                .map(|t| t.dims().to_vec())
                .unwrap_or_default();
            if dims.len() == rank {
                Ok(dims)
            } else {
                Err(AsrError::BadShape {
                    name: name.to_string(),
                    expected: format!("{rank} dimensions"),
                    found: format!("{dims:?}"),
                })
            }
        };
        let embed = dims("model.decoder.embed_tokens.weight", 2)?;
        let (vocab_size, d_model) = (embed[0], embed[1]);
        let conv1 = dims("model.encoder.conv1.weight", 3)?;
        let heads = |side: &str| {
            self.scalar(&format!("{side}/num_heads"))
                .or_else(|_| self.scalar(&format!("{side}/layer_0/self_attention/num_heads")))
        };
        let encoder_heads = heads("encoder").unwrap_or((d_model / 64) as i64);
        let decoder_heads = heads("decoder").unwrap_or((d_model / 64) as i64);
        let ids = |key: &str| -> Value {
            match ct2_config.get(key) {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(other) => other.clone(),
                None => Value::Null,
            }
        };
        Ok(json!({
            "architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper",
            "activation_function": "gelu",
            "d_model": d_model,
            "encoder_layers": encoder_layers,
            "decoder_layers": decoder_layers,
            "encoder_attention_heads": encoder_heads,
            "decoder_attention_heads": decoder_heads,
            "encoder_ffn_dim": dims("model.encoder.layers.0.fc1.weight", 2)?[0],
            "decoder_ffn_dim": dims("model.decoder.layers.0.fc1.weight", 2)?[0],
            "num_mel_bins": conv1[1],
            "vocab_size": vocab_size,
            "max_source_positions": dims("model.encoder.embed_positions.weight", 2)?[0],
            "max_target_positions": dims("model.decoder.embed_positions.weight", 2)?[0],
            "is_multilingual": vocab_size >= MULTILINGUAL_VOCAB,
            "suppress_tokens": ids("suppress_ids"),
            "begin_suppress_tokens": ids("suppress_ids_begin"),
            "alignment_heads": ids("alignment_heads"),
            "lang_ids": ids("lang_ids"),
            "eos_token_id": 50256,
            "decoder_start_token_id": 50257,
            "torch_dtype": "float16",
        }))
    }
}

fn candle(error: candle_core::Error) -> AsrError {
    AsrError::Import(error.to_string())
}

/// Converts the CTranslate2 Whisper folder `from` into a Hugging Face folder `to`
/// (`model.safetensors`, `config.json`, `tokenizer.json`).
pub fn import(from: &Path, to: &Path) -> Result<(), AsrError> {
    let read = |name: &str| {
        std::fs::read(from.join(name)).map_err(|e| AsrError::Io {
            path: from.join(name),
            source: e,
        })
    };
    let converted = convert(&read("model.bin")?, &read("config.json")?)?;
    let tokenizer = read("tokenizer.json")?;
    std::fs::create_dir_all(to).map_err(|e| AsrError::Io {
        path: to.to_owned(),
        source: e,
    })?;
    candle_core::safetensors::save(&converted.tensors, to.join("model.safetensors"))
        .map_err(candle)?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(to.join(name), bytes).map_err(|e| AsrError::Io {
            path: to.join(name),
            source: e,
        })
    };
    write(
        "config.json",
        serde_json::to_string_pretty(&converted.config)
            .expect("serializable")
            .as_bytes(),
    )?;
    write("tokenizer.json", &tokenizer)?;
    Ok(())
}

/// A CTranslate2 model in the Hugging Face layout.
pub struct Converted {
    pub tensors: HashMap<String, Tensor>,
    /// What `config.json` holds.
    pub config: Value,
}

/// Converts a CTranslate2 `model.bin` and its `config.json`.
pub fn convert(model_bin: &[u8], ct2_config: &[u8]) -> Result<Converted, AsrError> {
    let variables = read_model_bin(model_bin)?;
    let ct2_config: Value = serde_json::from_slice(ct2_config)
        .map_err(|e| AsrError::Import(format!("config.json: {e}")))?;
    let mut c = Converter {
        variables,
        out: BTreeMap::new(),
    };
    let encoder_layers = c.count_layers("encoder");
    let decoder_layers = c.count_layers("decoder");
    if encoder_layers == 0 || decoder_layers == 0 {
        return Err(AsrError::MissingTensor(
            "encoder/layer_0/ffn/linear_0/weight".into(),
        ));
    }
    c.encoder(encoder_layers)?;
    c.decoder(decoder_layers)?;
    let config = c.hf_config(&ct2_config, encoder_layers, decoder_layers)?;
    Ok(Converted {
        tensors: c.out.into_iter().collect(),
        config,
    })
}
