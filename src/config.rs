//! Server settings: built-in defaults, overridden by an optional TOML file, overridden by
//! environment variables and flags (the command line merges the last two through clap).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::monitor::CaptureConfig;
use crate::session::SessionLimits;
use crate::workers::PoolSize;

/// Everything `voice-search serve` can be told. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Folder of the Whisper model (Hugging Face layout).
    pub model: PathBuf,
    /// Folder of the catalog index.
    pub index: PathBuf,
    /// Address of the Prometheus metrics endpoint.
    pub metrics_listen: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// How long in-flight calls may run on after SIGINT/SIGTERM, in seconds.
    pub shutdown_grace_seconds: u64,
    /// Longest utterance accepted, in seconds; longer ones get OUT_OF_RANGE.
    pub max_utterance_seconds: f64,
    /// TOML file replacing the built-in carrier phrases.
    pub carrier_phrases: Option<PathBuf>,
    /// Transcription worker threads (default: one per core).
    pub workers: usize,
    /// Utterances that may wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    pub queue_depth: usize,
    /// Audio one stream may carry in all, in seconds; beyond that, OUT_OF_RANGE.
    pub max_stream_seconds: f64,
    /// A stream with no message for this long is closed with DEADLINE_EXCEEDED.
    pub idle_timeout_seconds: f64,
    /// Streams open at once; beyond that, RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Load the built-in demo catalog when the index is empty at start.
    pub demo_catalog: bool,
    /// Reference profile for drift detection (`voice-search drift baseline`); without
    /// one, features are still windowed but nothing is compared.
    pub drift_baseline: Option<PathBuf>,
    /// Utterances in the rolling drift window.
    pub drift_window: usize,
    /// Folder where sampled utterances are kept for labelling; capture is off without it.
    pub capture_dir: Option<PathBuf>,
    /// Share of utterances captured, 0 to 1 (0: off).
    pub capture_fraction: f64,
    /// Largest total size of the capture folder, in MiB; the oldest go first.
    pub capture_max_mib: u64,
    /// Captures older than this many hours are deleted.
    pub capture_max_age_hours: f64,
}

/// Largest gRPC message: 30 s of 48 kHz stereo FLOAT32 is 11.5 MB, so 16 MiB carries any
/// utterance within the length limit in one message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("valid literal address"),
            model: PathBuf::from("models/whisper-tiny.en"),
            index: PathBuf::from("data/index"),
            metrics_listen: "127.0.0.1:9464".parse().expect("valid literal address"),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace_seconds: 10,
            max_utterance_seconds: 30.0,
            carrier_phrases: None,
            workers: PoolSize::default().workers,
            queue_depth: PoolSize::default().queue_depth,
            max_stream_seconds: 300.0,
            idle_timeout_seconds: 10.0,
            max_streams: 64,
            demo_catalog: true,
            drift_baseline: None,
            drift_window: 200,
            capture_dir: None,
            capture_fraction: 0.0,
            capture_max_mib: 1024,
            capture_max_age_hours: 24.0 * 7.0,
        }
    }
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl ServeConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_seconds)
    }

    pub fn pool_size(&self) -> PoolSize {
        PoolSize {
            workers: self.workers,
            queue_depth: self.queue_depth,
        }
    }

    /// The capture settings, when capture is on.
    pub fn capture(&self) -> Option<CaptureConfig> {
        let dir = self.capture_dir.clone()?;
        (self.capture_fraction > 0.0).then(|| CaptureConfig {
            dir,
            fraction: self.capture_fraction,
            max_bytes: self.capture_max_mib * 1024 * 1024,
            max_age: Duration::from_secs_f64(self.capture_max_age_hours * 3600.0),
        })
    }

    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_utterance_seconds: self.max_utterance_seconds,
            max_stream_seconds: self.max_stream_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_only_what_it_names() {
        let config: ServeConfig = toml::from_str("listen = \"127.0.0.1:6000\"").unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.index, ServeConfig::default().index);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ServeConfig>("lisen = \"127.0.0.1:6000\"").is_err());
    }
}
