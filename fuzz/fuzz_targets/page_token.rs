//! Any text as a page token: refused, never a panic, and never a page it was not issued
//! for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voice_search::search::page::PageTokens;

fuzz_target!(|token: &str| {
    let tokens = PageTokens::default();
    if !token.is_empty() {
        assert!(tokens.parse(token, "heat", &[]).is_err(), "a forged token was accepted");
    }
});
