//! API keys: who may call what. A key file (TOML) lists each key's name, role and
//! SHA-256 hash, never the key itself, so a leaked file grants nothing. A presented key
//! is hashed and compared with every stored hash in constant time, so response timing
//! tells nothing about how close a guess came. A key may also carry a rate: calls per
//! minute, as many at once, refilled evenly (a token bucket, through the governor crate);
//! and a cap on the streams it holds open at once.
//! `voice-search keys add` draws a key, appends its hash and prints the key once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::hex;

/// What a key may do; a key holds one or more roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Search by voice or text, and read documents and catalog statistics.
    Search,
    /// Write and delete catalog documents.
    Catalog,
    /// Read the drift report.
    Monitor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Search => "search",
            Role::Catalog => "catalog",
            Role::Monitor => "monitor",
        }
    }
}

/// Why keys could not be read or added.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("key file {path}: key {name:?} has no valid sha256 (64 hex digits)")]
    BadHash { path: PathBuf, name: String },
    #[error("key file {path} already has a key named {name:?}")]
    Duplicate { path: PathBuf, name: String },
    #[error("a key name is 1 to 64 letters, digits, '-', '_' or '.': {0:?}")]
    BadName(String),
    #[error("a key needs at least one role")]
    NoRole,
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness for a new key: {0}")]
    Random(getrandom::Error),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    roles: Vec<Role>,
    sha256: String,
    calls_per_minute: Option<NonZeroU32>,
    max_streams: Option<NonZeroU32>,
}

/// A key as the server holds it.
struct StoredKey {
    name: String,
    roles: Vec<Role>,
    hash: [u8; 32],
    limit: Option<(NonZeroU32, DefaultDirectRateLimiter)>,
    streams: Option<(NonZeroU32, Arc<Semaphore>)>,
}

/// The keys a server accepts.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<StoredKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| (&key.name, &key.roles)))
            .finish()
    }
}

/// Who presented a known key.
pub struct Caller<'a> {
    pub name: &'a str,
    pub roles: &'a [Role],
    limit: Option<&'a (NonZeroU32, DefaultDirectRateLimiter)>,
    streams: Option<&'a (NonZeroU32, Arc<Semaphore>)>,
}

/// A key that has spent its calls for now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverLimit {
    pub calls_per_minute: u32,
    pub retry_after: Duration,
}

/// A key that holds as many streams open as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsFull {
    pub max_streams: u32,
}

impl Caller<'_> {
    /// A place for one more open stream, held until the permit drops (`None`: the key
    /// has no cap).
    pub fn open_stream(&self) -> Result<Option<OwnedSemaphorePermit>, StreamsFull> {
        let Some((max, places)) = self.streams else {
            return Ok(None);
        };
        places
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| StreamsFull {
                max_streams: max.get(),
            })
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Takes one call from the key's allowance, if it has a rate.
    pub fn take_call(&self) -> Result<(), OverLimit> {
        let Some((rate, limiter)) = self.limit else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| OverLimit {
            calls_per_minute: rate.get(),
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

impl KeyRing {
    /// Reads a key file; a missing file is an error, an empty one accepts no key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: KeyFile = toml::from_str(&text).map_err(|source| KeyError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let keys = file
            .key
            .into_iter()
            .map(|entry| {
                let hash = parse_hash(&entry.sha256).ok_or_else(|| KeyError::BadHash {
                    path: path.to_owned(),
                    name: entry.name.clone(),
                })?;
                Ok(StoredKey {
                    name: entry.name,
                    roles: entry.roles,
                    hash,
                    limit: entry
                        .calls_per_minute
                        .map(|rate| (rate, RateLimiter::direct(Quota::per_minute(rate)))),
                    streams: entry
                        .max_streams
                        .map(|max| (max, Arc::new(Semaphore::new(max.get() as usize)))),
                })
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who `presented` belongs to, if anyone. Every stored hash is compared, in
    /// constant time, whatever matches first.
    pub fn caller(&self, presented: &str) -> Option<Caller<'_>> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&hash)) {
                found = Some(Caller {
                    name: &key.name,
                    roles: &key.roles,
                    limit: key.limit.as_ref(),
                    streams: key.streams.as_ref(),
                });
            }
        }
        found
    }
}

/// What a new key may spend; `None` is no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyLimits {
    pub calls_per_minute: Option<NonZeroU32>,
    pub max_streams: Option<NonZeroU32>,
}

