//! Choosing among catalog candidates: each candidate's features (the speech model's
//! likelihood of its best reading in the query's own carrier words, against the other
//! candidates and against the free transcript, and what search knows of it) go through
//! a logistic model whose output is the probability that the candidate is what was
//! meant: the hit's confidence. The weights are data (`models/rerank.json`), fitted on
//! the development set by `scripts/fit_rerank.py` with cross-validation.

use serde::{Deserialize, Serialize};

/// The features, in the order of the model's weights.
pub const FEATURES: [&str; 13] = [
    "acoustic",
    "margin",
    "vs_free",
    "sum_vs_free",
    "length_ratio",
    "text_score",
    "text_rank",
    "sound",
    "proposed",
    "popularity",
    "category_match",
    "qualifier_heard",
    "shortened",
];

/// Mean log-probability given to a candidate none of whose readings could be scored.
pub const UNSCORED: f32 = -10.0;

/// What the reranker knows of one candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CandidateFeatures {
    /// Mean log-probability of the candidate's best reading.
    pub acoustic: f32,
    /// `acoustic` less the best candidate's (0 for the best).
    pub margin: f32,
    /// `acoustic` less the free transcript's own reading of the name.
    pub vs_free: f32,
    /// The same for summed log-probabilities: a reading that leaves out what was
    /// heard scores well per token but loses here.
    pub sum_vs_free: f32,
    /// Tokens of the reading over tokens of the free transcript's reading.
    pub length_ratio: f32,
    pub text_score: f32,
    /// 1 / (1 + rank) in text search; 0 when text search did not find it.
    pub text_rank: f32,
    pub sound: f32,
    pub proposed: f32,
    pub popularity: f32,
    pub category_match: f32,
    pub qualifier_heard: f32,
    /// Whether the best reading shortens the title.
    pub shortened: f32,
}

impl CandidateFeatures {
    fn values(&self) -> [f32; FEATURES.len()] {
        [
            self.acoustic,
            self.margin,
            self.vs_free,
            self.sum_vs_free,
            self.length_ratio,
            self.text_score,
            self.text_rank,
            self.sound,
            self.proposed,
            self.popularity,
            self.category_match,
            self.qualifier_heard,
            self.shortened,
        ]
    }
}

/// Why a reranking model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error("reranking model: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("reranking model: features {found:?} do not match this build's {expected:?}")]
    Features {
        found: Vec<String>,
        expected: Vec<String>,
    },
}

/// A logistic model over [`FEATURES`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankModel {
    pub features: Vec<String>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

/// The weights fitted on the development set, compiled in.
const FITTED: &str = include_str!("../../models/rerank.json");

impl Default for RerankModel {
    fn default() -> Self {
        Self::from_json(FITTED).expect("models/rerank.json is checked by the tests")
    }
}

impl RerankModel {
    pub fn from_json(text: &str) -> Result<Self, RerankError> {
        let model: Self = serde_json::from_str(text)?;
        if model.features != FEATURES || model.weights.len() != FEATURES.len() {
            return Err(RerankError::Features {
                found: model.features,
                expected: FEATURES.iter().map(|f| f.to_string()).collect(),
            });
        }
        Ok(model)
    }

    /// Probability that the candidate is what was meant.
    pub fn confidence(&self, features: &CandidateFeatures) -> f32 {
        let z: f32 = self.bias
            + features
                .values()
                .iter()
                .zip(&self.weights)
                .map(|(x, w)| x * w)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fitted_model_loads_and_prefers_what_the_audio_says() {
        let model = RerankModel::default();
        let heard = CandidateFeatures {
            acoustic: -0.3,
            margin: 0.0,
            vs_free: 0.5,
            ..Default::default()
        };
        let unheard = CandidateFeatures {
            acoustic: -3.0,
            margin: -2.7,
            vs_free: -2.2,
            ..Default::default()
        };
        assert!(model.confidence(&heard) > model.confidence(&unheard));
        assert!((0.0..=1.0).contains(&model.confidence(&heard)));
    }

    #[test]
    fn a_model_for_other_features_is_refused() {
        let text = r#"{"features":["acoustic"],"weights":[1.0],"bias":0.0}"#;
        assert!(matches!(
            RerankModel::from_json(text),
            Err(RerankError::Features { .. })
        ));
    }
}
