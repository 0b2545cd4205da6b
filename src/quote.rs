//! Client input quoted in error messages: at most a short prefix, so that a status message
//! stays small whatever was sent (a huge one would exceed the client's metadata limit and
//! turn a precise status into RESOURCE_EXHAUSTED).

/// Characters of client input an error message quotes.
const QUOTED_CHARS: usize = 48;

/// `text` as a quoted string, cut after a short prefix (saying how long it was).
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut_and_short_input_kept() {
        assert_eq!(quote("en"), "\"en\"");
        let long = "é".repeat(100_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 150, "{quoted}");
        assert!(quoted.ends_with("(200000 bytes)"), "{quoted}");
    }
}
