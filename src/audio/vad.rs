//! Voice activity: an energy detector that finds where speech starts and ends and says
//! whether an utterance holds speech at all. The phone's VAD decides where an utterance
//! ends; this one keeps silence and steady noise away from the model, which would
//! otherwise invent words for them.
//!
//! Frames of 20 ms every 10 ms. A frame is voiced when it stands 10 dB above the
//! utterance's own noise floor (its 10th-percentile frame): steady noise, hum and tones
//! never do, however loud. An utterance holds speech when its voiced frames that are also
//! above an absolute floor add up to 150 ms. Decisions use levels *before*
//! normalization, so a gain can never turn room tone into "speech". Calibrated on the
//! whole dev set: every speech clip, noisy ones included, passes; silence, steady noise
//! and tones do not (music is left to the model's no-speech probability).

/// Frame length and hop, in seconds.
const FRAME_SECONDS: f64 = 0.020;
const HOP_SECONDS: f64 = 0.010;
/// Below this level (dBFS) a frame is silence whatever the noise floor.
const ABSOLUTE_FLOOR_DB: f32 = -55.0;
/// How far above the noise floor a frame must be to count as active, in dB.
const ABOVE_FLOOR_DB: f32 = 10.0;
/// Active audio needed to call an utterance speech.
const MIN_SPEECH_SECONDS: f64 = 0.150;
/// Kept before the first and after the last active frame, so that soft onsets and
/// trailing consonants survive the trim.
const LEAD_PAD_SECONDS: f64 = 0.20;
const TRAIL_PAD_SECONDS: f64 = 0.30;
/// A pause this long between active stretches separates two utterances in a recording.
const UTTERANCE_GAP_SECONDS: f64 = 0.8;
/// Energy of an all-zero frame, to keep logarithms finite.
const SILENCE_DB: f32 = -120.0;

/// What the detector found in one utterance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceActivity {
    /// Whether the utterance holds speech at all.
    pub speech: bool,
    /// Where the speech (with padding) starts and ends, in seconds; the whole utterance
    /// when there is no speech.
    pub start_seconds: f64,
    pub end_seconds: f64,
    /// RMS level of the active frames (of all frames when none is active), in dBFS.
    pub voiced_level_db: f32,
    /// The 10th-percentile frame level, in dBFS: the background the speech stands on.
    pub noise_floor_db: f32,
}

/// Runs the detector over mono samples.
pub fn detect(samples: &[f32], sample_rate: u32) -> VoiceActivity {
    let duration = samples.len() as f64 / sample_rate as f64;
    let levels = frame_levels_db(samples, sample_rate);
    let floor = percentile(&levels, 0.10);
    let whole = VoiceActivity {
        speech: false,
        start_seconds: 0.0,
        end_seconds: duration,
        voiced_level_db: rms_db(samples),
        noise_floor_db: floor.unwrap_or(SILENCE_DB),
    };
    let Some(floor) = floor else {
        return whole;
    };
    // The level is measured on floor-relative frames only, so that it scales exactly with
    // the input's gain; the absolute floor only decides whether anything was said.
    let voiced: Vec<usize> = (0..levels.len())
        .filter(|&i| levels[i] > floor + ABOVE_FLOOR_DB)
        .collect();
    let audible: Vec<usize> = voiced
        .iter()
        .copied()
        .filter(|&i| levels[i] > ABSOLUTE_FLOOR_DB)
        .collect();
    let (Some(&first), Some(&last)) = (audible.first(), audible.last()) else {
        return whole;
    };
    if audible.len() as f64 * HOP_SECONDS < MIN_SPEECH_SECONDS {
        return whole;
    }
    let mean_power =
        voiced.iter().map(|&i| db_to_power(levels[i])).sum::<f32>() / voiced.len() as f32;
    VoiceActivity {
        speech: true,
        start_seconds: (first as f64 * HOP_SECONDS - LEAD_PAD_SECONDS).max(0.0),
        end_seconds: (last as f64 * HOP_SECONDS + FRAME_SECONDS + TRAIL_PAD_SECONDS).min(duration),
        voiced_level_db: power_to_db(mean_power),
        noise_floor_db: floor,
    }
}

