//! Measurement: the evaluation manifest, word error rate, search success and latency, and
//! the JSON report other tools read (`"clips"`, `"overall"`, `"by_condition"`).

pub mod corrupt;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::monitor::UtteranceFeatures;
use crate::pipeline::CatalogDecision;

/// One clip of an evaluation manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestEntry {
    pub id: String,
    /// Audio path, resolved against the manifest's folder.
    pub audio: PathBuf,
    /// The reference transcript; empty for clips without speech.
    pub text: String,
    /// The catalog document the query should find, if it is a query.
    #[serde(default)]
    pub expected_doc: Option<String>,
    #[serde(default)]
    pub condition: String,
    /// Who spoke: `engine:voice` for synthesized clips ("festival:kal_diphone").
    #[serde(default)]
    pub speaker: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub duration_s: f64,
}

impl ManifestEntry {
    /// The speaker's family, the part before `:` (the synthesis engine), which is what
    /// a held-out set's other voices of one engine share.
    pub fn voice(&self) -> String {
        let family = self.speaker.split(':').next().unwrap_or_default();
        if family.is_empty() {
            "unknown".into()
        } else {
            family.to_string()
        }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads a JSON Lines manifest.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let mut entry: ManifestEntry =
                serde_json::from_str(line).map_err(|source| EvalError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    source,
                })?;
            entry.audio = base.join(&entry.audio);
            Ok(entry)
        })
        .collect()
}

/// What happened to one clip.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    pub id: String,
    pub condition: String,
    /// The speaker's family ([`ManifestEntry::voice`]).
    pub voice: String,
    pub kind: String,
    pub reference: String,
    pub hypothesis: String,
    pub expected_doc: Option<String>,
    /// Returned document ids, best first.
    pub hits: Vec<String>,
    pub audio_seconds: f64,
    pub latency_ms: f64,
    /// The model's no-speech probability and mean token log-probability, when audio was
    /// transcribed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_speech_prob: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_logprob: Option<f32>,
    /// The gRPC status code name when the request failed.
    /// The drift features (in-process audio runs), for `voice-search drift baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<UtteranceFeatures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Rescoring time of catalog biasing, in-process runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescore_ms: Option<f64>,
    /// What catalog biasing did: every candidate with its features and confidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<CatalogDecision>,
    /// Confidence of the first hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_confidence: Option<f32>,
}

/// Where a query's miss came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// The expected document was not among the candidates (or the hits, without
    /// catalog biasing).
    NotCandidate,
    /// Among the candidates, but another ranked above it.
    RankedBelow,
}

impl ClipResult {
    /// Why a query did not find its document first; `None` for a hit or a non-query.
    pub fn miss_reason(&self) -> Option<MissReason> {
        let expected = self.expected_doc.as_ref()?;
        if self.hits.first() == Some(expected) {
            return None;
        }
        Some(match &self.decision {
            Some(d) if !d.candidates.iter().any(|c| &c.id == expected) => MissReason::NotCandidate,
            Some(_) => MissReason::RankedBelow,
            None if self.hits.contains(expected) => MissReason::RankedBelow,
            None => MissReason::NotCandidate,
        })
    }
}

/// Figures over a set of clips.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub wer: f64,
    pub clips: usize,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    /// Processing time over audio time.
    pub rtf: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    /// Clips with an expected document.
    pub queries: usize,
    /// Share of queries whose expected document came first, and among the first five.
    pub top1: f64,
    pub top5: f64,
    /// Misses by where they came from.
    pub misses: BTreeMap<MissReason, usize>,
    /// p50 of the catalog biasing stage, in-process runs.
    pub rescore_ms_p50: f64,
}

/// How well the first hit's confidence matches how often it is right: clips binned by
/// confidence, and the expected calibration error (the bins' gaps, weighted by size).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Calibration {
    pub bins: Vec<CalibrationBin>,
    pub ece: f64,
    /// Clips with a first hit and a confidence.
    pub clips: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationBin {
    pub low: f64,
    pub high: f64,
    pub clips: usize,
    pub mean_confidence: f64,
    /// Share of the bin's first hits that were the expected document (a clip that
    /// expects none is never right).
    pub accuracy: f64,
}

/// Confidence bins of the reliability table.
const CALIBRATION_BINS: usize = 10;

