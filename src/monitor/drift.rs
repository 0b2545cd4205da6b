//! Drift: the features of recent utterances compared with a reference profile by the
//! population stability index (PSI), feature by feature.
//!
//! A [`Baseline`] holds, per feature, the bins of the reference: deciles for numbers, the
//! categories seen for categories, and a bin for "missing" either way. The
//! [`DriftMonitor`] keeps a rolling window of the latest utterances and scores it against
//! the baseline: PSI = Σ (current − reference) · ln(current / reference) over the bins,
//! both shares smoothed by half an utterance per bin so that an empty bin stays finite.
//! Usual reading: below 0.1 stable, 0.1 to 0.25 worth watching, above 0.25 drifted.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::features::{FeatureValue, UtteranceFeatures};

/// PSI from which a feature is worth watching, and from which it has drifted.
pub const WATCH_PSI: f64 = 0.1;
pub const DRIFT_PSI: f64 = 0.25;
/// Quantile bins per numeric feature.
const NUMERIC_BINS: usize = 10;
/// Added to every bin's count before shares are taken.
const SMOOTHING: f64 = 0.5;
const MISSING: &str = "(missing)";

/// Why a baseline cannot be used or made.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a drift baseline: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("a baseline needs at least one utterance")]
    Empty,
}

/// How one feature's values are binned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bins {
    /// Upper edges of all but the last numeric bin; a missing-value bin follows the last.
    Numeric { edges: Vec<f64> },
    /// One bin per category, then "(other)", then "(missing)".
    Categorical { categories: Vec<String> },
}

impl Bins {
    fn len(&self) -> usize {
        match self {
            Bins::Numeric { edges } => edges.len() + 2,
            Bins::Categorical { categories } => categories.len() + 2,
        }
    }

    fn bin(&self, value: &FeatureValue) -> usize {
        match (self, value) {
            (_, FeatureValue::Missing) => self.len() - 1,
            (Bins::Numeric { edges }, FeatureValue::Number(v)) => {
                edges.iter().take_while(|&&edge| *v > edge).count()
            }
            (Bins::Categorical { categories }, FeatureValue::Category(c)) => categories
                .iter()
                .position(|known| known == c)
                .unwrap_or(categories.len()),
            // A value of the other kind cannot be placed; count it as missing.
            _ => self.len() - 1,
        }
    }

    fn shares(&self, values: &[FeatureValue]) -> Vec<f64> {
        let mut counts = vec![SMOOTHING; self.len()];
        for value in values {
            counts[self.bin(value)] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        counts.iter().map(|c| c / total).collect()
    }
}

/// The reference distribution of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    pub bins: Bins,
    /// Smoothed share of the reference in each bin.
    pub shares: Vec<f64>,
    /// The reference in a few words (median, or commonest category and its share).
    pub summary: String,
}

/// The reference profile the server compares live traffic with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Utterances the profile was built from.
    pub utterances: usize,
    /// Where they came from (an eval report, a capture folder).
    pub source: String,
    pub features: Vec<FeatureProfile>,
}

