//! Server settings: built-in defaults, overridden by an optional TOML file, overridden by
//! environment variables and flags (the command line merges the last two through clap).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::asr::{EncoderWindow, Precision};
use crate::fleet::Role;
use crate::monitor::CaptureConfig;
use crate::voice::{SessionLimits, VoiceLimits};
use crate::workers::PoolSize;

/// Declares every `serve` setting once. Each entry's name is its TOML key; its flag
/// (`--kebab-case`) and environment variable (`VOICE_SEARCH_UPPER_CASE`) are derived from
/// it, and its doc and default become the flag's help. Adding a setting is one entry.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr $(, shown $shown:literal)?; )+) => {
        /// Everything `voice-search serve` can be told. Field names are the TOML keys.
        #[derive(Debug, Clone, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct ServeConfig {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        impl Default for ServeConfig {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        /// The settings as flags and environment variables: each one given replaces what
        /// the file or the default says.
        #[derive(Debug, Default, clap::Args)]
        pub struct ServeFlags {
            $(
                #[arg(
                    long,
                    env = env_name(stringify!($name)),
                    value_name = <$ty as Setting>::VALUE_NAME,
                    help = help(&[$($doc),+], settings!(@shown $name $(, $shown)?)),
                )]
                pub $name: Option<FlagValue<$ty>>,
            )+
        }

        impl ServeFlags {
            /// Puts every flag or variable given into `config`.
            pub fn apply(self, config: &mut ServeConfig) {
                $(
                    if let Some(value) = self.$name {
                        config.$name = Setting::from_flag(value);
                    }
                )+
            }
        }
    };
    (@shown $name:ident, $shown:literal) => { $shown.to_string() };
    (@shown $name:ident) => { Setting::shown(&ServeConfig::default().$name) };
}

