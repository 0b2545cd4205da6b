//! Sample rate conversion to the model's 16 kHz with rubato's synchronous FFT resampler:
//! the ratio is fixed per utterance, and its anti-aliasing filter keeps energy above 8 kHz
//! from folding back into the speech band while a 7 kHz tone keeps its level.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

use super::AudioError;

/// The rate Whisper expects.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;
/// Frames per FFT chunk; longer chunks give a sharper anti-aliasing filter.
const CHUNK_FRAMES: usize = 2048;
/// FFT sub-chunks per chunk (rubato's default aims at 256 frames; fewer keeps the
/// transition band narrow enough for 7 kHz to pass within 0.5 dB).
const SUB_CHUNKS: usize = 1;

/// Converts mono samples at `sample_rate` to [`TARGET_SAMPLE_RATE`].
pub fn to_target_rate(samples: Vec<f32>, sample_rate: u32) -> Result<Vec<f32>, AudioError> {
    if sample_rate == TARGET_SAMPLE_RATE || samples.is_empty() {
        return Ok(samples);
    }
    let mut resampler = Fft::<f32>::new_custom(
        sample_rate as usize,
        TARGET_SAMPLE_RATE as usize,
        CHUNK_FRAMES,
        SUB_CHUNKS,
        1,
        rubato::WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| AudioError::Resample(e.to_string()))?;
    let frames = samples.len();
    let channels = [samples];
    let input = SequentialSliceOfVecs::new(&channels, 1, frames)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let output = resampler
        .process_all(&input, frames, None)
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    Ok(output.take_data())
}