impl Baseline {
    pub fn from_features(features: &[UtteranceFeatures], source: &str) -> Result<Self, DriftError> {
        if features.is_empty() {
            return Err(DriftError::Empty);
        }
        let rows: Vec<_> = features.iter().map(UtteranceFeatures::values).collect();
        let profiles = rows[0]
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let values: Vec<FeatureValue> = rows.iter().map(|row| row[i].1.clone()).collect();
                let bins = bins_for(&values);
                FeatureProfile {
                    name: name.to_string(),
                    shares: bins.shares(&values),
                    summary: summarize(&values),
                    bins,
                }
            })
            .collect();
        Ok(Self {
            utterances: features.len(),
            source: source.to_string(),
            features: profiles,
        })
    }

    pub fn load(path: &Path) -> Result<Self, DriftError> {
        let text = std::fs::read_to_string(path).map_err(|source| DriftError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DriftError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), DriftError> {
        let json = serde_json::to_string_pretty(self).expect("serializable");
        std::fs::write(path, json).map_err(|source| DriftError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Decile edges for numbers, the categories seen for categories.
fn bins_for(values: &[FeatureValue]) -> Bins {
    let mut numbers: Vec<f64> = values
        .iter()
        .filter_map(|v| match v {
            FeatureValue::Number(n) => Some(*n),
            _ => None,
        })
        .collect();
    let categories: Vec<String> = values
        .iter()
        .filter_map(|v| match v {
            FeatureValue::Category(c) => Some(c.clone()),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !categories.is_empty() {
        return Bins::Categorical { categories };
    }
    numbers.sort_by(f64::total_cmp);
    // Each edge lies halfway between two reference values, so that a live value equal to
    // a reference value (give or take rounding) falls in the same bin.
    let mut edges: Vec<f64> = (1..NUMERIC_BINS)
        .filter_map(|k| {
            let i = (numbers.len() * k / NUMERIC_BINS).checked_sub(1)?;
            Some((numbers.get(i)? + numbers.get(i + 1)?) / 2.0)
        })
        .collect();
    edges.dedup();
    Bins::Numeric { edges }
}

/// The median of numbers, or the commonest category with its share.
fn summarize(values: &[FeatureValue]) -> String {
    let mut numbers = Vec::new();
    let mut categories: BTreeMap<&str, usize> = BTreeMap::new();
    for value in values {
        match value {
            FeatureValue::Number(n) => numbers.push(*n),
            FeatureValue::Category(c) => *categories.entry(c).or_default() += 1,
            FeatureValue::Missing => {}
        }
    }
    if let Some((category, count)) = categories.iter().max_by_key(|(_, &count)| count) {
        return format!(
            "{category} {:.0}%",
            100.0 * *count as f64 / values.len() as f64
        );
    }
    if numbers.is_empty() {
        return MISSING.to_string();
    }
    numbers.sort_by(f64::total_cmp);
    format!("median {:.3}", numbers[numbers.len() / 2])
}

fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| (c - r) * (c / r).ln())
        .sum()
}

/// How far one feature has moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    Stable,
    Watch,
    Drift,
    /// The window is not full yet.
    Filling,
}

impl std::fmt::Display for DriftState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriftState::Stable => "STABLE",
            DriftState::Watch => "WATCH",
            DriftState::Drift => "DRIFT",
            DriftState::Filling => "FILLING",
        })
    }
}

impl DriftState {
    fn of(psi: f64) -> Self {
        if psi >= DRIFT_PSI {
            DriftState::Drift
        } else if psi >= WATCH_PSI {
            DriftState::Watch
        } else {
            DriftState::Stable
        }
    }
}

/// One row of the drift table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub reference: String,
    pub current: String,
    pub psi: f64,
    pub state: DriftState,
}

/// The drift table for the current window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub window_size: usize,
    pub utterances_in_window: usize,
    /// Empty when the server has no baseline.
    pub baseline_source: String,
    pub features: Vec<FeatureDrift>,
}

impl DriftReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "window: {} of {} utterances; baseline: {}\n{:<24} {:>18} {:>18} {:>8}  state\n",
            self.utterances_in_window,
            self.window_size,
            if self.baseline_source.is_empty() {
                "none (serve --drift-baseline FILE)"
            } else {
                &self.baseline_source
            },
            "feature",
            "reference",
            "current",
            "PSI"
        );
        for row in &self.features {
            out.push_str(&format!(
                "{:<24} {:>18} {:>18} {:>8.3}  {}\n",
                row.feature, row.reference, row.current, row.psi, row.state
            ));
        }
        out
    }
}

/// The rolling window of recent utterances, scored against the baseline.
pub struct DriftMonitor {
    baseline: Option<Baseline>,
    window_size: usize,
    window: Mutex<VecDeque<UtteranceFeatures>>,
    /// Last state per feature, to log a warning once when a feature drifts.
    states: Mutex<BTreeMap<String, DriftState>>,
}

