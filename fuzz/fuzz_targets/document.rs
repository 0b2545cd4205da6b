//! Any text as a catalog document: read or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_search::search::CatalogDocument;

fuzz_target!(|text: &str| {
    let _ = CatalogDocument::from_json_str(text);
});