settings! {
    /// gRPC address.
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 50051));
    /// Folder of the Whisper model (Hugging Face layout).
    model: PathBuf = PathBuf::from("models/whisper-tiny.en");
    /// Folder of the catalog index.
    index: PathBuf = PathBuf::from("data/index");
    /// Matrix products of the speech model: `f32`, `int8-output`, `int8-decoder`, `bf16-int8` or `int8`
    /// (8 bits need AVX-512 VNNI or AVX2, bfloat16 AVX-512 BF16).
    precision: Precision = Precision::fastest(), shown "bf16-int8 with AVX-512 VNNI and BF16, int8-decoder with VNNI only, else f32";
    /// How much of the 30 s window the encoder computes: `short` (the speech and a
    /// padding tail, the rest from a silent pass made at load; the whole window when
    /// decoding loops) or `full`.
    encoder_window: EncoderWindow = EncoderWindow::default();
    /// Address of the Prometheus metrics endpoint.
    metrics_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9464));
    /// Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: usize = DEFAULT_MAX_MESSAGE_BYTES;
    /// Seconds in-flight calls may run on after SIGINT/SIGTERM.
    shutdown_grace_seconds: u64 = 10;
    /// Longest utterance in seconds; longer ones get OUT_OF_RANGE.
    max_utterance_seconds: f64 = 30.0;
    /// TOML file replacing the built-in carrier phrases (see src/search/intent.rs).
    carrier_phrases: Option<PathBuf> = None, shown "the built-in list";
    /// Transcription worker threads.
    workers: usize = PoolSize::default().workers, shown "one per core";
    /// Utterances that may wait for a worker; more get RESOURCE_EXHAUSTED.
    queue_depth: usize = PoolSize::default().queue_depth, shown "4 per worker";
    /// Audio one stream may carry, and time it may stay open, in seconds; beyond that,
    /// OUT_OF_RANGE.
    max_stream_seconds: f64 = 300.0;
    /// Seconds a stream owed nothing may stay silent before DEADLINE_EXCEEDED.
    idle_timeout_seconds: f64 = 10.0;
    /// Streams open at once; more get RESOURCE_EXHAUSTED.
    max_streams: usize = 64;
    /// Client connections open at once; one more is closed as soon as it is accepted.
    max_connections: usize = 1024;
    /// Client connections one address may hold open at once. Behind a proxy or a NAT
    /// every connection comes from its address: raise this there, up to
    /// `max_connections`.
    max_connections_per_address: usize = 256;
    /// Seconds a new connection has to make its first request, the TLS handshake, the
    /// HTTP/2 preface and the headers included; then it is closed.
    connection_start_seconds: f64 = 10.0;
    /// Calls one HTTP/2 connection may have open at once (its
    /// SETTINGS_MAX_CONCURRENT_STREAMS); a client queues any more.
    max_calls_per_connection: usize = 100;
    /// Seconds a call's request body may stop arriving before the call ends with
    /// DEADLINE_EXCEEDED (a voice stream's pauses are `idle_timeout_seconds` instead).
    body_idle_seconds: f64 = 10.0;
    /// Bytes of unfinished request messages one connection may hold at once; a call
    /// that would go past it ends with RESOURCE_EXHAUSTED.
    max_connection_body_bytes: usize = 4 * DEFAULT_MAX_MESSAGE_BYTES;
    /// Seconds between HTTP/2 pings on a quiet connection, and how long an answer may
    /// take before the connection is dropped.
    keepalive_seconds: f64 = 30.0;
    /// Load the built-in demo catalog when the index is empty at start.
    demo_catalog: bool = true;
    /// Key file (`voice-search keys add`); with it, every call but health and reflection
    /// needs a key whose role allows it.
    api_keys: Option<PathBuf> = None, shown "none, no key needed";
    /// Serve gRPC reflection (what grpcurl lists and describes).
    reflection: bool = true;
    /// Serve the voice search page at `/` on the gRPC port (browsers reach every
    /// service there through gRPC-Web).
    web: bool = true;
    /// Origins whose pages may call the server through gRPC-Web and open its WebSocket
    /// stream, comma-separated (`https://app.example.com`), or `*` for any.
    cors_origin: Vec<String> = Vec::new(), shown "none, only the page served here";
    /// PEM certificate chain for TLS; with `tls_key`, the server speaks only TLS.
    tls_cert: Option<PathBuf> = None, shown "none, plaintext";
    /// PEM private key of `tls_cert`.
    tls_key: Option<PathBuf> = None;
    /// PEM certificates of the authorities client certificates must chain to; with it,
    /// every client needs one (mutual TLS).
    tls_client_ca: Option<PathBuf> = None, shown "none, no client certificate needed";
    /// Reference profile for drift detection (`voice-search drift baseline`); without
    /// one, features are still windowed but nothing is compared.
    drift_baseline: Option<PathBuf> = None;
    /// Utterances in the rolling drift window.
    drift_window: usize = 200;
    /// Folder where sampled utterances are kept for labelling; capture is off without it.
    capture_dir: Option<PathBuf> = None, shown "none, capture off";
    /// Share of utterances captured, 0 to 1 (0: off).
    capture_fraction: f64 = 0.0;
    /// Largest total size of the capture folder, in MiB; the oldest go first.
    capture_max_mib: u64 = 1024;
    /// Captures older than this many hours are deleted.
    capture_max_age_hours: f64 = 24.0 * 7.0;
    /// What this server does with the catalog: `standalone` (its own index, read and
    /// written), `writer` (owns the index and the Catalog RPCs, and publishes each commit
    /// to the snapshot store) or `follower` (serves copies of the writer's commits from
    /// the snapshot store and refuses writes).
    role: Role = Role::Standalone;
    /// Where a writer publishes the catalog and followers copy it from:
    /// `s3://BUCKET/PREFIX` (with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION) or `file:///ABSOLUTE/PATH`.
    snapshot_store: Option<String> = None, shown "none";
    /// Milliseconds between a follower's looks at the newest catalog generation.
    snapshot_poll_ms: u64 = 500;
    /// Catalog generations a writer keeps in the snapshot store.
    snapshot_keep: usize = 5;
    /// Seconds a superseded generation stays in the snapshot store at least, so that a
    /// follower copying it can finish.
    snapshot_grace_seconds: f64 = 120.0;
    /// File holding the secret page tokens are signed with (16 bytes or more); every
    /// replica behind one balancer needs the same, so that a next page may land on any.
    page_token_secret_file: Option<PathBuf> = None, shown "none, a secret drawn at start";
    /// Seconds between SIGTERM (health turns NOT_SERVING) and closing the listener, so
    /// that a balancer's health checks stop new calls first; in a fleet, more than the
    /// balancer's check interval.
    drain_delay_seconds: f64 = 0.0;
}

/// Largest gRPC message: 30 s of 48 kHz stereo FLOAT32 is 11.5 MB, so 16 MiB carries any
/// utterance within the length limit in one message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The type of a setting as it comes from a flag or a variable, its default as help
/// shows it, and what a flag's value is called.
pub trait Setting {
    type Flag;
    const VALUE_NAME: &'static str;
    fn from_flag(flag: Self::Flag) -> Self;
    fn shown(&self) -> String;
}

