//! What a node computes: the [`Op`]s, their [`Activation`]s and [`Padding`] (resolved to
//! [`Pads`]), and the kind and shape of an arithmetic op's constant operand.

use serde::{Deserialize, Serialize};

/// A non-linearity, either fused into a conv/dense node (Keras style) or a node of its own
/// (ONNX style). The backprop modifiers apply to [`Activation::Relu`] wherever it sits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Activation {
    /// Identity.
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `alpha·x`.
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the feature axis (axis 0 of the per-sample shape).
    Softmax,
    /// `x` clamped to `[min, max]`; ReLU6 is `Clip { min: 0, max: 6 }`. The backprop
    /// modifiers leave it alone, as Captum's and keras-vis's leave ReLU6.
    Clip {
        /// Lower bound.
        #[serde(with = "maybe_infinite")]
        min: f32,
        /// Upper bound.
        #[serde(with = "maybe_infinite")]
        max: f32,
    },
    /// `scale·x` for `x > 0`, else `scale·alpha·(eˣ − 1)`: ELU with `scale` 1, SELU with
    /// its two constants.
    Elu {
        /// Limit of `alpha·(eˣ − 1)` below zero.
        alpha: f32,
        /// Factor on both sides.
        scale: f32,
    },
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x·sigmoid(x)` (swish, SiLU).
    Swish,
    /// The Gaussian error linear unit `x·Φ(x)`, or with `approximate` its tanh form
    /// `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu {
        /// The tanh approximation.
        approximate: bool,
    },
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Value at zero.
        beta: f32,
    },
    /// `x·clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// `eˣ`.
    Exponential,
    /// The error function `erf(x)`, from which ONNX exports before opset 20 build GELU.
    Erf,
    /// `√x` (an L2 norm's last step).
    Sqrt,
    /// `xᵉ` for a constant `e` (`Pow` by a constant; local response normalisation's
    /// `d^−β`): NaN below zero unless `e` is a whole number, as in ONNX.
    Power {
        /// The exponent.
        exponent: f32,
    },
    /// Quantized and back (ONNX's `QuantizeLinear` then `DequantizeLinear`, what quantized
    /// files put after each layer): `scale·(clamp(round(x/scale) + zero, lo, hi) − zero)`,
    /// rounding half to even. Its gradient passes where the integer fell inside
    /// `[lo, hi]` (the straight-through estimator of quantisation-aware training).
    FakeQuant {
        /// The step between integers.
        scale: f32,
        /// The integer that stands for 0.
        zero: f32,
        /// The integer type's least value.
        lo: f32,
        /// Its greatest.
        hi: f32,
    },
}

impl Activation {
    /// SELU's `alpha`, as Keras and ONNX define it.
    pub const SELU_ALPHA: f32 = 1.673_263_2;
    /// SELU's `scale` (ONNX's `gamma`).
    pub const SELU_SCALE: f32 = 1.050_701;
    /// SELU, with those constants.
    pub const SELU: Activation =
        Activation::Elu { alpha: Self::SELU_ALPHA, scale: Self::SELU_SCALE };

    /// Keras's name for it, as `model.summary()` and configs spell it.
    pub fn keras_name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Clip { min, max } if min == 0.0 && max == 6.0 => "relu6",
            Activation::Clip { .. } => "clip",
            Activation::Elu { scale: 1.0, .. } => "elu",
            Activation::Elu { .. } => "selu",
            Activation::Softplus => "softplus",
            Activation::Softsign => "softsign",
            Activation::Swish => "swish",
            Activation::Gelu { .. } => "gelu",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
            Activation::Exponential => "exponential",
            Activation::Erf => "erf",
            Activation::Sqrt => "sqrt",
            Activation::Power { .. } => "pow",
            Activation::FakeQuant { .. } => "fake_quant",
        }
    }

    /// Whether its gradient needs its input, not just its output (the engine then keeps
    /// the input of a fused one).
    pub fn gradient_reads_input(self) -> bool {
        matches!(
            self,
            Activation::Elu { .. }
                | Activation::Swish
                | Activation::Gelu { .. }
                | Activation::HardSwish
                | Activation::Erf
                | Activation::Power { .. }
                | Activation::FakeQuant { .. }
        )
    }
}

