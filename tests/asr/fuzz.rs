//! Mutated CTranslate2 models: converted or refused, never a panic, and aliases shared
//! rather than copied.

use voice_search::asr::ct2;

use crate::asr::import::{synthetic, write_ct2};
use crate::common::seeded::{Seeded, CASES};

/// The synthetic CTranslate2 model's `model.bin`, with `extra` tensors.
fn ct2_model_bin(extra: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = synthetic(0.0);
    tensors.extend_from_slice(extra);
    write_ct2(dir.path(), &tensors, &[("encoder/num_heads", 2)]);
    std::fs::read(dir.path().join("model.bin")).unwrap()
}

const CT2_CONFIG: &[u8] = br#"{"suppress_ids": [1, 2]}"#;

#[test]
fn mutated_ct2_models_convert_or_are_refused_never_a_panic() {
    let model_bin = ct2_model_bin(&[]);
    ct2::convert(&model_bin, CT2_CONFIG).expect("the model itself converts");
    let mut seed = Seeded(78);
    let refused = (0..CASES)
        .filter(|_| ct2::convert(&seed.mutate(&model_bin), CT2_CONFIG).is_err())
        .count();
    assert!(
        refused > 0 && refused < CASES,
        "mutations should both break and keep models: {refused} refused"
    );
}

#[test]
fn aliases_share_their_tensor_instead_of_copying_it() {
    // 20,000 aliases of a 4 MB tensor: copied, 80 GB; shared, nothing.
    let big = (
        "extra/big".to_string(),
        vec![1 << 20],
        vec![0.0f32; 1 << 20],
    );
    let mut model_bin = ct2_model_bin(&[big]);
    // Replace the alias table `write_ct2` ends with (a count, then one pair of names).
    let string = |s: &str| {
        [
            &((s.len() + 1) as u16).to_le_bytes()[..],
            s.as_bytes(),
            &[0],
        ]
        .concat()
    };
    let table = [
        &1u32.to_le_bytes()[..],
        &string("decoder/projection/weight"),
        &string("decoder/embeddings/weight"),
    ]
    .concat();
    assert!(model_bin.ends_with(&table));
    model_bin.truncate(model_bin.len() - table.len());
    model_bin.extend(20_000u32.to_le_bytes());
    for i in 0..20_000 {
        model_bin.extend(string(&format!("alias/{i}")));
        model_bin.extend(string("extra/big"));
    }
    ct2::convert(&model_bin, CT2_CONFIG).expect("converts");
}