impl Calibration {
    /// Over every clip whose first hit carries a confidence.
    pub fn of(clips: &[ClipResult]) -> Self {
        let scored: Vec<(f64, bool)> = clips
            .iter()
            .filter(|c| !c.hits.is_empty())
            .filter_map(|c| {
                let confidence = f64::from(c.top_confidence?);
                let right = c.expected_doc.is_some() && c.hits.first() == c.expected_doc.as_ref();
                Some((confidence, right))
            })
            .collect();
        let mut bins = Vec::new();
        let mut ece = 0.0;
        for b in 0..CALIBRATION_BINS {
            let (low, high) = (
                b as f64 / CALIBRATION_BINS as f64,
                (b + 1) as f64 / CALIBRATION_BINS as f64,
            );
            let inside: Vec<&(f64, bool)> = scored
                .iter()
                .filter(|(c, _)| {
                    (low..high).contains(c) || (b + 1 == CALIBRATION_BINS && *c >= high)
                })
                .collect();
            if inside.is_empty() {
                continue;
            }
            let n = inside.len() as f64;
            let mean_confidence = inside.iter().map(|(c, _)| c).sum::<f64>() / n;
            let accuracy = inside.iter().filter(|(_, right)| *right).count() as f64 / n;
            ece += n / scored.len() as f64 * (mean_confidence - accuracy).abs();
            bins.push(CalibrationBin {
                low,
                high,
                clips: inside.len(),
                mean_confidence,
                accuracy,
            });
        }
        Self {
            bins,
            ece,
            clips: scored.len(),
        }
    }

    /// The reliability table as Markdown.
    pub fn table(&self) -> String {
        let mut out = format!(
            "calibration of the first hit's confidence over {} clips: ECE {:.3}\n",
            self.clips, self.ece
        );
        out.push_str(
            "| confidence | clips | mean confidence | share right |\n| --- | --- | --- | --- |\n",
        );
        for bin in &self.bins {
            out.push_str(&format!(
                "| {:.1}-{:.1} | {} | {:.2} | {:.2} |\n",
                bin.low, bin.high, bin.clips, bin.mean_confidence, bin.accuracy
            ));
        }
        out
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clips: Vec<ClipResult>,
    pub overall: Summary,
    pub calibration: Calibration,
    pub by_condition: BTreeMap<String, Summary>,
    pub by_voice: BTreeMap<String, Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunInfo>,
}

/// How a run went as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// "in process", or "gRPC ADDR" for a run against a server.
    pub mode: String,
    /// Clips in flight at once.
    pub concurrency: usize,
    pub wall_seconds: f64,
    /// Clips finished per second of wall time.
    pub throughput_utterances_per_second: f64,
    /// Clips that failed, by gRPC status code (or other failure).
    pub errors_by_status: BTreeMap<String, usize>,
}

impl RunInfo {
    pub fn new(mode: &str, concurrency: usize, wall: std::time::Duration, clips: usize) -> Self {
        let wall_seconds = wall.as_secs_f64();
        Self {
            mode: mode.to_string(),
            concurrency,
            wall_seconds,
            throughput_utterances_per_second: clips as f64 / wall_seconds.max(1e-9),
            errors_by_status: BTreeMap::new(),
        }
    }
}

impl Report {
    pub fn new(clips: Vec<ClipResult>) -> Self {
        let by = |key: fn(&ClipResult) -> &String| {
            let mut groups: BTreeMap<String, Vec<&ClipResult>> = BTreeMap::new();
            for clip in &clips {
                groups.entry(key(clip).clone()).or_default().push(clip);
            }
            groups
                .into_iter()
                .map(|(k, v)| (k, summarize(&v)))
                .collect::<BTreeMap<_, _>>()
        };
        let by_condition = by(|clip| &clip.condition);
        let by_voice = by(|clip| &clip.voice);
        let overall = summarize(&clips.iter().collect::<Vec<_>>());
        Self {
            calibration: Calibration::of(&clips),
            clips,
            overall,
            by_condition,
            by_voice,
            run: None,
        }
    }