/// Spatial padding of a conv or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// Output size `ceil(in / stride)`, the extra pixel (if any) at the bottom/right, as
    /// TensorFlow and ONNX `SAME_UPPER` do.
    Same,
    /// Explicit pixels on each side.
    Explicit {
        /// Rows above.
        top: usize,
        /// Columns to the left.
        left: usize,
        /// Rows below.
        bottom: usize,
        /// Columns to the right.
        right: usize,
    },
    /// Explicit pixels, with the output size rounded up as PyTorch's and ONNX's `ceil_mode`
    /// does: a last window that starts inside the input (or its padding before) may run
    /// past the padding after; those cells are padding too, and resolve adds them there.
    /// For pools only.
    Ceil {
        /// Rows above.
        top: usize,
        /// Columns to the left.
        left: usize,
        /// Rows below, before the partial window's extra.
        bottom: usize,
        /// Columns to the right, before the partial window's extra.
        right: usize,
    },
}

/// Padding resolved to pixels: `[top, left, bottom, right]`.
pub type Pads = [usize; 4];

impl Padding {
    /// Pixels on each side for an input of `size` = `[h, w]`.
    pub fn resolve(
        self,
        size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Pads {
        match self {
            Padding::Valid => [0; 4],
            Padding::Explicit { top, left, bottom, right } => [top, left, bottom, right],
            Padding::Ceil { top, left, bottom, right } => {
                let extra = |axis: usize, before: usize, after: usize| {
                    let stride = stride[axis].max(1);
                    let span = kernel[axis].saturating_sub(1).saturating_mul(dilation[axis]) + 1;
                    let padded = size[axis].saturating_add(before).saturating_add(after);
                    let Some(reach) = padded.checked_sub(span) else { return 0 };
                    let mut last_start = reach.div_ceil(stride) * stride;
                    // The last window must start inside the input or the padding before it.
                    if last_start >= size[axis].saturating_add(before) {
                        last_start -= stride;
                    }
                    (last_start + span).saturating_sub(padded)
                };
                [top, left, bottom + extra(0, top, bottom), right + extra(1, left, right)]
            }
            Padding::Same => {
                // Saturating, and a zero stride read as 1: this runs on what a file says,
                // before shape inference rejects such windows with a message.
                let total = |axis: usize| {
                    let stride = stride[axis].max(1);
                    let out = size[axis].div_ceil(stride);
                    let span = kernel[axis].saturating_sub(1).saturating_mul(dilation[axis]) + 1;
                    out.saturating_sub(1)
                        .saturating_mul(stride)
                        .saturating_add(span)
                        .saturating_sub(size[axis])
                };
                let (th, tw) = (total(0), total(1));
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        }
    }
}

/// The operation a node performs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Op {
    /// 2-D convolution; weights `kernel` `[filters, C/groups, kh, kw]` and `bias` `[filters]`.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel size `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        #[serde(default = "ones")]
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
        /// Dilation `[dh, dw]`.
        #[serde(default = "ones")]
        dilation: [usize; 2],
        /// Channel groups (1 = ordinary, C = depthwise).
        #[serde(default = "one")]
        groups: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
        /// Fused activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Transposed 2-D convolution (a decoder's upsampling): the input gradient of the
    /// convolution from its output back to its input, whose kernel `kernel` is
    /// `[C, filters/groups, kh, kw]`; `bias` `[filters]`.
    ConvTranspose {
        /// Output channels.
        filters: usize,
        /// Kernel size `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Pixels cut from the full output `[top, left, bottom, right]`.
        pads: Pads,
        /// Rows and columns added after (which no input pixel reaches: zero plus bias).
        output_padding: [usize; 2],
        /// Dilation `[dh, dw]`.
        dilation: [usize; 2],
        /// Channel groups.
        groups: usize,
        /// Whether there is a bias.
        bias: bool,
    },
    /// Fully connected layer on a vector; weights `kernel` `[in, units]`, `bias` `[units]`.
    Dense {
        /// Output features.
        units: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
        /// Fused activation.
        #[serde(default)]
        activation: Activation,
    },
    /// A standalone activation.
    Activation {
        /// Which one.
        activation: Activation,
    },
    /// Max pooling; padded cells never win.
    MaxPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
    },
    /// Average pooling.
    AvgPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
        /// Whether padded cells count in the divisor (ONNX's `count_include_pad`); Keras
        /// and ONNX's default exclude them.
        #[serde(default)]
        count_include_pad: bool,
    },
    /// Mean over the spatial axes: `[C, H, W]` → `[C]` (or `[C, 1, 1]` with `keep_dims`).
    GlobalAvgPool {
        /// Keep the spatial axes as size 1 (ONNX) instead of dropping them (Keras).
        #[serde(default)]
        keep_dims: bool,
    },
    /// Batch normalisation at inference, over axis 0 of the per-sample shape; weights
    /// `gamma`, `beta`, `moving_mean`, `moving_variance`, each `[C]`.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Layer normalisation: each sample standardised over the per-sample `axes` (ascending;
    /// `[0]` is ConvNeXt's over channels), then scaled by weight `gamma` and shifted by
    /// `beta`, each shaped as those axes.
    LayerNorm {
        /// Per-sample axes normalised together, ascending.
        axes: Vec<usize>,
        /// Added to the variance.
        epsilon: f32,
    },
    /// Group normalisation: the channels (axis 0) in `groups` consecutive groups, each
    /// group of a sample standardised over its channels and positions, then a per-channel
    /// `gamma` and `beta`. Instance normalisation is one group per channel.
    GroupNorm {
        /// Number of groups; divides the channels.
        groups: usize,
        /// Added to the variance.
        epsilon: f32,
    },
    /// Parametric ReLU: `x` where positive, else `slope·x`, with weight `slope` one value per
    /// channel (axis 0 of the per-sample shape). Not a ReLU for the backprop modifiers,
    /// which leave it alone as they leave leaky ReLU.
    PRelu,
    /// Dropout: identity at inference, a scaled random mask in training.
    Dropout {
        /// Fraction of units dropped in training.
        rate: f32,
    },
    /// Everything after the batch axis into one, in channels-first order.
    Flatten,
    /// A new per-sample shape; one entry may be -1.
    Reshape {
        /// Target shape without the batch axis.
        shape: Vec<i64>,
    },
    /// Permutes the per-sample axes (the batch axis stays first).
    Transpose {
        /// `perm[i]` = which input axis becomes output axis `i`.
        perm: Vec<usize>,
    },
    /// Elementwise sum of the inputs, with numpy broadcasting.
    Add,
    /// Matrix product of its two inputs over their last two per-sample axes, batched over
    /// the axes before them with numpy broadcasting: attention's `q·kᵀ` and `weights·v`,
    /// a global-context block's pooling by computed weights.
    MatMul,
    /// Joins the inputs along a per-sample axis.
    Concat {
        /// The axis (0 = channels).
        axis: usize,
    },
    /// Elementwise arithmetic with numpy broadcasting: between two inputs, or between the
    /// one input and the constant weight `value` (ONNX's `Sub`/`Div` by a mean and std).
    Arith {
        /// Which operation.
        kind: ArithKind,
        /// The constant operand, when there is one input.
        #[serde(default)]
        constant: Option<ConstOperand>,
    },
    /// Padding of the spatial axes of a `[C, H, W]` value.
    Pad {
        /// Pixels added `[top, bottom, left, right]` (Keras's `((top, bottom), (left,
        /// right))` order).
        pads: [usize; 4],
        /// The value of the added pixels (`-inf` before a max pool), in constant mode.
        #[serde(default, with = "maybe_infinite")]
        value: f32,
        /// What the added pixels hold.
        #[serde(default, skip_serializing_if = "PadMode::is_constant")]
        mode: PadMode,
    },
    /// The part `starts[i]..ends[i]` of each per-sample axis `axes[i]` (0 = channels): a
    /// channel split, a crop.
    Slice {
        /// Per-sample axes.
        axes: Vec<usize>,
        /// First index kept, per axis.
        starts: Vec<usize>,
        /// One past the last index kept, per axis.
        ends: Vec<usize>,
    },
    /// The values at `indices` along per-sample axis `axis`, which the indices' shape
    /// `dims` replaces: overlapping windows (`Tensor.unfold`), a strided slice, a
    /// reordering.
    Gather {
        /// Per-sample axis.
        axis: usize,
        /// Positions along it, in the order of the output.
        indices: Vec<usize>,
        /// The shape the indices take in the output.
        dims: Vec<usize>,
    },
    /// Resampling of the spatial axes of a `[C, H, W]` value to `size` (upsampling).
    Resize {
        /// Output `[h, w]`.
        size: [usize; 2],
        /// Output size over input size per axis, as the file gives it (the coordinate
        /// mapping uses it, not the rounded sizes).
        scale: [f32; 2],
        /// How an output pixel takes its value from the input.
        interpolation: Interpolation,
        /// Where an output pixel lies in the input.
        coordinates: Coordinates,
    },
    /// Max over the spatial axes: `[C, H, W]` → `[C]` (or `[C, 1, 1]` with `keep_dims`).
    GlobalMaxPool {
        /// Keep the spatial axes as size 1.
        #[serde(default)]
        keep_dims: bool,
    },
    /// A reduction over per-sample `axes` (0 = channels; the batch axis is never reduced):
    /// CBAM's mean and max over channels, a channels-first layer norm written out. Global
    /// pooling over the spatial axes stays [`Op::GlobalAvgPool`] / [`Op::GlobalMaxPool`].
    Reduce {
        /// What is computed over the axes.
        kind: ReduceKind,
        /// Per-sample axes reduced, ascending.
        axes: Vec<usize>,
        /// Keep the reduced axes as size 1 instead of dropping them.
        #[serde(default)]
        keep_dims: bool,
    },
}

