//! The data loop: a configurable share of utterances kept on disk (audio, transcript,
//! hits, drift features) for labelling and the next model round, within a total size and
//! an age. Off unless a folder and a share are configured.
//!
//! Each utterance is two files named by capture time: `ID.wav` (the audio as decoded, at
//! its own rate and channels, 32-bit float) and `ID.json` ([`CapturedUtterance`]).
//! [`labelling_manifest`] lists them in the eval manifest format, transcripts pre-filled,
//! for labellers to correct into `manifest.jsonl` next to them; `voice-search eval
//! --manifest DIR/manifest.jsonl` then measures the model on real traffic.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::features::UtteranceFeatures;
use crate::audio;

/// Why capture failed; the utterance itself is never affected.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("capturing audio: {0}")]
    Audio(String),
}

/// Where and how much to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub dir: PathBuf,
    /// Share of utterances kept, 0 to 1.
    pub fraction: f64,
    /// The folder's total size limit; the oldest captures go first.
    pub max_bytes: u64,
    /// Captures older than this are deleted.
    pub max_age: Duration,
}

/// The record kept next to each captured WAV.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapturedUtterance {
    pub id: String,
    pub captured_at_unix_ms: u64,
    /// File name of the audio, in the same folder.
    pub audio: String,
    pub transcript: String,
    /// Document ids of the hits, best first.
    pub hits: Vec<String>,
    pub features: UtteranceFeatures,
}

struct Stored {
    id: String,
    at: SystemTime,
    bytes: u64,
}

struct State {
    seen: u64,
    sequence: u64,
    stored: VecDeque<Stored>,
    total_bytes: u64,
}

/// The capture folder and its bounds.
pub struct Capture {
    config: CaptureConfig,
    state: Mutex<State>,
}

impl Capture {
    /// Opens (or creates) the folder, takes stock of earlier captures and applies the
    /// bounds to them.
    pub fn open(config: CaptureConfig) -> Result<Self, CaptureError> {
        let io = |source| CaptureError::Io {
            path: config.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let mut stored: Vec<Stored> = Vec::new();
        for entry in std::fs::read_dir(&config.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let Ok(record) = std::fs::read_to_string(&path)
                    .map_err(|_| ())
                    .and_then(|t| serde_json::from_str::<CapturedUtterance>(&t).map_err(|_| ()))
                else {
                    continue;
                };
                stored.push(Stored {
                    id: id.to_string(),
                    at: UNIX_EPOCH + Duration::from_millis(record.captured_at_unix_ms),
                    bytes: files_size(&config.dir, id),
                });
            }
        }
        stored.sort_by_key(|s| s.at);
        let total_bytes = stored.iter().map(|s| s.bytes).sum();
        let capture = Self {
            config,
            state: Mutex::new(State {
                seen: 0,
                sequence: 0,
                stored: stored.into(),
                total_bytes,
            }),
        };
        capture.prune(&mut capture.state.lock().expect("not poisoned"));
        Ok(capture)
    }

    /// Whether this utterance is one of the configured share (every 1/fraction-th one).
    pub fn wants(&self) -> bool {
        let mut state = self.state.lock().expect("not poisoned");
        state.seen += 1;
        let f = self.config.fraction.clamp(0.0, 1.0);
        (state.seen as f64 * f).floor() > ((state.seen - 1) as f64 * f).floor()
    }

    /// Keeps one utterance, then deletes the oldest captures beyond the bounds.
    pub fn store(
        &self,
        decoded: &audio::Decoded,
        transcript: &str,
        hits: Vec<String>,
        features: UtteranceFeatures,
    ) -> Result<(), CaptureError> {
        let wav = float_wav(decoded)?;
        let now = SystemTime::now();
        let unix_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut state = self.state.lock().expect("not poisoned");
        state.sequence += 1;
        let id = format!("{unix_ms:013}-{:06}", state.sequence % 1_000_000);
        let record = CapturedUtterance {
            id: id.clone(),
            captured_at_unix_ms: unix_ms,
            audio: format!("{id}.wav"),
            transcript: transcript.to_string(),
            hits,
            features,
        };
        let json = serde_json::to_vec_pretty(&record).expect("serializable");
        let io = |source| CaptureError::Io {
            path: self.config.dir.clone(),
            source,
        };
        std::fs::write(self.config.dir.join(&record.audio), &wav).map_err(io)?;
        std::fs::write(self.config.dir.join(format!("{id}.json")), &json).map_err(io)?;
        let size = (wav.len() + json.len()) as u64;
        state.stored.push_back(Stored {
            id,
            at: now,
            bytes: size,
        });
        state.total_bytes += size;
        self.prune(&mut state);
        Ok(())
    }

