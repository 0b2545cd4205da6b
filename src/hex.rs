//! Lowercase hexadecimal, for the secrets and digests that travel as text (page tokens,
//! API keys and their hashes).

use std::fmt::Write as _;

pub fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The bytes `text` spells in hexadecimal; `None` unless it is all hex digit pairs.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would also take a sign ("+1").
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_round_trip_and_anything_else_is_refused() {
        assert_eq!(super::encode(&[0, 0xab, 0x7f]), "00ab7f");
        assert_eq!(super::decode("00ab7f"), Some(vec![0, 0xab, 0x7f]));
        for bad in ["abc", "zz", "+1", "é1"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