/// What the pixels an [`Op::Pad`] adds hold (ONNX's `Pad` modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// The pad's value.
    #[default]
    Constant,
    /// The map mirrored about its edge pixel, which is not repeated (`[c b | a b c | b a]`).
    Reflect,
    /// The edge pixel repeated.
    Edge,
}

impl PadMode {
    /// Whether the added pixels hold the pad's value.
    pub fn is_constant(&self) -> bool {
        *self == PadMode::Constant
    }
}

/// What an [`Op::Reduce`] computes over its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceKind {
    /// The mean.
    Mean,
    /// The sum.
    Sum,
    /// The largest value; ties share the gradient evenly, as PyTorch's `amax` does.
    Max,
    /// The smallest value; ties share the gradient evenly, as PyTorch's `amin` does.
    Min,
}

/// How a resized pixel takes its value (ONNX `Resize`'s `mode` and `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// The nearest input pixel, halves rounded down (ONNX's default).
    NearestRoundPreferFloor,
    /// The nearest input pixel, halves rounded up.
    NearestRoundPreferCeil,
    /// The input pixel at or before (PyTorch's and Keras's `nearest`).
    NearestFloor,
    /// The input pixel at or after.
    NearestCeil,
    /// Linear in each axis between the two input pixels around (bilinear).
    Linear,
    /// Keys' cubic convolution over the four input pixels around, with PyTorch's and
    /// ONNX's coefficient −0.75, border pixels repeated (bicubic).
    Cubic,
}

