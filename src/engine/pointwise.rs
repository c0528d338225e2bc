//! The activations of real CNNs (sigmoid and swish in EfficientNet's blocks, hard swish in
//! MobileNetV3, ReLU6's clip in MobileNetV2) and their slopes, each in one pass over the map
//! on rayon. As chains of candle ops (a negation, an exponential, an add, a reciprocal, a
//! product: a tensor each, on one thread) they were 73% of efficientnet_b0's forward pass.
//! Each formula is the one the candle chain in `apply_activation`/`activation_backward`
//! computes, in the same order, so both give the same values; activations not listed here
//! stay on that chain.

use candle_core::{DType, Tensor};
use num_traits::{Float, One, Zero};

use crate::error::{Error, Result};
use crate::kernels::{self, with_float, with_slice};
use crate::model::Activation;

/// Whether the one-pass maps take tensors of this type (candle's chain takes the rest).
fn mapped(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

/// What to do with an activation's map (a function of one value, the same for every
/// value): each arm of [`with_map`] has its own closure type, so the caller's work is a
/// generic method, monomorphised per activation and vectorised.
trait OnMap<T> {
    type Out;
    fn run(self, f: impl Fn(T) -> T + Sync + Copy) -> Self::Out;
}

/// `on.run(map)` for `activation`'s map, or `None` for an activation left to candle's ops.
fn with_map<T: MapFloat + Send + Sync, O: OnMap<T>>(
    activation: Activation,
    on: O,
) -> Option<O::Out> {
    Some(match activation {
        Activation::Sigmoid => on.run(sigmoid),
        Activation::Swish => on.run(move |x| x * sigmoid(x)),
        Activation::Tanh => on.run(T::tanh),
        Activation::Exponential => on.run(MapFloat::exp_fast),
        Activation::Clip { min, max } => {
            let (lo, hi) = (constant::<T>(min.into()), constant::<T>(max.into()));
            on.run(move |x| x.max(lo).min(hi))
        }
        Activation::HardSigmoid { alpha, beta } => {
            let (a, b) = (constant::<T>(alpha.into()), constant::<T>(beta.into()));
            on.run(move |x| (x * a + b).max(T::zero()).min(T::one()))
        }
        Activation::HardSwish => {
            let (sixth, half) = (constant::<T>(1.0 / 6.0), constant::<T>(0.5));
            on.run(move |x| x * (x * sixth + half).max(T::zero()).min(T::one()))
        }
        Activation::LeakyRelu { alpha } => {
            let a = constant::<T>(alpha.into());
            on.run(move |x| x.max(T::zero()) + x.min(T::zero()) * a)
        }
        Activation::FakeQuant { scale, zero, lo, hi } => {
            let [s, z, lo, hi] = [scale, zero, lo, hi].map(|v| constant::<T>(v.into()));
            on.run(move |x| (((x / s).round_half_even() + z).max(lo).min(hi) - z) * s)
        }
        _ => return None,
    })
}

/// The map into a new vector.
struct IntoNew<'a, T>(&'a [T]);

impl<T: MapFloat + Send + Sync> OnMap<T> for IntoNew<'_, T> {
    type Out = Vec<T>;
    fn run(self, f: impl Fn(T) -> T + Sync + Copy) -> Vec<T> {
        kernels::map(self.0, f)
    }
}

/// The map over the values where they are.
struct InPlace<'a, T>(&'a mut [T]);

impl<T: MapFloat + Send + Sync> OnMap<T> for InPlace<'_, T> {
    type Out = ();
    fn run(self, f: impl Fn(T) -> T + Sync + Copy) {
        kernels::map_in_place(self.0, f)
    }
}

/// `activation(z)` in one pass, or `None` for an activation left to candle's ops.
pub(super) fn activate(activation: Activation, z: &Tensor) -> Result<Option<Tensor>> {
    if !mapped(z.dtype()) {
        return Ok(None);
    }
    with_float!(z.dtype(), T => with_slice::<T, _>(z, |zs| {
        match with_map(activation, IntoNew(zs)) {
            Some(values) => Ok(Some(Tensor::from_vec(values, z.dims(), z.device())?)),
            None => Ok(None),
        }
    }))
}