    /// Total bytes of the captures kept.
    pub fn total_bytes(&self) -> u64 {
        self.state.lock().expect("not poisoned").total_bytes
    }

    fn prune(&self, state: &mut State) {
        let now = SystemTime::now();
        while let Some(oldest) = state.stored.front() {
            let too_old = now.duration_since(oldest.at).unwrap_or_default() > self.config.max_age;
            if state.total_bytes <= self.config.max_bytes && !too_old {
                break;
            }
            let oldest = state.stored.pop_front().expect("just seen");
            state.total_bytes -= oldest.bytes;
            for extension in ["wav", "json"] {
                let path = self.config.dir.join(format!("{}.{extension}", oldest.id));
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not delete an old capture");
                }
            }
        }
    }
}

fn files_size(dir: &Path, id: &str) -> u64 {
    ["wav", "json"]
        .iter()
        .filter_map(|e| std::fs::metadata(dir.join(format!("{id}.{e}"))).ok())
        .map(|m| m.len())
        .sum()
}

fn float_wav(decoded: &audio::Decoded) -> Result<Vec<u8>, CaptureError> {
    let spec = hound::WavSpec {
        channels: decoded.channels,
        sample_rate: decoded.sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut cursor = Cursor::new(Vec::new());
    let error = |e: hound::Error| CaptureError::Audio(e.to_string());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).map_err(error)?;
    for &sample in &decoded.samples {
        writer.write_sample(sample).map_err(error)?;
    }
    writer.finalize().map_err(error)?;
    Ok(cursor.into_inner())
}

/// The captures in `dir` as eval manifest lines, the transcript as the text to correct
/// and the first hit as the document to confirm.
pub fn labelling_manifest(dir: &Path) -> Result<String, CaptureError> {
    let io = |source| CaptureError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut records: Vec<CapturedUtterance> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            if let Ok(record) = serde_json::from_str::<CapturedUtterance>(&text) {
                records.push(record);
            }
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "audio": r.audio,
                "text": r.transcript,
                "expected_doc": r.hits.first(),
                "condition": "captured",
                "kind": "query",
                "duration_s": r.features.duration_seconds,
            })
            .to_string()
                + "\n"
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> UtteranceFeatures {
        UtteranceFeatures {
            duration_seconds: 0.1,
            loudness_dbfs: -20.0,
            clipped_fraction: 0.0,
            snr_db: 30.0,
            sample_rate_hz: 16_000,
            channels: 1,
            encoding: "LINEAR16".into(),
            no_speech_probability: 0.1,
            avg_logprob: None,
            words: 0,
            unknown_word_share: None,
            top_hit_score: None,
            no_hit: true,
        }
    }

    #[test]
    fn captures_older_than_the_age_limit_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let capture = Capture::open(CaptureConfig {
            dir: dir.path().to_owned(),
            fraction: 1.0,
            max_bytes: u64::MAX,
            max_age: Duration::from_millis(200),
        })
        .unwrap();
        let audio = audio::Decoded {
            samples: vec![0.0; 1600],
            sample_rate: 16_000,
            channels: 1,
        };
        assert!(capture.wants());
        capture.store(&audio, "", Vec::new(), features()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        capture.store(&audio, "", Vec::new(), features()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A restart takes stock of what is on disk and applies the bounds.
        std::thread::sleep(Duration::from_millis(300));
        let reopened = Capture::open(CaptureConfig {
            dir: dir.path().to_owned(),
            fraction: 1.0,
            max_bytes: u64::MAX,
            max_age: Duration::from_millis(200),
        })
        .unwrap();
        assert_eq!(reopened.total_bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_fraction_is_kept_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let capture = Capture::open(CaptureConfig {
            dir: dir.path().to_owned(),
            fraction: 0.25,
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(60),
        })
        .unwrap();
        let kept = (0..100).filter(|_| capture.wants()).count();
        assert_eq!(kept, 25);
    }
}