impl Interpolation {
    /// The resize of an axis of `input` pixels to `output` by `scale` as a row-major
    /// `[output, input]` matrix: each output pixel a weighted sum of input pixels, so a
    /// map's resize is `R·x·Cᵀ` and its gradient `Rᵀ·g·C`.
    pub fn matrix(
        self,
        coordinates: Coordinates,
        scale: f32,
        input: usize,
        output: usize,
    ) -> Vec<f64> {
        let mut m = vec![0f64; output * input];
        let last = input.saturating_sub(1) as f64;
        let nearest = |i: f64| i.clamp(0.0, last) as usize;
        for (o, row) in m.chunks_exact_mut(input.max(1)).enumerate().take(output) {
            let at = coordinates.source(o, f64::from(scale), input, output);
            // The nearest pixel as float32 runtimes (ONNX Runtime, TensorFlow) find it:
            // their coordinate is a float32, so one that f64 puts a hair below a whole
            // or half pixel (2.5 · 14/5) lands on it there, and rounds the other way.
            let snapped = at as f32 as f64;
            match self {
                Interpolation::Linear => {
                    let at = at.clamp(0.0, last);
                    let low = at.floor();
                    let high = (low + 1.0).min(last);
                    row[low as usize] += 1.0 - (at - low);
                    row[high as usize] += at - low;
                }
                Interpolation::Cubic => {
                    let low = at.floor();
                    for (k, weight) in cubic_weights(at - low).into_iter().enumerate() {
                        row[nearest(low + k as f64 - 1.0)] += weight;
                    }
                }
                Interpolation::NearestFloor => row[nearest(snapped.floor())] = 1.0,
                Interpolation::NearestCeil => row[nearest(snapped.ceil())] = 1.0,
                Interpolation::NearestRoundPreferFloor => {
                    let tie = snapped.fract() == 0.5;
                    row[nearest(if tie { snapped.floor() } else { snapped.round() })] = 1.0;
                }
                Interpolation::NearestRoundPreferCeil => row[nearest(snapped.round())] = 1.0,
            }
        }
        m
    }
}