/// Swish of `z` and the sigmoid of `z` it multiplies by, in one pass (one exponential per
/// value), or `None` for a type left to candle's ops. The backward reads the sigmoid: the
/// slope `s + y·(1 − s)` from it and the output `y` needs no exponential or division.
pub(super) fn swish_and_sigmoid(z: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    if !mapped(z.dtype()) {
        return Ok(None);
    }
    with_float!(z.dtype(), T => with_slice::<T, _>(z, |zs| {
        let (ys, ss) = kernels::map_pair(zs, |x| {
            let s = sigmoid(x);
            (x * s, s)
        });
        let tensor = |values| Tensor::from_vec(values, z.dims(), z.device());
        Ok(Some((tensor(ys)?, tensor(ss)?)))
    }))
}

/// Whether [`activate_in_place`] takes `activation` on tensors of `dtype`.
pub(super) fn maps_in_place(activation: Activation, dtype: DType) -> bool {
    mapped(dtype) && with_map::<f32, _>(activation, Probe).is_some()
}

/// A run that only tells whether an activation has a map.
struct Probe;

impl<T> OnMap<T> for Probe {
    type Out = ();
    fn run(self, _: impl Fn(T) -> T + Sync + Copy) {}
}

/// Overwrites `z`, and every tensor sharing its storage, with `activation(z)`: for a layer
/// output nothing else holds yet, the activation without a second map's memory and page
/// faults. Activations [`maps_in_place`] refuses are an error.
pub(super) fn activate_in_place(activation: Activation, z: &Tensor) -> Result<()> {
    Ok(z.inplace_op1(&InPlaceActivation(activation))?)
}

struct InPlaceActivation(Activation);

impl candle_core::InplaceOp1 for InPlaceActivation {
    fn name(&self) -> &'static str {
        "activation-in-place"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("an activation in place needs a contiguous tensor");
        };
        let done = match storage {
            candle_core::CpuStorage::F32(v) => with_map(self.0, InPlace(&mut v[start..end])),
            candle_core::CpuStorage::F64(v) => with_map(self.0, InPlace(&mut v[start..end])),
            _ => None,
        };
        match done {
            Some(()) => Ok(()),
            None => candle_core::bail!("{} has no in-place map", self.0.keras_name()),
        }
    }
}

/// The gradient `g` through `activation` at output `y` in one pass, given what the forward
/// kept for it (`kept`: swish's sigmoid, [`swish_and_sigmoid`], or another activation's
/// input), or `None` for an activation left to candle's ops (or a missing `kept`, which the
/// caller reports).
pub(super) fn slope_times(
    activation: Activation,
    g: &Tensor,
    y: &Tensor,
    kept: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let reads = match activation {
        Activation::Swish | Activation::HardSwish => kept,
        _ => Some(y),
    };
    let fits = |t: &&Tensor| t.dims() == g.dims() && t.dtype() == g.dtype();
    let Some(at) = reads.filter(fits) else {
        return Ok(None);
    };
    if !mapped(g.dtype()) || (activation == Activation::Swish && !fits(&y)) {
        return Ok(None);
    }
    with_float!(g.dtype(), T => with_slice::<T, _>(g, |gs| {
        with_slice::<T, _>(at, |ats| {
            let one = T::one();
            // `move` and a non-short-circuit `&`: borrowing `one`, or branching on the first
            // test, left the ReLU6 gradient a scalar loop (a fifth of MobileNetV2's saliency).
            let inside = move |v: T, lo: T, hi: T| if (v > lo) & (v < hi) { one } else { T::zero() };
            let values = match activation {
                Activation::Sigmoid => kernels::zip_map(gs, ats, move |g, y| g * (y * (one - y))),
                Activation::Tanh => kernels::zip_map(gs, ats, move |g, y| g * (one - y * y)),
                Activation::Exponential => kernels::zip_map(gs, ats, move |g, y| g * y),
                // s + y·(1 − s) = s·(1 + x·(1 − s)) with s = sigmoid(x), y = x·s.
                Activation::Swish => with_slice::<T, _>(y, |ys| {
                    Ok(kernels::zip3_map([gs, ats, ys], move |g, s, y| g * (s + y * (one - s))))
                })?,
                Activation::Clip { min, max } => {
                    let (lo, hi) = (constant::<T>(min.into()), constant::<T>(max.into()));
                    kernels::zip_map(gs, ats, move |g, y| g * inside(y, lo, hi))
                }
                Activation::HardSigmoid { alpha, .. } => {
                    let a = constant::<T>(alpha.into());
                    kernels::zip_map(gs, ats, move |g, y| g * (inside(y, T::zero(), one) * a))
                }
                Activation::HardSwish => {
                    let (third, half, three) =
                        (constant::<T>(1.0 / 3.0), constant::<T>(0.5), constant::<T>(3.0));
                    kernels::zip_map(gs, ats, move |g, x| {
                        let slope = match x >= three {
                            true => one,
                            false => (x * third + half) * inside(x, -three, three),
                        };
                        g * slope
                    })
                }
                Activation::LeakyRelu { alpha } => {
                    let a = constant::<T>(alpha.into());
                    kernels::zip_map(gs, ats, move |g, y| g * if y > T::zero() { one } else { a })
                }
                _ => return Ok(None),
            };
            Ok(Some(Tensor::from_vec(values, g.dims(), g.device())?))
        })
    }))
}