/// Draws a new key with `roles` named `name`, within `limits`, appends its hash to the
/// key file at `path` (created if missing) and returns the key, which is stored nowhere
/// else.
pub fn add_key(
    path: &Path,
    name: &str,
    roles: &[Role],
    limits: KeyLimits,
) -> Result<String, KeyError> {
    if roles.is_empty() {
        return Err(KeyError::NoRole);
    }
    let valid_name = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        return Err(KeyError::BadName(name.to_string()));
    }
    if path.exists() {
        let ring = KeyRing::load(path)?;
        if ring.keys.iter().any(|k| k.name == name) {
            return Err(KeyError::Duplicate {
                path: path.to_owned(),
                name: name.to_string(),
            });
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(KeyError::Random)?;
    let key = format!("vsk_{}", hex::encode(&secret));
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{}\"", r.name())).collect();
    let mut entry = format!(
        "\n[[key]]\nname = \"{name}\"\nroles = [{}]\nsha256 = \"{}\"\n",
        roles.join(", "),
        hex::encode(&Sha256::digest(key.as_bytes()))
    );
    if let Some(rate) = limits.calls_per_minute {
        let _ = writeln!(entry, "calls_per_minute = {rate}");
    }
    if let Some(max) = limits.max_streams {
        let _ = writeln!(entry, "max_streams = {max}");
    }
    let write_error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(entry.as_bytes()))
        .map_err(write_error)?;
    Ok(key)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_key_is_known_by_its_role_and_its_file_holds_no_key() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("keys.toml");
        let search = add_key(&path, "phone-app", &[Role::Search], KeyLimits::default()).unwrap();
        let loader = add_key(
            &path,
            "loader",
            &[Role::Search, Role::Catalog],
            KeyLimits::default(),
        )
        .unwrap();
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.len(), 2);
        let caller = ring.caller(&search).unwrap();
        assert_eq!(
            (caller.name, caller.roles),
            ("phone-app", &[Role::Search][..])
        );
        let caller = ring.caller(&loader).unwrap();
        assert!(
            caller.has(Role::Catalog) && caller.has(Role::Search) && !caller.has(Role::Monitor)
        );
        assert!(ring.caller("vsk_guess").is_none());
        assert!(ring.caller(&search[..search.len() - 1]).is_none());
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(!file.contains(&search[4..]) && !file.contains(&loader[4..]));
        assert!(matches!(
            add_key(&path, "phone-app", &[Role::Catalog], KeyLimits::default()),
            Err(KeyError::Duplicate { .. })
        ));
        assert!(matches!(
            add_key(&path, "a b", &[Role::Catalog], KeyLimits::default()),
            Err(KeyError::BadName(_))
        ));
        assert!(matches!(
            add_key(&path, "none", &[], KeyLimits::default()),
            Err(KeyError::NoRole)
        ));
    }

    #[test]
    fn a_limited_key_gets_its_calls_then_a_wait_and_its_streams_then_no_more() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("keys.toml");
        let limits = KeyLimits {
            calls_per_minute: NonZeroU32::new(2),
            max_streams: NonZeroU32::new(1),
        };
        let key = add_key(&path, "batch", &[Role::Search], limits).unwrap();
        let ring = KeyRing::load(&path).unwrap();
        let caller = ring.caller(&key).unwrap();
        assert_eq!(caller.take_call(), Ok(()));
        assert_eq!(caller.take_call(), Ok(()));
        let over = caller.take_call().unwrap_err();
        assert_eq!(over.calls_per_minute, 2);
        assert!(over.retry_after > Duration::ZERO && over.retry_after <= Duration::from_secs(30));
        let stream = caller.open_stream().unwrap();
        assert!(stream.is_some());
        assert_eq!(
            caller.open_stream().unwrap_err(),
            StreamsFull { max_streams: 1 }
        );
        drop(stream);
        assert!(
            caller.open_stream().is_ok(),
            "a closed stream gives its place back"
        );
    }

    #[test]
    fn a_malformed_hash_is_refused_with_the_key_name() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("keys.toml");
        std::fs::write(
            &path,
            "[[key]]\nname = \"x\"\nroles = [\"catalog\"]\nsha256 = \"abc\"\n",
        )
        .unwrap();
        let message = KeyRing::load(&path).unwrap_err().to_string();
        assert!(message.contains("\"x\""), "{message}");
    }
}