/// The weights of the four pixels around a point `t` (in [0, 1)) past the second: Keys'
/// cubic convolution kernel with `a = −0.75`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |d: f64| ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    [far(1.0 + t), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Where output pixel `o` of a resize lies in the input, for scale `s` (ONNX's
/// `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordinates {
    /// `(o + ½)/s − ½`: pixel centres line up (PyTorch's `align_corners=False`, TF 2).
    HalfPixel,
    /// As half-pixel, but 0 when the output is one pixel long.
    PytorchHalfPixel,
    /// `o·(in − 1)/(out − 1)`: the corner pixels line up.
    AlignCorners,
    /// `o/s`.
    Asymmetric,
}

impl Coordinates {
    /// The input coordinate of output pixel `o`, for an axis of `input` → `output` pixels.
    pub fn source(self, o: usize, scale: f64, input: usize, output: usize) -> f64 {
        let o = o as f64;
        match self {
            Coordinates::HalfPixel => (o + 0.5) / scale - 0.5,
            Coordinates::PytorchHalfPixel if output > 1 => (o + 0.5) / scale - 0.5,
            Coordinates::PytorchHalfPixel => 0.0,
            Coordinates::AlignCorners if output > 1 => {
                o * (input as f64 - 1.0) / (output as f64 - 1.0)
            }
            Coordinates::AlignCorners => 0.0,
            Coordinates::Asymmetric => o / scale,
        }
    }
}

/// The operation of an [`Op::Arith`] node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithKind {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)`; a tie splits the gradient evenly, as PyTorch's `maximum` does.
    Max,
    /// `min(a, b)`; a tie splits the gradient evenly.
    Min,
}

/// The constant operand of an [`Op::Arith`] node, stored as its weight `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstOperand {
    /// Per-sample shape (no batch axis), broadcast numpy-style (right-aligned) against the
    /// input's per-sample shape.
    pub shape: Vec<usize>,
    /// The constant is the left operand (`c - x`, `c / x`).
    #[serde(default)]
    pub left: bool,
    /// A learned weight (ConvNeXt's layer scale), counted among the parameters; otherwise
    /// a literal (`x + 3`, a normalisation's mean), which Keras does not count.
    #[serde(default)]
    pub learned: bool,
}

