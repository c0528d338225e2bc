//! The ReLU: applied to conv and dense outputs as they are written ([`activate`]), and its
//! gradient ([`relu_backward`]) with the gates of the vanilla, guided and rectified rules.

use candle_core::{DType, Tensor};

use super::{Float, with_float, with_slice, zip_map};
use crate::error::{Error, Result};
use crate::model::Activation;

/// The clamp a conv or dense kernel applies to each value as it writes it, when the layer's
/// activation is one: ReLU is `[0, ∞)`, ReLU6 (`Clip`) `[0, 6]`. Applied there, the map is
/// written once instead of written, read back and written again by a separate pass (on
/// MobileNetV2 that pass and its fresh buffer were a sixth of the forward).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clamp {
    /// Values at or below it, and NaN, become it (as in candle's ReLU-by-mask).
    pub lo: f32,
    /// Values above it become it.
    pub hi: f32,
}

impl Clamp {
    /// `max(z, 0)`.
    pub const RELU: Clamp = Clamp { lo: 0.0, hi: f32::INFINITY };

    /// The clamp that is `activation`, if it is one. Its gradient reads only the output,
    /// so a layer that applied it need not keep its input.
    pub fn of(activation: Activation) -> Option<Clamp> {
        match activation {
            Activation::Relu => Some(Clamp::RELU),
            Activation::Clip { min, max } if min <= max => Some(Clamp { lo: min, hi: max }),
            _ => None,
        }
    }
}

/// `z`, or `z` clamped when there is a clamp.
#[inline]
pub(crate) fn activate<T: Float>(z: T, clamp: Option<Clamp>) -> T {
    match clamp {
        None => z,
        Some(Clamp { lo, hi }) => {
            let (lo, hi) = (T::from_f64(lo.into()), T::from_f64(hi.into()));
            // Not above `lo` (NaN included) goes to `lo`, as `x.max(lo)` in the standalone
            // clip does.
            if z.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                lo
            } else if z > hi {
                hi
            } else {
                z
            }
        }
    }
}

/// `max(x, 0)` of a whole tensor, split over the pool for large maps (candle's own ReLU
/// runs on its barrier pool, which then contends with rayon's for the cores).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let y = super::map(xs, |x| activate(x, Some(Clamp::RELU)));
        Ok(Tensor::from_vec(y, x.dims(), x.device())?)
    }))
}

/// Gradient through a ReLU given the gradient `grad` at its output `y`: `grad`, zeroed
/// where `y ≤ 0` when `gate_output` and where `grad ≤ 0` when `gate_grad`.
pub fn relu_backward(
    grad: &Tensor,
    y: &Tensor,
    gate_output: bool,
    gate_grad: bool,
) -> Result<Tensor> {
    if grad.dims() != y.dims() {
        return Err(Error::Invalid(format!(
            "ReLU gradient of shape {:?} for an output of shape {:?}",
            grad.dims(),
            y.dims()
        )));
    }
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        with_slice::<T, _>(y, |ys| {
            // One map per rule, so the flags are constants and the loop vectorises (with
            // them read per value it ran scalar); `zip_map` splits large maps over the pool
            // and writes a fresh vector without zeroing it first.
            let dx = match (gate_output, gate_grad) {
                (true, true) => zip_map(gs, ys, relu_gate::<T, true, true>),
                (true, false) => zip_map(gs, ys, relu_gate::<T, true, false>),
                (false, true) => zip_map(gs, ys, relu_gate::<T, false, true>),
                (false, false) => zip_map(gs, ys, relu_gate::<T, false, false>),
            };
            Ok(Tensor::from_vec(dx, grad.dims(), grad.device())?)
        })
    }))
}

/// `g` where the gate is open, else 0: open where `y > 0` (if `OUTPUT`) and `g > 0` (if
/// `GRAD`).
#[inline(always)]
fn relu_gate<T: Float, const OUTPUT: bool, const GRAD: bool>(g: T, y: T) -> T {
    let zero = T::zero();
    // Non-short-circuit `|`/`&` keep the loop free of data-dependent branches, which
    // mispredict on ReLU gates about half the time.
    let open = (!OUTPUT | (y > zero)) & (!GRAD | (g > zero));
    if open { g } else { zero }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn clamps_are_the_activations_they_stand_for() {
        assert_eq!(Clamp::of(Activation::Relu), Some(Clamp::RELU));
        let relu6 = Clamp::of(Activation::Clip { min: 0.0, max: 6.0 });
        assert_eq!(relu6, Some(Clamp { lo: 0.0, hi: 6.0 }));
        assert_eq!(Clamp::of(Activation::Clip { min: 1.0, max: 0.0 }), None);
        assert_eq!(Clamp::of(Activation::Swish), None);
        for z in [-7.0f32, -0.0, 0.0, 0.25, 5.5, 6.0, 9.0, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(activate(z, None), z);
            assert_eq!(activate(z, Some(Clamp::RELU)), z.max(0.0), "{z}");
            assert_eq!(activate(f64::from(z), relu6), f64::from(z).clamp(0.0, 6.0), "{z}");
        }
        // NaN goes to the low bound, as in candle's ReLU and the standalone clip.
        assert_eq!(activate(f32::NAN, Some(Clamp::RELU)), 0.0);
        assert_eq!(activate(f32::NAN, relu6), 0.0);
        assert!(activate(f32::NAN, None).is_nan());
    }

    #[test]
    fn relu_gradient_gates_each_rule_small_and_split() {
        for n in [7, 1 << 16] {
            let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.61).cos().max(0.0)).collect();
            let (gt, yt) =
                (Tensor::new(g.as_slice(), &Device::Cpu), Tensor::new(y.as_slice(), &Device::Cpu));
            let (gt, yt) = (gt.unwrap(), yt.unwrap());
            // (gate on the output, gate on the gradient): vanilla, guided, rectified, none.
            for (output, grad) in [(true, false), (true, true), (false, true), (false, false)] {
                let got = relu_backward(&gt, &yt, output, grad).unwrap().to_vec1::<f32>().unwrap();
                let want: Vec<f32> = g
                    .iter()
                    .zip(&y)
                    .map(
                        |(&g, &y)| if (output && y <= 0.0) || (grad && g <= 0.0) { 0.0 } else { g },
                    )
                    .collect();
                assert_eq!(got, want, "{n} values, gates {output} {grad}");
            }
        }
        let short = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        assert!(
            relu_backward(&short, &Tensor::new(&[1f32], &Device::Cpu).unwrap(), true, false)
                .is_err()
        );
    }

    #[test]
    fn relu_equals_candles_small_and_split() {
        for n in [7, 1 << 16] {
            let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.7).sin()).collect();
            let x = Tensor::from_vec(v, (n,), &Device::Cpu).unwrap();
            let want = x.relu().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(relu(&x).unwrap().to_vec1::<f32>().unwrap(), want);
        }
    }
}
