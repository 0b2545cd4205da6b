//! Any bytes as a CTranslate2 `model.bin`: converted or refused, never a panic, and never
//! an allocation the file's own size does not pay for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_search::asr::ct2;

fuzz_target!(|model_bin: &[u8]| {
    let _ = ct2::convert(model_bin, br#"{"suppress_ids": [1, 2]}"#);
});