/// The gradient `g` through [`Activation::FakeQuant`] at input `z`, in one pass: `g` where
/// the integer `round(z/scale) + zero` fell inside `[lo, hi]` (`lo` not gating when
/// `gate_below` is off), 0 elsewhere; with `relu`, only positive `g` passes. `None` for a
/// type left to candle's ops.
pub(super) fn fake_quant_times(
    [scale, zero, lo, hi]: [f32; 4],
    g: &Tensor,
    z: &Tensor,
    relu: bool,
    gate_below: bool,
) -> Result<Option<Tensor>> {
    if !mapped(g.dtype()) || z.dtype() != g.dtype() || z.dims() != g.dims() {
        return Ok(None);
    }
    with_float!(g.dtype(), T => with_slice::<T, _>(g, |gs| {
        with_slice::<T, _>(z, |zs| {
            let [s, zero, lo, hi] = [scale, zero, lo, hi].map(|v| constant::<T>(v.into()));
            let values = kernels::zip_map(gs, zs, move |g, x| {
                let q = (x / s).round_half_even() + zero;
                // Where clamping moved the integer, the output stood still.
                let inside = (q >= lo || !gate_below) & (q <= hi);
                let g = if relu { g.max(T::zero()) } else { g };
                if inside { g } else { T::zero() }
            });
            Ok(Some(Tensor::from_vec(values, g.dims(), g.device())?))
        })
    }))
}

/// `1 / (1 + e^−x)`, as `(e^−x + 1)⁻¹` in candle's chain.
fn sigmoid<T: MapFloat>(x: T) -> T {
    ((-x).exp_fast() + T::one()).recip()
}

/// The float types the maps compute in, with the exponential they use.
pub(crate) trait MapFloat: Float {
    /// `e^x`: for f32 by a polynomial the compiler vectorises (libm's `expf` is a call per
    /// value, and was most of a swish's time), within 2 ulp of it; for f64, the reference
    /// precision, by std.
    fn exp_fast(self) -> Self;
    /// The nearest integer, halves to even (ONNX's QuantizeLinear): one instruction per
    /// lane where the CPU rounds vectors (SSE4.1 and later).
    fn round_half_even(self) -> Self;
}

impl MapFloat for f64 {
    fn exp_fast(self) -> f64 {
        self.exp()
    }
    fn round_half_even(self) -> f64 {
        self.round_ties_even()
    }
}

impl MapFloat for f32 {
    fn round_half_even(self) -> f32 {
        self.round_ties_even()
    }

