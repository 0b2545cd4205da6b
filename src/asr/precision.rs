//! The precision policy and the kernel dispatch of the model's matrix products: which
//! products run in 8 bits, bfloat16, half precision or candle's f32, chosen by the
//! [`Precision`] asked for and the number of rows a pass multiplies. The network in
//! [`super::model`] only calls [`Projection::forward`].

use candle_core::{Module, Tensor};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};
use serde::Deserialize;

use super::kernels;

/// How the matrix products of many rows (the encoder, prompts, scoring trees) are
/// computed. The decoder loses nothing measurable in 8 bits, nor the encoder in bfloat16;
/// the encoder in 8 bits moved one dev-set query's first hit (see docs/benchmarks.md, Speed
/// section), so it is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32: the reference, and the path for CPUs without AVX2.
    F32,
    /// Everything in f32 but the decoder's output projection over the vocabulary, in 8
    /// bits: for CPUs whose 8-bit products save memory but no arithmetic (AVX2 without
    /// VNNI), where only the vocabulary's 20 MB of weights gain.
    Int8Output,
    /// The decoder in 8 bits, the encoder in f32.
    Int8Decoder,
    /// The decoder in 8 bits, the encoder in bfloat16 (AVX-512 BF16 too).
    Bf16Int8,
    /// Encoder and decoder in 8 bits.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Int8Output => "int8-output",
            Self::Int8Decoder => "int8-decoder",
            Self::Bf16Int8 => "bf16-int8",
            Self::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" => Ok(Self::F32),
            "int8-output" => Ok(Self::Int8Output),
            "int8-decoder" => Ok(Self::Int8Decoder),
            "bf16-int8" => Ok(Self::Bf16Int8),
            "int8" => Ok(Self::Int8),
            _ => Err(format!(
                "{text:?} is not a precision: f32, int8-output, int8-decoder, bf16-int8 or int8"
            )),
        }
    }
}

impl Precision {
    /// The default: the fastest that measured as accurate as f32 on this CPU
    /// (docs/benchmarks.md, Kernels by machine). With AVX2 alone the 8-bit vocabulary
    /// (`int8-output`) is faster but moved dev-set first hits, so f32 stays the default.
    pub fn fastest() -> Self {
        use kernels::int8::Kernel;
        match (Kernel::fastest(), kernels::bf16::available()) {
            (Some(Kernel::Vnni), true) => Self::Bf16Int8,
            (Some(Kernel::Vnni), false) => Self::Int8Decoder,
            (Some(Kernel::Avx2) | None, _) => Self::F32,
        }
    }

    /// Whether any product runs in 8 bits.
    pub fn uses_int8(self) -> bool {
        self != Self::F32
    }

    /// Whether the decoder's output projection runs in 8 bits for passes of many rows
    /// (scoring trees) and for the normalizers of a beam's.
    pub(crate) fn output_in_int8(self) -> bool {
        self.uses_int8()
    }

    /// Whether any product runs in bfloat16.
    pub fn uses_bf16(self) -> bool {
        self == Self::Bf16Int8
    }
}

/// How one part of the model multiplies many rows.
#[derive(Clone, Copy)]
pub(crate) enum Products {
    Int8,
    Bf16,
    F32,
}

impl Products {
    /// The encoder's and the decoder's products at `precision`.
    pub(crate) fn of(precision: Precision) -> (Self, Self) {
        match precision {
            Precision::F32 | Precision::Int8Output => (Self::F32, Self::F32),
            Precision::Int8Decoder => (Self::F32, Self::Int8),
            Precision::Bf16Int8 => (Self::Bf16, Self::Int8),
            Precision::Int8 => (Self::Int8, Self::Int8),
        }
    }
}

/// A linear layer that serves the shapes Whisper needs: many rows at once (the encoder,
/// a prompt, a scoring tree) through an 8-bit or candle's f32 matrix product, a beam's
/// few rows in bfloat16 where the CPU has it, and a decoding step's row through a
/// half-precision matrix-vector product, which skips the weight packing that dominates
/// a one-row product.
pub(crate) struct Projection {
    many: ManyRows,
    /// Only where passes of a few rows run (the decoder's), not in the encoder.
    half: Option<kernels::HalfMatrix>,
    /// The same weights in bfloat16 for passes of [`BF16_ROWS`] (a beam's paths), where
    /// the decoder runs in low precision and the CPU has the unit.
    few_bf16: Option<kernels::Bf16Matrix>,
    bias: Option<Tensor>,
    outputs: usize,
}