fn ones() -> [usize; 2] {
    [1, 1]
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// The softmax over per-sample axis `axis` of value `x` as the ops it is made of,
/// `exp(x − max) / Σ exp(x − max)` over the axis, each op handed to `emit` (a base name, the
/// op, its inputs; it returns the name it gave the node), the steps under `base/…` and the
/// last under `base`. The engine's one-op softmax is a vector's; a softmax within a sample
/// (over a map's channels at each pixel, or attention's keys) is these steps.
pub fn softmax_steps<E>(
    base: &str,
    x: String,
    axis: usize,
    mut emit: impl FnMut(&str, Op, Vec<String>) -> std::result::Result<String, E>,
) -> std::result::Result<String, E> {
    let reduce = |kind| Op::Reduce { kind, axes: vec![axis], keep_dims: true };
    let arith = |kind| Op::Arith { kind, constant: None };
    let max = emit(&format!("{base}/max"), reduce(ReduceKind::Max), vec![x.clone()])?;
    let shifted = emit(&format!("{base}/shifted"), arith(ArithKind::Sub), vec![x, max])?;
    let exp = Op::Activation { activation: Activation::Exponential };
    let exp = emit(&format!("{base}/exp"), exp, vec![shifted])?;
    let sum = emit(&format!("{base}/sum"), reduce(ReduceKind::Sum), vec![exp.clone()])?;
    emit(base, arith(ArithKind::Div), vec![exp, sum])
}

impl Op {
    /// Keras's class name, for the layer table, as far as the op alone tells
    /// ([`Graph::type_name`](super::Graph::type_name) also knows a depthwise conv by its input).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "Conv2D",
            Op::ConvTranspose { .. } => "Conv2DTranspose",
            Op::Dense { .. } => "Dense",
            Op::Activation { activation: Activation::Relu } => "ReLU",
            Op::Activation { activation: Activation::LeakyRelu { .. } } => "LeakyReLU",
            Op::Activation { activation: Activation::Softmax } => "Softmax",
            Op::Activation { activation: Activation::Clip { min, .. } } if *min == 0.0 => "ReLU",
            Op::Activation { activation: Activation::Elu { scale: 1.0, .. } } => "ELU",
            Op::Activation { .. } => "Activation",
            Op::MaxPool { .. } => "MaxPooling2D",
            Op::AvgPool { .. } => "AveragePooling2D",
            Op::GlobalAvgPool { .. } => "GlobalAveragePooling2D",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Dropout { .. } => "Dropout",
            Op::PRelu => "PReLU",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::GroupNorm { .. } => "GroupNormalization",
            Op::Flatten => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Permute",
            Op::Add => "Add",
            Op::Concat { .. } => "Concatenate",
            Op::MatMul => "MatMul",
            Op::Arith { kind: ArithKind::Add, .. } => "Add",
            Op::Arith { kind: ArithKind::Sub, .. } => "Subtract",
            Op::Arith { kind: ArithKind::Mul, .. } => "Multiply",
            Op::Arith { kind: ArithKind::Div, .. } => "Divide",
            Op::Arith { kind: ArithKind::Max, .. } => "Maximum",
            Op::Arith { kind: ArithKind::Min, .. } => "Minimum",
            Op::Pad { mode: PadMode::Reflect, .. } => "ReflectionPadding2D",
            Op::Pad { mode: PadMode::Edge, .. } => "ReplicationPadding2D",
            Op::Pad { value, .. } if *value == 0.0 => "ZeroPadding2D",
            Op::Pad { .. } => "Pad",
            Op::GlobalMaxPool { .. } => "GlobalMaxPooling2D",
            Op::Slice { .. } => "Slice",
            Op::Gather { .. } => "Gather",
            Op::Resize { .. } => "UpSampling2D",
            // Keras 3's op layers (`keras.ops.mean(x, axis=…)` and the like).
            Op::Reduce { kind: ReduceKind::Mean, .. } => "Mean",
            Op::Reduce { kind: ReduceKind::Sum, .. } => "Sum",
            Op::Reduce { kind: ReduceKind::Max, .. } => "Max",
            Op::Reduce { kind: ReduceKind::Min, .. } => "Min",
        }
    }

    /// The common convolution: a square `kernel`, stride 1, no dilation, one group, a bias.
    pub fn conv(filters: usize, kernel: usize, padding: Padding, activation: Activation) -> Op {
        Op::Conv2d {
            filters,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding,
            dilation: [1, 1],
            groups: 1,
            bias: true,
            activation,
        }
    }

    /// The fused activation of a conv/dense node, or the activation of an activation node.
    pub fn activation(&self) -> Activation {
        match self {
            Op::Conv2d { activation, .. }
            | Op::Dense { activation, .. }
            | Op::Activation { activation } => *activation,
            _ => Activation::Linear,
        }
    }

    /// The activation a conv/dense/activation node applies, to change it.
    pub fn activation_mut(&mut self) -> Option<&mut Activation> {
        match self {
            Op::Conv2d { activation, .. }
            | Op::Dense { activation, .. }
            | Op::Activation { activation } => Some(activation),
            _ => None,
        }
    }

    /// Whether the node's output keeps a spatial `[C, H, W]` layout that grad-CAM can use.
    pub fn is_conv(&self) -> bool {
        matches!(self, Op::Conv2d { .. })
    }
}