/// Cuts a recording that may hold several utterances where the speaker paused at least
/// 0.8 s, as a phone's VAD would; each cut lies in the middle of its pause, so the spans
/// cover the whole recording. Returns `(start, end)` in seconds, one span when there is
/// no pause (or no speech).
pub fn split_utterances(samples: &[f32], sample_rate: u32) -> Vec<(f64, f64)> {
    let duration = samples.len() as f64 / sample_rate as f64;
    let levels = frame_levels_db(samples, sample_rate);
    let Some(floor) = percentile(&levels, 0.10) else {
        return vec![(0.0, duration)];
    };
    let active: Vec<usize> = (0..levels.len())
        .filter(|&i| levels[i] > floor + ABOVE_FLOOR_DB && levels[i] > ABSOLUTE_FLOOR_DB)
        .collect();
    let gap_frames = (UTTERANCE_GAP_SECONDS / HOP_SECONDS) as usize;
    let mut cuts = Vec::new();
    let mut stretch_frames = 0;
    for pair in active.windows(2) {
        stretch_frames += 1;
        if pair[1] - pair[0] > gap_frames
            && stretch_frames as f64 * HOP_SECONDS >= MIN_SPEECH_SECONDS
        {
            cuts.push((pair[0] + pair[1]) as f64 / 2.0 * HOP_SECONDS);
            stretch_frames = 0;
        }
    }
    // A last stretch too short to be speech stays with the utterance before it.
    if (stretch_frames + 1) as f64 * HOP_SECONDS < MIN_SPEECH_SECONDS {
        cuts.pop();
    }
    let mut bounds = vec![0.0];
    bounds.extend(cuts);
    bounds.push(duration);
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Level of each frame, in dBFS.
fn frame_levels_db(samples: &[f32], sample_rate: u32) -> Vec<f32> {
    let frame = ((FRAME_SECONDS * sample_rate as f64) as usize).max(1);
    let hop = ((HOP_SECONDS * sample_rate as f64) as usize).max(1);
    if samples.len() < frame {
        return if samples.is_empty() {
            Vec::new()
        } else {
            vec![rms_db(samples)]
        };
    }
    (0..=(samples.len() - frame) / hop)
        .map(|i| rms_db(&samples[i * hop..i * hop + frame]))
        .collect()
}

/// RMS level of samples in dBFS (a full-scale square wave is 0 dB).
pub fn rms_db(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DB;
    }
    let power = samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32;
    power_to_db(power)
}

fn power_to_db(power: f32) -> f32 {
    if power > 0.0 {
        (10.0 * power.log10()).max(SILENCE_DB)
    } else {
        SILENCE_DB
    }
}

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

fn percentile(values: &[f32], p: f64) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    Some(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    /// Bursts of a 300 Hz tone (seconds on) separated by silences (seconds off).
    fn bursts(pattern: &[(f64, f64)]) -> Vec<f32> {
        let mut samples = Vec::new();
        for &(on, off) in pattern {
            let n = (on * RATE as f64) as usize;
            samples.extend((0..n).map(|i| {
                0.3 * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / RATE as f32).sin()
            }));
            samples.extend(std::iter::repeat_n(0.0, (off * RATE as f64) as usize));
        }
        samples
    }

    #[test]
    fn recordings_split_at_long_pauses_only() {
        let two = split_utterances(&bursts(&[(1.0, 1.5), (1.0, 0.5)]), RATE);
        assert_eq!(two.len(), 2, "{two:?}");
        assert_eq!(two[0].0, 0.0);
        assert!((1.5..2.5).contains(&two[0].1), "{two:?}");
        assert_eq!(two[0].1, two[1].0);
        assert_eq!(two[1].1, 4.0);
        let one = split_utterances(&bursts(&[(1.0, 0.3), (1.0, 0.5)]), RATE);
        assert_eq!(one, [(0.0, 2.8)]);
        // A click after a pause is not an utterance of its own.
        let click = split_utterances(&bursts(&[(1.0, 1.5), (0.05, 0.5)]), RATE);
        assert_eq!(click.len(), 1, "{click:?}");
    }
}