    /// Adds the run's figures; failed clips are counted by the code their error starts
    /// with ("ResourceExhausted: ...").
    pub fn with_run(mut self, mut run: RunInfo) -> Self {
        for error in self.clips.iter().filter_map(|c| c.error.as_deref()) {
            let code = error.split(':').next().unwrap_or(error).to_string();
            *run.errors_by_status.entry(code).or_default() += 1;
        }
        self.run = Some(run);
        self
    }

    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        let json = serde_json::to_string_pretty(self).expect("serializable");
        std::fs::write(path, json).map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// A short table: one row per condition, the overall figures, and one row per voice.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>5} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}  {}\n",
            "condition",
            "clips",
            "wer",
            "top1",
            "top5",
            "p50 ms",
            "p95 ms",
            "rescore",
            "misses: not candidate / ranked below"
        );
        let row = |name: &str, s: &Summary| {
            let miss = |reason| s.misses.get(&reason).copied().unwrap_or(0);
            format!(
                "{:<40} {:>5} {:>6.3} {:>6} {:>6} {:>8.1} {:>8.1} {:>8.1}  {} / {}\n",
                name,
                s.clips,
                s.wer,
                ratio(s.top1, s.queries),
                ratio(s.top5, s.queries),
                s.latency_ms_p50,
                s.latency_ms_p95,
                s.rescore_ms_p50,
                miss(MissReason::NotCandidate),
                miss(MissReason::RankedBelow),
            )
        };
        for (name, summary) in &self.by_condition {
            out.push_str(&row(name, summary));
        }
        out.push_str(&row("OVERALL", &self.overall));
        for (name, summary) in &self.by_voice {
            out.push_str(&row(&format!("voice {name}"), summary));
        }
        if let Some(run) = &self.run {
            out.push_str(&format!(
                "{}, concurrency {}: {:.2} utterances/s over {:.1} s; errors: {}\n",
                run.mode,
                run.concurrency,
                run.throughput_utterances_per_second,
                run.wall_seconds,
                if run.errors_by_status.is_empty() {
                    "none".to_string()
                } else {
                    format!("{:?}", run.errors_by_status)
                }
            ));
        }
        out
    }
}

fn ratio(value: f64, n: usize) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{value:.3}")
    }
}

fn summarize(clips: &[&ClipResult]) -> Summary {
    let (errors, words) = clips.iter().fold((0, 0), |(e, w), c| {
        let reference = wer_words(&c.reference);
        let hypothesis = wer_words(&c.hypothesis);
        (e + word_edits(&reference, &hypothesis), w + reference.len())
    });
    // Words produced where the reference is empty count as insertions.
    let wer = if words > 0 {
        errors as f64 / words as f64
    } else {
        errors as f64
    };
    // A failed clip has no latency to speak of.
    let latencies: Vec<f64> = clips
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.latency_ms)
        .collect();
    let audio_seconds: f64 = clips.iter().map(|c| c.audio_seconds).sum();
    let wall_seconds = latencies.iter().sum::<f64>() / 1000.0;
    let queries: Vec<_> = clips
        .iter()
        .filter_map(|c| Some((c.expected_doc.as_ref()?, &c.hits)))
        .collect();
    let share = |k: usize| {
        if queries.is_empty() {
            0.0
        } else {
            queries
                .iter()
                .filter(|(doc, hits)| hits.iter().take(k).any(|h| h == *doc))
                .count() as f64
                / queries.len() as f64
        }
    };
    Summary {
        wer,
        clips: clips.len(),
        audio_seconds,
        wall_seconds,
        rtf: if audio_seconds > 0.0 {
            wall_seconds / audio_seconds
        } else {
            0.0
        },
        latency_ms_p50: percentile(&latencies, 50.0),
        latency_ms_p95: percentile(&latencies, 95.0),
        queries: queries.len(),
        top1: share(1),
        top5: share(5),
        misses: clips.iter().filter_map(|c| c.miss_reason()).fold(
            BTreeMap::new(),
            |mut counts, reason| {
                *counts.entry(reason).or_default() += 1;
                counts
            },
        ),
        rescore_ms_p50: percentile(
            &clips
                .iter()
                .filter_map(|c| c.rescore_ms)
                .collect::<Vec<_>>(),
            50.0,
        ),
    }
}

/// Linear-interpolated percentile, as numpy computes it by default.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let k = (sorted.len() - 1) as f64 * p / 100.0;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

