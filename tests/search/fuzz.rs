//! Mutated documents and page tokens: read or refused, never a panic, and no token opens
//! a page it was not issued for.

use voice_search::search::page::PageTokens;
use voice_search::search::CatalogDocument;

use crate::common::seeded::{Seeded, CASES};

#[test]
fn mutated_documents_are_read_or_refused_never_a_panic() {
    let document = br#"{"id": "song-1", "title": "Rock & Roll", "category": "song", "popularity": 12.5, "artist": "AC/DC", "body": "Written by A, B & C"}"#;
    let mut seed = Seeded(34);
    let mut refused = 0;
    for _ in 0..CASES {
        let bytes = seed.mutate(document);
        let text = String::from_utf8_lossy(&bytes);
        refused += usize::from(CatalogDocument::from_json_str(&text).is_err());
    }
    assert!(
        refused > 0 && refused < CASES,
        "mutations should both break and keep documents: {refused}"
    );
}

#[test]
fn mutated_page_tokens_never_open_another_page() {
    let tokens = PageTokens::default();
    let issued = tokens.issue(10, 3, "heat", &[]);
    let mut seed = Seeded(56);
    for case in 0..CASES {
        let token = String::from_utf8_lossy(&seed.mutate(issued.as_bytes())).into_owned();
        // The issued token itself, and the empty one (the first page by definition).
        if token == issued || token.is_empty() {
            continue;
        }
        // Only the page the token was issued for may come back (a spelling of the same
        // offset, say), never another.
        let parsed = tokens.parse(&token, 3, "heat", &[]);
        assert!(
            parsed.as_ref().map_or(true, |&offset| offset == 10),
            "case {case}: {token:?} gave {parsed:?}"
        );
    }
}
