//! Watching the service in production: Prometheus [`metrics`] (served by [`http`]),
//! [`drift`] of the inputs and outputs away from a reference profile, and [`capture`] of
//! sample utterances for the next round of labelling. The service feeds [`Monitor`] every final result; nothing
//! here changes a result.

pub mod capture;
pub mod drift;
pub mod features;
pub mod http;
pub mod metrics;

use std::sync::Arc;

use crate::audio::{AudioFormat, Decoded};
use crate::pipeline::UtteranceOutcome;
use crate::search::QueryEngine;

pub use capture::{Capture, CaptureConfig};
pub use drift::{Baseline, DriftMonitor, DriftReport};
pub use features::UtteranceFeatures;
pub use metrics::Metrics;

/// Metrics, drift and capture for one server.
pub struct Monitor {
    pub metrics: Metrics,
    pub drift: DriftMonitor,
    capture: Option<Capture>,
    /// For the share of transcript words the catalog lacks.
    search: Option<Arc<QueryEngine>>,
}

impl Monitor {
    pub fn new(
        drift: DriftMonitor,
        capture: Option<Capture>,
        search: Option<Arc<QueryEngine>>,
    ) -> Self {
        Self {
            metrics: Metrics::new(),
            drift,
            capture,
            search,
        }
    }

    /// The drift features of one utterance.
    pub fn features(&self, outcome: &UtteranceOutcome, format: &AudioFormat) -> UtteranceFeatures {
        let unknown = self
            .search
            .as_ref()
            .and_then(|engine| engine.unknown_word_share(&outcome.transcript.text));
        UtteranceFeatures::of(outcome, format.encoding, unknown)
    }

    /// Records a final result's features in the drift window (and the PSI gauges), and
    /// keeps the utterance when capture wants it. Blocking: call it off the async runtime.
    pub fn observe(&self, outcome: &UtteranceOutcome, format: &AudioFormat, decoded: &Decoded) {
        let features = self.features(outcome, format);
        let report = self.drift.observe(features.clone());
        for row in &report.features {
            self.metrics.drift(&row.feature, row.psi);
        }
        if let Some(capture) = self.capture.as_ref().filter(|c| c.wants()) {
            let hits = outcome.hits.iter().map(|h| h.hit.id.clone()).collect();
            match capture.store(decoded, &outcome.transcript.text, hits, features) {
                Ok(()) => self.metrics.captured(),
                Err(error) => tracing::warn!(%error, "utterance not captured"),
            }
        }
    }
}