    /// Cephes' `expf`: `x = n·ln 2 + r` with `n` rounded to nearest (by the 1.5·2²³ trick,
    /// no call to `floor`), `e^r` by its degree-7 polynomial on `|r| ≤ ln 2 / 2`, then
    /// `2ⁿ` put into the exponent bits. Inputs are clamped where e^x leaves f32's normal
    /// range (beyond them the result is within a factor of 1.01 of 0 or the largest
    /// float, which a sigmoid cannot tell from 0 or ∞). The reduction and the polynomial
    /// are fused multiply-adds: one instruction each in the maps, which run compiled for
    /// FMA where the CPU has it (`kernels::vectorised`); efficientnet_b0's forward 12.3 →
    /// 11.5 ms. Elsewhere `mul_add` is a correctly rounded libm call: slower, same values.
    fn exp_fast(self) -> f32 {
        const ROUND: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let x = self.clamp(-87.33654, 88.37626);
        let shifted = x * std::f32::consts::LOG2_E + ROUND;
        let n = shifted - ROUND;
        let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
        let p = 1.987_569_1e-4_f32;
        let p = p.mul_add(r, 1.398_199_9e-3);
        let p = p.mul_add(r, 8.333_452e-3);
        let p = p.mul_add(r, 4.166_579_6e-2);
        let p = p.mul_add(r, 1.666_666_5e-1);
        let p = p.mul_add(r, 0.5);
        let e_r = (p * r).mul_add(r, r) + 1.0;
        // `n` sits in the low mantissa bits of `shifted`: integer lanes take it from there
        // (a float-to-int cast saturates, which compiles to a scalar instruction per value).
        let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
        let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
        // NaN stays NaN (the clamp passes it through, and so does the product).
        e_r * scale
    }
}

/// A constant in the map's type, cast from f64 as candle's `affine` and `clamp` cast theirs.
fn constant<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn the_f32_exponential_is_within_2_ulp_of_f64s_over_its_range() {
        let mut x = -87.3f32;
        while x < 88.3 {
            let (fast, exact) = (x.exp_fast(), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * exact;
            assert!((f64::from(fast) - exact).abs() <= 2.0 * ulp, "e^{x}: {fast}, not {exact}");
            x += 0.0137;
        }
        assert!(f32::NAN.exp_fast().is_nan());
        // Far outside the clamp: 0 and 1 to within what f32 can tell.
        assert!((0.0..1e-37).contains(&sigmoid(-1000f32)));
        assert_eq!(sigmoid(1000f32), 1.0);
    }

    #[test]
    fn one_pass_activations_equal_the_f64_chain_on_a_map_split_over_the_pool() {
        let n = 3 * 64 * 32 * 32;
        let values: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.0137).sin() * 9.0).collect();
        let z64 = Tensor::from_vec(values, (3, 64, 32, 32), &Device::Cpu).unwrap();
        let z32 = z64.to_dtype(DType::F32).unwrap();
        let g32 = z32.affine(0.5, 0.1).unwrap();
        for activation in [
            Activation::Sigmoid,
            Activation::Swish,
            Activation::Tanh,
            Activation::HardSwish,
            Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Activation::Clip { min: 0.0, max: 6.0 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::Exponential,
        ] {
            let fast = activate(activation, &z32).unwrap().unwrap();
            let exact = activate(activation, &z64).unwrap().unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
                let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
                let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
                a.iter().zip(&b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max)
            };
            assert!(diff(&fast, &exact) < 1e-5, "{activation:?} forward");
            let g64 = g32.to_dtype(DType::F64).unwrap();
            // What the forward keeps for the slope: swish's sigmoid, the others' input.
            let kept = |z: &Tensor, y: &Tensor| match activation {
                Activation::Swish => {
                    let (y_too, s) = swish_and_sigmoid(z).unwrap().unwrap();
                    assert_eq!(diff(&y_too, y), 0.0, "swish's output with its sigmoid");
                    s
                }
                _ => z.clone(),
            };
            let (kept32, kept64) = (kept(&z32, &fast), kept(&z64, &exact));
            let slope32 = slope_times(activation, &g32, &fast, Some(&kept32)).unwrap().unwrap();
            let slope64 = slope_times(activation, &g64, &exact, Some(&kept64)).unwrap().unwrap();
            assert!(diff(&slope32, &slope64) < 1e-4, "{activation:?} slope");
        }
        // Left to candle's chain: GELU, and a slope without the input it needs.
        assert!(activate(Activation::Gelu { approximate: false }, &z32).unwrap().is_none());
        assert!(slope_times(Activation::Swish, &g32, &z32, None).unwrap().is_none());
    }
}