/// A setting's type as a flag takes it.
pub type FlagValue<T> = <T as Setting>::Flag;

/// A setting whose flag takes its own type, its default shown by `$shown`.
macro_rules! plain_setting {
    ($ty:ty, $value_name:literal, |$value:ident| $shown:expr) => {
        impl Setting for $ty {
            type Flag = $ty;
            const VALUE_NAME: &'static str = $value_name;
            fn from_flag(flag: $ty) -> Self {
                flag
            }
            fn shown(&self) -> String {
                let $value = self;
                $shown
            }
        }
    };
}

plain_setting!(SocketAddr, "ADDR", |v| v.to_string());
plain_setting!(usize, "N", |v| v.to_string());
plain_setting!(u64, "N", |v| v.to_string());
plain_setting!(f64, "N", |v| v.to_string());
plain_setting!(bool, "BOOL", |v| v.to_string());
plain_setting!(PathBuf, "PATH", |v| v.display().to_string());
plain_setting!(Precision, "PRECISION", |v| v.to_string());
plain_setting!(EncoderWindow, "WINDOW", |v| v.to_string());
plain_setting!(Role, "ROLE", |v| v.to_string());

plain_setting!(String, "URL", |v| v.clone());

/// An optional setting: its flag takes the value itself, and its default shows "none".
impl<T: Setting<Flag = T>> Setting for Option<T> {
    type Flag = T;
    const VALUE_NAME: &'static str = T::VALUE_NAME;
    fn from_flag(flag: T) -> Self {
        Some(flag)
    }
    fn shown(&self) -> String {
        self.as_ref().map_or_else(|| "none".into(), T::shown)
    }
}

/// A list, given to a flag or a variable as one comma-separated value.
impl Setting for Vec<String> {
    type Flag = String;
    const VALUE_NAME: &'static str = "LIST";
    fn from_flag(flag: String) -> Self {
        flag.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect()
    }
    fn shown(&self) -> String {
        self.join(",")
    }
}

/// The environment variable of a setting.
fn env_name(setting: &str) -> String {
    format!("VOICE_SEARCH_{}", setting.to_uppercase())
}