/// The product for many rows; in 8 bits or bfloat16, the f32 weights are not kept.
enum ManyRows {
    Int8(kernels::Int8Matrix),
    Bf16(kernels::Bf16Matrix),
    F32(Linear),
}

/// Rows up to which the few-row paths are taken (half precision, and bfloat16 from
/// three rows where present): decoding steps, beams and small token trees.
pub(crate) const VECTOR_ROWS: usize = 32;
/// Rows of the passes whose products run in bfloat16 where the decoder is in low
/// precision: a beam's paths. A decoding step's one or two rows stay in half precision,
/// so the free transcript is decoded as before.
const BF16_ROWS: std::ops::RangeInclusive<usize> = 3..=VECTOR_ROWS;

impl Projection {
    /// `few_rows`: whether passes of a few rows run through it, which keep the weights in
    /// half precision too.
    fn new(linear: Linear, products: Products, few_rows: bool) -> candle_core::Result<Self> {
        let half = few_rows
            .then(|| kernels::HalfMatrix::new(linear.weight()))
            .transpose()?;
        let bias = linear.bias().cloned();
        let (outputs, inputs) = linear.weight().dims2()?;
        let weight = linear.weight();
        let low = match products {
            Products::Int8 => kernels::with_f32_values(weight, |w| {
                kernels::Int8Matrix::new(w, outputs, inputs).map(ManyRows::Int8)
            })?,
            Products::Bf16 => kernels::with_f32_values(weight, |w| {
                kernels::Bf16Matrix::new(w, outputs, inputs).map(ManyRows::Bf16)
            })?,
            Products::F32 => None,
        };
        let few_bf16 = match products {
            Products::Int8 if few_rows => {
                kernels::with_f32_values(weight, |w| kernels::Bf16Matrix::new(w, outputs, inputs))?
            }
            _ => None,
        };
        let many = low.unwrap_or(ManyRows::F32(linear));
        Ok(Self {
            many,
            half,
            few_bf16,
            bias,
            outputs,
        })
    }

    pub(crate) fn load(
        inputs: usize,
        outputs: usize,
        bias: bool,
        vb: VarBuilder,
        products: Products,
        few_rows: bool,
    ) -> candle_core::Result<Self> {
        let linear = if bias {
            linear(inputs, outputs, vb)?
        } else {
            linear_no_bias(inputs, outputs, vb)?
        };
        Self::new(linear, products, few_rows)
    }

    /// `x` through one of the low-precision kernels, which take and give plain f32 rows.
    fn low_precision(
        &self,
        x: &Tensor,
        shape: Vec<usize>,
        product: impl Fn(&[f32], Option<&[f32]>) -> Vec<f32>,
    ) -> candle_core::Result<Tensor> {
        let bias = self.bias.as_ref().map(Tensor::to_vec1::<f32>).transpose()?;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(product(&values, bias.as_deref()), shape, x.device())
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let inputs = *dims.last().expect("a projection input has dimensions");
        let rows = x.elem_count() / inputs;
        let mut shape = dims;
        *shape.last_mut().expect("non-empty") = self.outputs;
        if let Some(bf16) = self.few_bf16.as_ref().filter(|_| BF16_ROWS.contains(&rows)) {
            return self.low_precision(x, shape, |v, b| bf16.forward(v, b));
        }
        let Some(half) = self.half.as_ref().filter(|_| rows <= VECTOR_ROWS) else {
            return match &self.many {
                ManyRows::F32(linear) => linear.forward(x),
                ManyRows::Int8(int8) => self.low_precision(x, shape, |v, b| int8.forward(v, b)),
                ManyRows::Bf16(bf16) => self.low_precision(x, shape, |v, b| bf16.forward(v, b)),
            };
        };
        let rows = x.reshape((rows, inputs))?.to_vec2::<f32>()?;
        let out = if rows.len() == 1 {
            half.mul_vec(&rows[0])
        } else {
            half.mul_rows(&rows)
        };
        let out = Tensor::from_vec(out, shape, x.device())?;
        match &self.bias {
            Some(bias) => out.broadcast_add(bias),
            None => Ok(out),
        }
    }
}
