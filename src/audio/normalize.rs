//! Channel mixing, DC removal and loudness normalization.
//!
//! Whisper's log-mel features are not level-invariant, so a speaker at -40 dBFS and one at
//! -10 dBFS must reach it alike. The choice: measure the RMS level of the *voiced* frames
//! (as the voice activity detector finds them, so that pauses do not drag the figure down)
//! and apply one gain for the whole utterance that brings it to [`TARGET_LEVEL_DB`]. One
//! static gain, not a compressor, keeps the speech's own dynamics. The gain is capped at
//! [`MAX_GAIN_DB`] so that near-silence and faint noise are not lifted to full scale, and
//! never pushes a peak over `PEAK_CEILING`, so normalization itself cannot clip.
//! Clipping already in the input is measured and reported, not repaired.

/// Level the voiced part is brought to, in dBFS RMS.
pub const TARGET_LEVEL_DB: f32 = -20.0;
/// Largest boost and cut applied, in dB.
pub const MAX_GAIN_DB: f32 = 30.0;
pub const MAX_CUT_DB: f32 = -30.0;
/// Highest peak the gain may produce, as a fraction of full scale.
const PEAK_CEILING: f32 = 0.98;
/// A sample at or above this magnitude counts as clipped.
const CLIP_LEVEL: f32 = 0.999;

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: u16) -> Vec<f32> {
    let channels = channels as usize;
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Subtracts the mean, so that a microphone's DC offset neither reads as loudness nor
/// limits the gain.
pub fn remove_dc(samples: &mut [f32]) {
    if samples.is_empty() {
        return;
    }
    let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64;
    for s in samples {
        *s -= mean as f32;
    }
}

/// Share of samples at full scale.
pub fn clipped_fraction(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().filter(|s| s.abs() >= CLIP_LEVEL).count() as f32 / samples.len() as f32
}

/// The gain in dB that brings `voiced_level_db` to the target, within the limits.
pub fn gain_db(voiced_level_db: f32, peak: f32) -> f32 {
    let wanted = (TARGET_LEVEL_DB - voiced_level_db).clamp(MAX_CUT_DB, MAX_GAIN_DB);
    if peak > 0.0 {
        wanted.min(20.0 * (PEAK_CEILING / peak).log10())
    } else {
        wanted
    }
}

/// Multiplies every sample by a gain given in dB.
pub fn apply_gain(samples: &mut [f32], gain_db: f32) {
    let factor = 10f32.powf(gain_db / 20.0);
    for s in samples {
        *s *= factor;
    }
}

/// Largest magnitude.
pub fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0.0, |m, s| m.max(s.abs()))
}
