//! Log-mel features exactly as Whisper computes them: a 400-sample periodic Hann window
//! every 160 samples over the 30 s window (reflect-padded by 200 at the start, as
//! `torch.stft(center=True)` does), power spectrum, a Slaney-style mel filter bank built
//! here (librosa's formula), log10 clamped at 1e-10, floored at 8 below the maximum and
//! scaled by (x + 4) / 4.
//!
//! The FFT runs only over frames that touch real samples; every later frame of the
//! zero padding has the same known value, written without computing it.

use std::sync::{Arc, OnceLock};

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per second the model expects.
pub const SAMPLE_RATE: usize = crate::audio::TARGET_SAMPLE_RATE as usize;
/// FFT window length and hop, in samples.
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
/// One model window: 30 s of samples, 3000 feature frames.
pub const CHUNK_SECONDS: usize = 30;
pub const N_SAMPLES: usize = CHUNK_SECONDS * SAMPLE_RATE;
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Frequency bins of one frame's spectrum.
const N_BINS: usize = N_FFT / 2 + 1;
/// log10 of the clamp applied to mel energies: the value of a silent frame.
const LOG_FLOOR: f32 = -10.0;

/// Computes features for the mel bin count of a model (80, or 128 for large-v3).
pub struct MelExtractor {
    n_mels: usize,
    /// Filter bank, `n_mels` rows of [`N_BINS`] weights.
    filters: Vec<f32>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MelExtractor {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        Self {
            n_mels,
            filters: mel_filters(n_mels),
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    /// A shared extractor for `n_mels` bins (the filter bank and FFT plan are built once).
    pub fn shared(n_mels: usize) -> &'static MelExtractor {
        static MEL80: OnceLock<MelExtractor> = OnceLock::new();
        static MEL128: OnceLock<MelExtractor> = OnceLock::new();
        match n_mels {
            128 => MEL128.get_or_init(|| MelExtractor::new(128)),
            _ => MEL80.get_or_init(|| MelExtractor::new(80)),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Features of one window of at most [`N_SAMPLES`] samples (zero-padded to 30 s):
    /// `n_mels` rows of [`N_FRAMES`] values, row-major.
    pub fn log_mel(&self, samples: &[f32]) -> Vec<f32> {
        let samples = &samples[..samples.len().min(N_SAMPLES)];
        // The padded signal as Whisper's torch.stft sees it: 200 reflected samples, the
        // window, then zeros (Whisper pads the audio with 30 s of silence first).
        let pad = N_FFT / 2;
        let sample = |i: usize| -> f32 {
            // Below `pad` the index reflects around the first sample; above, it shifts.
            let i = pad.abs_diff(i);
            samples.get(i).copied().unwrap_or(0.0)
        };
        // Frames whose window reaches a real sample; the rest are silent.
        let live_frames = ((samples.len() + pad).div_ceil(HOP_LENGTH) + 1).min(N_FRAMES);
        let mut mel = vec![LOG_FLOOR; self.n_mels * N_FRAMES];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; N_BINS];
        for frame in 0..live_frames {
            let start = frame * HOP_LENGTH;
            for (k, value) in input.iter_mut().enumerate() {
                *value = sample(start + k) * self.window[k];
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers sized by the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for m in 0..self.n_mels {
                let row = &self.filters[m * N_BINS..(m + 1) * N_BINS];
                let energy: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                mel[m * N_FRAMES + frame] = energy.max(1e-10).log10();
            }
        }
        let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for value in &mut mel {
            *value = (value.max(max - 8.0) + 4.0) / 4.0;
        }
        mel
    }
}

/// librosa's `filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`.
fn mel_filters(n_mels: usize) -> Vec<f32> {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let log_step = 6.4f64.ln() / 27.0;
    let hz_to_mel = |hz: f64| {
        if hz < MIN_LOG_HZ {
            hz / F_SP
        } else {
            MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step
        }
    };
    let mel_to_hz = |mel: f64| {
        if mel < MIN_LOG_MEL {
            mel * F_SP
        } else {
            MIN_LOG_HZ * ((mel - MIN_LOG_MEL) * log_step).exp()
        }
    };
    let nyquist = SAMPLE_RATE as f64 / 2.0;
    let max_mel = hz_to_mel(nyquist);
    let centers: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    let bin_hz: Vec<f64> = (0..N_BINS)
        .map(|k| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    let mut filters = vec![0f32; n_mels * N_BINS];
    for m in 0..n_mels {
        let (low, center, high) = (centers[m], centers[m + 1], centers[m + 2]);
        let norm = 2.0 / (high - low);
        for (k, &hz) in bin_hz.iter().enumerate() {
            let rising = (hz - low) / (center - low);
            let falling = (high - hz) / (high - center);
            filters[m * N_BINS + k] = (rising.min(falling).max(0.0) * norm) as f32;
        }
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_the_floor_everywhere() {
        let mel = MelExtractor::new(80).log_mel(&[]);
        assert_eq!(mel.len(), 80 * N_FRAMES);
        assert!(mel.iter().all(|&v| v == (LOG_FLOOR + 4.0) / 4.0));
    }

    #[test]
    fn filter_bank_rows_are_triangles_with_slaney_area() {
        let filters = mel_filters(80);
        for m in 0..80 {
            let row = &filters[m * N_BINS..(m + 1) * N_BINS];
            assert!(row.iter().any(|&w| w > 0.0), "row {m} is empty");
        }
        // librosa's value for the first filter's peak bin.
        assert!((filters[1] - 0.024_862_7).abs() < 1e-5, "{}", filters[1]);
    }
}
