//! Any text as a carrier-phrase file, then as a query split by what it parsed: an error
//! or a split, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_search::search::CarrierPhrases;

fuzz_target!(|text: &str| {
    if let Ok(phrases) = toml::from_str::<CarrierPhrases>(text) {
        let _ = phrases.split(text);
        let _ = phrases.interpret(text);
    }
});