impl DriftMonitor {
    pub fn new(baseline: Option<Baseline>, window_size: usize) -> Self {
        Self {
            baseline,
            window_size: window_size.max(1),
            window: Mutex::new(VecDeque::new()),
            states: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds an utterance to the window and scores the window; returns the report.
    pub fn observe(&self, features: UtteranceFeatures) -> DriftReport {
        {
            let mut window = self.window.lock().expect("not poisoned");
            window.push_back(features);
            while window.len() > self.window_size {
                window.pop_front();
            }
        }
        let report = self.report();
        let mut states = self.states.lock().expect("not poisoned");
        for row in &report.features {
            let before = states.insert(row.feature.clone(), row.state);
            if row.state == DriftState::Drift && before != Some(DriftState::Drift) {
                tracing::warn!(
                    feature = %row.feature,
                    psi = row.psi,
                    reference = %row.reference,
                    current = %row.current,
                    "input or output drift: the feature has moved away from the baseline"
                );
            }
        }
        report
    }

    /// The drift table as the window stands.
    pub fn report(&self) -> DriftReport {
        let window: Vec<_> = self
            .window
            .lock()
            .expect("not poisoned")
            .iter()
            .map(UtteranceFeatures::values)
            .collect();
        let full = window.len() >= self.window_size;
        let features = match &self.baseline {
            None => Vec::new(),
            Some(baseline) => baseline
                .features
                .iter()
                .enumerate()
                .map(|(i, profile)| {
                    let values: Vec<FeatureValue> =
                        window.iter().map(|row| row[i].1.clone()).collect();
                    let psi = psi(&profile.shares, &profile.bins.shares(&values));
                    FeatureDrift {
                        feature: profile.name.clone(),
                        reference: profile.summary.clone(),
                        current: if values.is_empty() {
                            "-".to_string()
                        } else {
                            summarize(&values)
                        },
                        psi,
                        state: if full {
                            DriftState::of(psi)
                        } else {
                            DriftState::Filling
                        },
                    }
                })
                .collect(),
        };
        DriftReport {
            window_size: self.window_size,
            utterances_in_window: window.len(),
            baseline_source: self
                .baseline
                .as_ref()
                .map_or_else(String::new, |b| b.source.clone()),
            features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utterance(loudness: f32, rate: u32) -> UtteranceFeatures {
        UtteranceFeatures {
            duration_seconds: 2.0,
            loudness_dbfs: loudness,
            clipped_fraction: 0.0,
            snr_db: 30.0,
            sample_rate_hz: rate,
            channels: 1,
            encoding: "WAV".into(),
            no_speech_probability: 0.01,
            avg_logprob: Some(-0.3),
            words: 4,
            unknown_word_share: Some(0.0),
            top_hit_score: Some(50.0),
            no_hit: false,
        }
    }

    fn reference() -> Vec<UtteranceFeatures> {
        (0..40)
            .map(|i| utterance(-25.0 + (i % 10) as f32, 16_000))
            .collect()
    }

    fn state(report: &DriftReport, feature: &str) -> DriftState {
        report
            .features
            .iter()
            .find(|r| r.feature == feature)
            .unwrap()
            .state
    }

    #[test]
    fn the_reference_itself_is_stable_and_a_shift_is_flagged() {
        let baseline = Baseline::from_features(&reference(), "test").unwrap();
        let monitor = DriftMonitor::new(Some(baseline.clone()), 20);
        let mut report = monitor.report();
        for features in reference().into_iter().take(20) {
            report = monitor.observe(features);
        }
        assert!(
            report
                .features
                .iter()
                .all(|r| r.state == DriftState::Stable),
            "{}",
            report.table()
        );

        let quiet = DriftMonitor::new(Some(baseline), 20);
        for i in 0..20 {
            report = quiet.observe(utterance(-45.0 + (i % 10) as f32, 8_000));
        }
        assert_eq!(state(&report, "loudness_dbfs"), DriftState::Drift);
        assert_eq!(state(&report, "sample_rate_hz"), DriftState::Drift);
        assert_eq!(state(&report, "snr_db"), DriftState::Stable);
    }

    #[test]
    fn a_window_not_yet_full_is_filling() {
        let baseline = Baseline::from_features(&reference(), "test").unwrap();
        let monitor = DriftMonitor::new(Some(baseline), 20);
        let report = monitor.observe(utterance(-60.0, 8_000));
        assert!(report
            .features
            .iter()
            .all(|r| r.state == DriftState::Filling));
    }

    #[test]
    fn baselines_survive_a_round_trip_through_a_file() {
        let baseline = Baseline::from_features(&reference(), "test").unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        baseline.save(file.path()).unwrap();
        assert_eq!(Baseline::load(file.path()).unwrap(), baseline);
    }
}
