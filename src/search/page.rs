//! Page tokens: where the next page starts, tied to its query and filters and to the
//! catalog generation (commit opstamp) that issued it, and signed with a secret, so that a
//! client can hand back only a token a server with that secret issued, for the query it
//! was issued for. The secret is drawn at start unless every replica of a fleet is given
//! the same one, so that the next page may land on any replica. Paging stops
//! [`MAX_RESULT_WINDOW`] hits deep, as Elasticsearch's `max_result_window` does, so that
//! no token can make a search collect more than that.
//!
//! A token from an older generation than the replica's pages through the catalog as it is
//! now (as a scroll without a point in time does: a hit may move across the page break);
//! one from a newer generation than the replica has reached is refused as retryable
//! ([`SearchError::CatalogBehind`]), since another replica, or this one a moment later,
//! has it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::SearchError;

/// Deepest hit any page reaches.
pub const MAX_RESULT_WINDOW: usize = 1_000;

/// Bytes of the signature a token carries (128 bits).
const TAG_BYTES: usize = 16;

/// Fewest bytes a shared secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

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

/// A secret too short to sign page tokens with.
#[derive(Debug, thiserror::Error)]
#[error("the page token secret has {0} bytes; it needs at least {MIN_SECRET_BYTES} (for example `head -c 32 /dev/urandom | base64`)")]
pub struct ShortSecret(pub usize);

impl PageTokens {
    /// Tokens signed with a secret shared by every replica (its surrounding whitespace
    /// ignored, so that a file written by `echo` works).
    pub fn from_secret(secret: &[u8]) -> Result<Self, ShortSecret> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ShortSecret(secret.len()));
        }
        Ok(Self {
            key: Sha256::digest(secret).into(),
        })
    }

    /// The token of the page starting at `offset` of the catalog at `generation`, or
    /// empty when that is past the window.
    pub fn issue(
        &self,
        offset: usize,
        generation: u64,
        query: &str,
        categories: &[String],
    ) -> String {
        if offset >= MAX_RESULT_WINDOW {
            return String::new();
        }
        let tag = self
            .mac(offset, generation, query, categories)
            .finalize()
            .into_bytes();
        format!(
            "{offset}.{generation}.{}",
            crate::hex::encode(&tag[..TAG_BYTES])
        )
    }

    /// Where the page of `token` starts (0 for an empty token), for a replica whose
    /// catalog is at `generation`.
    pub fn parse(
        &self,
        token: &str,
        generation: u64,
        query: &str,
        categories: &[String],
    ) -> Result<usize, SearchError> {
        if token.is_empty() {
            return Ok(0);
        }
        let invalid = || {
            SearchError::InvalidQuery(
                "page_token was not issued for this query and filters by a server with this \
                 server's token secret (without --page-token-secret-file, tokens last until \
                 the server restarts); start again from an empty token"
                    .into(),
            )
        };
        let mut parts = token.splitn(3, '.');
        let (Some(offset), Some(issued), Some(hex)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let issued: u64 = issued.parse().map_err(|_| invalid())?;
        if offset >= MAX_RESULT_WINDOW || hex.len() != 2 * TAG_BYTES {
            return Err(invalid());
        }
        let tag = crate::hex::decode(hex).ok_or_else(invalid)?;
        self.mac(offset, issued, query, categories)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        if issued > generation {
            return Err(SearchError::CatalogBehind {
                wanted: issued,
                have: generation,
            });
        }
        Ok(offset)
    }

    fn mac(
        &self,
        offset: usize,
        generation: u64,
        query: &str,
        categories: &[String],
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&(offset as u64).to_le_bytes());
        mac.update(&generation.to_le_bytes());
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
        let token = tokens.issue(20, 7, "tokyo", &[]);
        assert_eq!(tokens.parse(&token, 7, "tokyo", &[]).unwrap(), 20);
        assert!(tokens.parse(&token, 7, "paris", &[]).is_err());
        assert!(tokens.parse(&token, 7, "tokyo", &["city".into()]).is_err());
        let forged = token.replacen("20.", "1099511627776.", 1);
        assert!(tokens.parse(&forged, 7, "tokyo", &[]).is_err());
        let moved = token.replacen("20.", "30.", 1);
        assert!(tokens.parse(&moved, 7, "tokyo", &[]).is_err());
        let regenerated = token.replacen(".7.", ".8.", 1);
        assert!(tokens.parse(&regenerated, 9, "tokyo", &[]).is_err());
        assert!(PageTokens::default()
            .parse(&token, 7, "tokyo", &[])
            .is_err());
        for garbage in ["x", "5.", ".", "5.zz", "5.1.zz", "ü.ü", &"9".repeat(100)] {
            assert!(tokens.parse(garbage, 7, "tokyo", &[]).is_err(), "{garbage}");
        }
        assert!(tokens.issue(MAX_RESULT_WINDOW, 7, "tokyo", &[]).is_empty());
    }

    #[test]
    fn replicas_sharing_a_secret_read_each_others_tokens_by_generation() {
        let secret = b"a secret every replica mounts\n";
        let issuer = PageTokens::from_secret(secret).unwrap();
        let other = PageTokens::from_secret(secret).unwrap();
        let token = issuer.issue(10, 5, "tokyo", &[]);
        assert_eq!(other.parse(&token, 5, "tokyo", &[]).unwrap(), 10);
        assert_eq!(other.parse(&token, 6, "tokyo", &[]).unwrap(), 10);
        assert!(matches!(
            other.parse(&token, 4, "tokyo", &[]),
            Err(SearchError::CatalogBehind { wanted: 5, have: 4 })
        ));
        assert!(PageTokens::from_secret(b"short   \n").is_err());
    }
}