/// Words for WER: Unicode NFKC, lowercase, apostrophes dropped, other punctuation to
/// spaces; numbers are not rewritten ("7" and "seven" differ).
pub fn wer_words(text: &str) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let text: String = text.nfkc().collect::<String>().to_lowercase();
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\'' | '\u{2018}' | '\u{2019}' | '`' => {}
            c if c.is_alphanumeric() || c.is_whitespace() => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// Word-level edit distance.
pub fn word_edits(reference: &[String], hypothesis: &[String]) -> usize {
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut current = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            current[j + 1] = (previous[j + 1] + 1)
                .min(current[j] + 1)
                .min(previous[j] + usize::from(r != h));
        }
        previous = current;
    }
    previous[hypothesis.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_normalization_matches_the_peers() {
        assert_eq!(
            wer_words("Watch the show, saying Redemption."),
            ["watch", "the", "show", "saying", "redemption"]
        );
        assert_eq!(
            wer_words("Sweet Child O' Mine"),
            ["sweet", "child", "o", "mine"]
        );
        assert_eq!(wer_words("don't r.e.m."), ["dont", "r", "e", "m"]);
        assert_eq!(wer_words("7 of clubs"), ["7", "of", "clubs"]);
    }

    #[test]
    fn word_edits_count_substitutions_insertions_deletions() {
        let w = |s: &str| wer_words(s);
        assert_eq!(word_edits(&w("a b c"), &w("a x c")), 1);
        assert_eq!(word_edits(&w("a b c"), &w("a b c d")), 1);
        assert_eq!(word_edits(&w("a b c"), &w("c")), 2);
        assert_eq!(word_edits(&w(""), &w("thank you")), 2);
    }

    fn clip(confidence: f32, right: bool) -> ClipResult {
        ClipResult {
            id: String::new(),
            condition: String::new(),
            voice: String::new(),
            kind: String::new(),
            reference: String::new(),
            hypothesis: String::new(),
            expected_doc: Some("a".into()),
            hits: vec![if right { "a" } else { "b" }.into()],
            audio_seconds: 1.0,
            latency_ms: 1.0,
            no_speech_prob: None,
            avg_logprob: None,
            features: None,
            error: None,
            rescore_ms: None,
            decision: None,
            top_confidence: Some(confidence),
        }
    }

    #[test]
    fn clips_are_summarized_by_the_family_of_their_voice() {
        let entry = |speaker: &str| ManifestEntry {
            id: String::new(),
            audio: PathBuf::new(),
            text: String::new(),
            expected_doc: None,
            condition: String::new(),
            speaker: speaker.into(),
            kind: String::new(),
            duration_s: 0.0,
        };
        assert_eq!(entry("festival:kal_diphone").voice(), "festival");
        assert_eq!(entry("piper").voice(), "piper");
        assert_eq!(entry("").voice(), "unknown");
        let mut right = clip(0.9, true);
        right.voice = "festival".into();
        let mut wrong = clip(0.9, false);
        wrong.voice = "espeak".into();
        let report = Report::new(vec![right, wrong]);
        assert_eq!(report.by_voice["festival"].top1, 1.0);
        assert_eq!(report.by_voice["espeak"].top1, 0.0);
    }

    #[test]
    fn calibration_bins_confidence_against_how_often_it_is_right() {
        // Four at 0.95, three right; two at 0.15, neither right.
        let clips = vec![
            clip(0.95, true),
            clip(0.95, true),
            clip(0.95, true),
            clip(0.95, false),
            clip(0.15, false),
            clip(0.15, false),
        ];
        let calibration = Calibration::of(&clips);
        assert_eq!(calibration.clips, 6);
        assert_eq!(calibration.bins.len(), 2);
        assert_eq!(calibration.bins[1].clips, 4);
        assert!((calibration.bins[1].accuracy - 0.75).abs() < 1e-6);
        // |0.95 - 0.75| * 4/6 + |0.15 - 0| * 2/6
        assert!((calibration.ece - (0.2 * 4.0 / 6.0 + 0.15 * 2.0 / 6.0)).abs() < 1e-6);
        assert_eq!(Calibration::of(&[clip(1.0, true)]).bins[0].low, 0.9);
    }

    #[test]
    fn percentile_interpolates() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[5.0], 95.0), 5.0);
    }
}