/// A flag's help: the setting's doc, then its default.
fn help(doc: &[&str], default: String) -> String {
    let doc: Vec<&str> = doc.iter().map(|line| line.trim()).collect();
    format!("{} [default: {default}]", doc.join(" "))
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
    #[error("setting {name} = {value}: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: &'static str,
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

    /// Refuses settings no server can run with (a negative or endless timeout, no
    /// workers), naming the setting, rather than failing or panicking later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, value: &dyn std::fmt::Display, problem| {
            Err(ConfigError::Invalid {
                name,
                value: value.to_string(),
                problem,
            })
        };
        for (name, value) in [
            ("max_utterance_seconds", self.max_utterance_seconds),
            ("max_stream_seconds", self.max_stream_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("connection_start_seconds", self.connection_start_seconds),
            ("body_idle_seconds", self.body_idle_seconds),
            ("keepalive_seconds", self.keepalive_seconds),
            ("capture_max_age_hours", self.capture_max_age_hours),
        ] {
            // What a Duration can hold: finite, positive and below about 10^19 seconds.
            if !(value > 0.0 && Duration::try_from_secs_f64(value * 3600.0).is_ok()) {
                return invalid(name, &value, "must be a positive, finite number");
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_key", &"none", "tls_cert needs its key"),
            (None, Some(_)) => {
                return invalid("tls_cert", &"none", "tls_key needs its certificate")
            }
            (None, None) if self.tls_client_ca.is_some() => {
                return invalid(
                    "tls_cert",
                    &"none",
                    "tls_client_ca needs the server's own certificate",
                )
            }
            _ => {}
        }
        for (name, value) in [
            ("drain_delay_seconds", self.drain_delay_seconds),
            ("snapshot_grace_seconds", self.snapshot_grace_seconds),
        ] {
            if !(value >= 0.0 && Duration::try_from_secs_f64(value).is_ok()) {
                return invalid(name, &value, "must be 0 or a positive, finite number");
            }
        }
        match (self.role, &self.snapshot_store) {
            (Role::Writer | Role::Follower, None) => {
                return invalid(
                    "snapshot_store",
                    &"none",
                    "a writer or follower needs one (s3://BUCKET/PREFIX or file:///PATH)",
                )
            }
            (Role::Standalone, Some(url)) => {
                return invalid(
                    "snapshot_store",
                    url,
                    "only a writer or a follower uses it: add --role writer or --role follower",
                )
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.capture_fraction) {
            return invalid("capture_fraction", &self.capture_fraction, "must be 0 to 1");
        }
        if let Some(origin) = self.cors_origin.iter().find(|origin| !is_origin(origin)) {
            return invalid(
                "cors_origin",
                origin,
                "must be * or an origin such as https://app.example.com (scheme, host and port only)",
            );
        }
        for (name, value) in [
            ("workers", self.workers),
            ("max_streams", self.max_streams),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_calls_per_connection", self.max_calls_per_connection),
            ("max_connection_body_bytes", self.max_connection_body_bytes),
            ("drift_window", self.drift_window),
            ("max_message_bytes", self.max_message_bytes),
            ("snapshot_poll_ms", self.snapshot_poll_ms as usize),
            ("snapshot_keep", self.snapshot_keep),
        ] {
            if value == 0 {
                return invalid(name, &value, "must be at least 1");
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs_f64(self.drain_delay_seconds)
    }

    pub fn snapshot_poll(&self) -> Duration {
        Duration::from_millis(self.snapshot_poll_ms)
    }

    pub fn publish_settings(&self) -> crate::fleet::publish::PublishSettings {
        crate::fleet::publish::PublishSettings {
            keep: self.snapshot_keep,
            grace: Duration::from_secs_f64(self.snapshot_grace_seconds),
        }
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs_f64(self.keepalive_seconds)
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

    pub fn voice_limits(&self) -> VoiceLimits {
        VoiceLimits {
            session: SessionLimits {
                max_utterance_seconds: self.max_utterance_seconds,
                max_stream_seconds: self.max_stream_seconds,
            },
            idle_timeout: Duration::from_secs_f64(self.idle_timeout_seconds),
            max_streams: self.max_streams,
        }
    }
}

/// Whether `text` is `*` or a web origin: `http` or `https`, a host, maybe a port, no path.
fn is_origin(text: &str) -> bool {
    let Some(host) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return text == "*";
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
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

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        settings: ServeFlags,
    }

    #[test]
    fn a_flag_replaces_the_file_and_the_rest_stays() {
        use clap::Parser;
        let mut config: ServeConfig = toml::from_str("workers = 5\nmax_streams = 7").unwrap();
        let flags = Flags::try_parse_from([
            "serve",
            "--workers",
            "3",
            "--demo-catalog",
            "false",
            "--capture-dir",
            "/tmp/c",
            "--cors-origin",
            "https://app.example.com, http://localhost:5173",
        ])
        .unwrap();
        flags.settings.apply(&mut config);
        assert_eq!(
            (config.workers, config.max_streams, config.demo_catalog),
            (3, 7, false)
        );
        assert_eq!(config.capture_dir, Some(PathBuf::from("/tmp/c")));
        assert_eq!(
            config.cors_origin,
            ["https://app.example.com", "http://localhost:5173"]
        );
        assert!(config.validate().is_ok());
        assert_eq!(config.index, ServeConfig::default().index);
    }

    #[test]
    fn settings_no_server_can_run_with_are_refused_by_name() {
        assert!(ServeConfig::default().validate().is_ok());
        for toml_text in [
            "idle_timeout_seconds = -1.0",
            "keepalive_seconds = nan",
            "connection_start_seconds = 0.0",
            "max_stream_seconds = 1e300",
            "capture_fraction = 1.5",
            "max_connections = 0",
            "tls_cert = \"server.pem\"",
            "cors_origin = [\"https://app.example.com/path\"]",
            "snapshot_store = \"file:///tmp/store\"",
            "drain_delay_seconds = -1.0",
        ] {
            let config: ServeConfig = toml::from_str(toml_text).unwrap();
            let message = config.validate().unwrap_err().to_string();
            let name = toml_text.split(' ').next().unwrap();
            assert!(message.contains(name), "{toml_text}: {message}");
        }
    }

    #[test]
    fn a_writer_or_follower_needs_a_snapshot_store() {
        for role in ["writer", "follower"] {
            let config: ServeConfig = toml::from_str(&format!("role = \"{role}\"")).unwrap();
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("snapshot_store"), "{message}");
        }
        assert!(toml::from_str::<ServeConfig>("role = \"leader\"").is_err());
        let config: ServeConfig =
            toml::from_str("role = \"follower\"\nsnapshot_store = \"s3://bucket/fleet\"").unwrap();
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ServeConfig>("lisen = \"127.0.0.1:6000\"").is_err());
    }
}
