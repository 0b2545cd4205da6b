//! Page tokens: where the next page starts, tied to its query and filters and signed
//! with a secret the engine draws when it starts, so that a client can hand back only a
//! token this server issued, for the query it was issued for. Paging stops
//! [`MAX_RESULT_WINDOW`] hits deep, as Elasticsearch's `max_result_window` does, so that
//! no token can make a search collect more than that.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::SearchError;

/// Deepest hit any page reaches.
pub const MAX_RESULT_WINDOW: usize = 1_000;

/// Bytes of the signature a token carries (128 bits).
const TAG_BYTES: usize = 16;

/// Issues and checks the tokens of one engine.
pub struct PageTokens {
    key: [u8; 32],
}

impl Default for PageTokens {
    fn default() -> Self {
        let mut key = [0u8; 32];
        // Without the system's randomness no token could be trusted; it does not fail on
        // the systems this runs on.
        getrandom::fill(&mut key).expect("the system's random source");
        Self { key }
    }
}

impl PageTokens {
    /// The token of the page starting at `offset`, or empty when that is past the window.
    pub fn issue(&self, offset: usize, query: &str, categories: &[String]) -> String {
        if offset >= MAX_RESULT_WINDOW {
            return String::new();
        }
        let tag = self.mac(offset, query, categories).finalize().into_bytes();
        format!("{offset}.{}", crate::hex::encode(&tag[..TAG_BYTES]))
    }

    /// Where the page of `token` starts (0 for an empty token).
    pub fn parse(
        &self,
        token: &str,
        query: &str,
        categories: &[String],
    ) -> Result<usize, SearchError> {
        if token.is_empty() {
            return Ok(0);
        }
        let invalid = || {
            SearchError::InvalidQuery(
                "page_token was not issued by this server for this query and filters (tokens \
                 last until the server restarts); start again from an empty token"
                    .into(),
            )
        };
        let (offset, hex) = token.split_once('.').ok_or_else(invalid)?;
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        if offset >= MAX_RESULT_WINDOW || hex.len() != 2 * TAG_BYTES {
            return Err(invalid());
        }
        let tag = crate::hex::decode(hex).ok_or_else(invalid)?;
        self.mac(offset, query, categories)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        Ok(offset)
    }

    fn mac(&self, offset: usize, query: &str, categories: &[String]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&(offset as u64).to_le_bytes());
        mac.update(query.as_bytes());
        for category in categories {
            mac.update(&[0x1f]);
            mac.update(category.as_bytes());
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_its_own_query_and_offset() {
        let tokens = PageTokens::default();
        let token = tokens.issue(20, "tokyo", &[]);
        assert_eq!(tokens.parse(&token, "tokyo", &[]).unwrap(), 20);
        assert!(tokens.parse(&token, "paris", &[]).is_err());
        assert!(tokens.parse(&token, "tokyo", &["city".into()]).is_err());
        let forged = token.replacen("20.", "1099511627776.", 1);
        assert!(tokens.parse(&forged, "tokyo", &[]).is_err());
        let moved = token.replacen("20.", "30.", 1);
        assert!(tokens.parse(&moved, "tokyo", &[]).is_err());
        assert!(PageTokens::default().parse(&token, "tokyo", &[]).is_err());
        for garbage in ["x", "5.", ".", "5.zz", "ü.ü", &"9".repeat(100)] {
            assert!(tokens.parse(garbage, "tokyo", &[]).is_err(), "{garbage}");
        }
        assert!(tokens.issue(MAX_RESULT_WINDOW, "tokyo", &[]).is_empty());
    }
}