/// Floats that may be infinite, in JSON, which has no infinity (serde_json writes `null`):
/// a number, or `"inf"`, `"-inf"`, `"nan"`.
mod maybe_infinite {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f32, s: S) -> Result<S::Ok, S::Error> {
        match value {
            v if v.is_finite() => s.serialize_f32(*v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if *v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f32),
            Name(String),
        }
        match Written::deserialize(d)? {
            Written::Number(v) => Ok(v),
            Written::Name(name) => match name.as_str() {
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                "nan" => Ok(f32::NAN),
                other => Err(D::Error::custom(format!("'{other}' is not a number"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn infinite_values_survive_json() {
        for value in [f32::NEG_INFINITY, f32::INFINITY, -f32::MAX, 0.5] {
            let op = super::Op::Pad { pads: [1, 0, 0, 1], value, mode: super::PadMode::Constant };
            let json = serde_json::to_string(&op).expect("json");
            let back: super::Op = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, op, "{json}");
            // Constant mode is left out, so files written before modes came read the same.
            assert!(!json.contains("mode"), "{json}");
        }
        let mode = super::PadMode::Reflect;
        let reflect = super::Op::Pad { pads: [1; 4], value: 0.0, mode };
        let json = serde_json::to_string(&reflect).expect("json");
        assert!(json.contains("\"mode\":\"reflect\""), "{json}");
        assert_eq!(serde_json::from_str::<super::Op>(&json).expect("parse"), reflect);
        let op = super::Op::Pad { pads: [0; 4], value: f32::NAN, mode: super::PadMode::Constant };
        let nan = serde_json::to_string(&op);
        assert!(nan.expect("json").contains("\"nan\""));
    }

    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        // 5 wide, stride 2, kernel 4: out = 3, span 4, total = 2*2 + 4 - 5 = 3 → 1 before, 2 after.
        assert_eq!(Padding::Same.resolve([5, 5], [4, 4], [2, 2], [1, 1]), [1, 1, 2, 2]);
        assert_eq!(Padding::Same.resolve([28, 28], [3, 3], [1, 1], [1, 1]), [1, 1, 1, 1]);
    }

    #[test]
    fn ceil_mode_adds_the_partial_window_after() {
        let ceil = |pad: usize| Padding::Ceil { top: pad, left: pad, bottom: pad, right: pad };
        // 112 → 56 with a 3×3 window, stride 2 (GoogLeNet's first pool): floor gives 55.
        assert_eq!(ceil(0).resolve([112, 112], [3, 3], [2, 2], [1, 1]), [0, 0, 1, 1]);
        // Windows that tile exactly get nothing extra.
        assert_eq!(ceil(0).resolve([8, 9], [2, 3], [2, 3], [1, 1]), [0, 0, 0, 0]);
        // 5 with pad 1, window 2, stride 2: windows start at -1, 1, 3, 5; the one at 5
        // starts in the padding after, so PyTorch drops it: 3 windows, no extra.
        assert_eq!(ceil(1).resolve([5, 5], [2, 2], [2, 2], [1, 1]), [1, 1, 1, 1]);
        // 6 with pad 1, window 3, stride 2: starts -1, 1, 3, 5 (inside): extra 1.
        assert_eq!(ceil(1).resolve([6, 6], [3, 3], [2, 2], [1, 1]), [1, 1, 2, 2]);
    }
}
