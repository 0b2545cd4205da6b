//! Whisper's encoder stem: a 1-D convolution as one matrix product over an unfolded input.

use candle_core::Tensor;
use rayon::prelude::*;

use super::math::gelu_in_place;

/// A 1-D convolution with kernel 3 and padding 1, as Whisper's encoder stem uses, done
/// as one matrix product over an unfolded input (candle's generic convolution spends
/// three times as long on the same arithmetic).
pub struct Conv3 {
    /// [out_channels, in_channels * 3], row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
}

/// Kernel width of [`Conv3`].
const CONV_KERNEL: usize = 3;

impl Conv3 {
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize) -> candle_core::Result<Self> {
        let (out_channels, in_channels, kernel) = weight.dims3()?;
        if kernel != CONV_KERNEL {
            candle_core::bail!("convolution kernel is {kernel} wide, expected {CONV_KERNEL}")
        }
        Ok(Self {
            weight: weight.flatten_all()?.to_vec1()?,
            bias: bias.to_vec1()?,
            in_channels,
            out_channels,
            stride,
        })
    }

    /// [1, in_channels, time] -> [1, time_out, out_channels] (time-major, as the encoder
    /// blocks want it), GELU applied when `gelu`.
    pub fn forward_time_major(&self, x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
        let (_, channels, time) = x.dims3()?;
        if channels != self.in_channels {
            candle_core::bail!(
                "convolution input has {channels} channels, expected {}",
                self.in_channels
            )
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let time_out = (time + 2 - CONV_KERNEL) / self.stride + 1;
        let width = channels * CONV_KERNEL;
        // Unfold: row t holds, per input channel, the three samples the kernel sees.
        let mut columns = vec![0f32; time_out * width];
        columns
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(t, row)| {
                for c in 0..channels {
                    for k in 0..CONV_KERNEL {
                        let position = (t * self.stride + k) as isize - 1;
                        if (0..time as isize).contains(&position) {
                            row[c * CONV_KERNEL + k] = x[c * time + position as usize];
                        }
                    }
                }
            });
        let mut out = vec![0f32; time_out * self.out_channels];
        debug_assert_eq!(columns.len(), time_out * width);
        debug_assert_eq!(self.weight.len(), self.out_channels * width);
        // SAFETY: columns is [time_out × width], weight read transposed is
        // [width × out_channels], out is [time_out × out_channels]; all row-major.
        unsafe {
            gemm::gemm(
                time_out,
                self.out_channels,
                width,
                out.as_mut_ptr(),
                1,
                self.out_channels as isize,
                false,
                columns.as_ptr(),
                1,
                width as isize,
                self.weight.as_ptr(),
                width as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        out.par_chunks_mut(self.out_channels).for_each(|row| {
            for (value, bias) in row.iter_mut().zip(&self.bias) {
                *value += bias;
            }
            if gelu {
                gelu_in_place(row);
            }
        });
        Tensor::from_vec(
            out,
            (1, time_out, self.out_channels),
            &candle_core::Device::Cpu,
        )
    }

    /// The same as channel-major [1, out_channels, time_out], for chaining convolutions.
    pub fn forward(&self, x: &Tensor, gelu: bool) -> candle_core::Result<Tensor> {
        self.forward_time_major(x, gelu)?
            .transpose(1, 2)?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::kernels::largest_difference;
    use candle_core::Device;

    #[test]
    fn conv3_matches_candle() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 5, 40), &device).unwrap();
        let w = Tensor::randn(0f32, 1.0, (7, 5, 3), &device).unwrap();
        let b = Tensor::randn(0f32, 1.0, 7, &device).unwrap();
        for stride in [1, 2] {
            let conv = Conv3::new(&w, &b, stride).unwrap();
            let fast = conv.forward(&x, false).unwrap();
            let plain = x
                .conv1d(&w, 1, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 7, 1)).unwrap())
                .unwrap();
            assert_eq!(fast.dims(), plain.dims());
            let difference = largest_difference(&fast, &plain);
            assert!(difference < 1e-4, "stride {stride}: {difference}");
        }
    }
}
