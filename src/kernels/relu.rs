//! The ReLU: applied to conv and dense outputs as they are written ([`activate`]), and its
//! gradient ([`gated_sum`]) with the gates of the vanilla, guided and rectified rules.

use candle_core::{DType, Tensor};

use super::elementwise::filled;
use super::{Float, with_float, with_slice, with_slices};
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

/// Which ReLU gate [`gated_sum`] applies: zero where the output `y ≤ 0` (`output`; the
/// vanilla and guided rules) and where the summed gradient is `≤ 0` (`grad`; the guided and
/// rectified rules).
#[derive(Clone, Copy, Debug)]
pub struct Gate<'a> {
    /// The ReLU's output.
    pub y: &'a Tensor,
    /// Closed where `y ≤ 0`.
    pub output: bool,
    /// Closed where the gradient is `≤ 0`.
    pub grad: bool,
}

/// `scale[c] · gate(Σ parts)`: the gradients a value's readers sent it (`parts`, one shape),
/// summed, passed through a ReLU's `gate` where given and multiplied per channel (axis 1)
/// by `scale` where given (a batch norm before the ReLU), in one pass writing one new map:
/// summed a pair at a time, then gated, then scaled, each step had read and written a map.
pub fn gated_sum(parts: &[&Tensor], gate: Option<Gate>, scale: Option<&Tensor>) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::Invalid("a sum of no gradients".into()));
    };
    let dims = first.dims();
    let others = parts.iter().copied().chain(gate.map(|gate| gate.y));
    if let Some(odd) = others.clone().find(|t| t.dims() != dims || t.dtype() != first.dtype()) {
        return Err(Error::Invalid(format!(
            "gradients of shapes {dims:?} and {:?} summed",
            odd.dims()
        )));
    }
    let channels = dims.get(1).copied().unwrap_or(1);
    let plane: usize = dims.iter().skip(2).product();
    if scale.is_some_and(|s| s.elem_count() != channels) {
        return Err(Error::Invalid(format!("a scale for {channels} channels of {dims:?}")));
    }
    let tensors: Vec<&Tensor> = others.chain(scale).collect();
    with_float!(first.dtype(), T => with_slices::<T, _>(&tensors, |slices| {
        let (sums, rest) = slices.split_at(parts.len());
        let (ys, scales) = rest.split_at(usize::from(gate.is_some()));
        let (ys, scales) = (ys.first().copied(), scales.first().copied());
        // One pass per rule, so the flags are constants and the loop vectorises.
        let shape = [channels.max(1), plane.max(1)];
        let summed = match gate.map_or((false, false), |gate| (gate.output, gate.grad)) {
            (true, false) => combine::<T, true, false>(sums, ys, scales, shape),
            (true, true) => combine::<T, true, true>(sums, ys, scales, shape),
            (false, true) => combine::<T, false, true>(sums, ys, scales, shape),
            (false, false) => combine::<T, false, false>(sums, ys, scales, shape),
        };
        Ok(Tensor::from_vec(summed, dims, first.device())?)
    }))
}

/// [`gated_sum`]'s pass over slices (`y` given when a gate is): runs of one channel at a
/// time, each summed a block at a time in a buffer on the stack, so the loops over values
/// vectorise. `channels` and `plane` are at least 1.
fn combine<T: Float, const OUTPUT: bool, const GRAD: bool>(
    parts: &[&[T]],
    y: Option<&[T]>,
    scale: Option<&[T]>,
    [channels, plane]: [usize; 2],
) -> Vec<T> {
    const BLOCK: usize = 256;
    let (first, others) = (parts[0], &parts[1..]);
    let len = first.len();
    filled(len, |start, out| {
        let mut buffer = [T::zero(); BLOCK];
        let mut at = 0;
        while at < out.len() {
            let pos = start + at;
            // The rest of this channel's plane, at most a block.
            let run = (plane - pos % plane).min(BLOCK).min(out.len() - at);
            // One part is read where it lies; more are summed into the buffer, the first
            // two in one pass (a copy of the first alone was a `memcpy` call per block:
            // about 2% of densenet121's saliency).
            let sum = match others {
                [] => &first[pos..pos + run],
                [second, rest @ ..] => {
                    let sum = &mut buffer[..run];
                    let pairs = first[pos..pos + run].iter().zip(&second[pos..pos + run]);
                    sum.iter_mut().zip(pairs).for_each(|(s, (&a, &b))| *s = a + b);
                    for part in rest {
                        sum.iter_mut().zip(&part[pos..pos + run]).for_each(|(s, &v)| *s += v);
                    }
                    &buffer[..run]
                }
            };
            let factor = scale.map_or(T::one(), |scale| scale[pos / plane % channels]);
            let ys = y.map_or(&[][..], |y| &y[pos..pos + run]);
            let outs = &mut out[at..at + run];
            if OUTPUT || GRAD {
                for ((o, &g), &y) in outs.iter_mut().zip(sum.iter()).zip(ys) {
                    o.write(relu_gate::<T, OUTPUT, GRAD>(g, y) * factor);
                }
            } else {
                for (o, &g) in outs.iter_mut().zip(sum.iter()) {
                    o.write(g * factor);
                }
            }
            at += run;
        }
    })
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
    fn gated_sums_gate_each_rule_and_scale_each_channel_small_and_split() {
        let dev = Device::Cpu;
        // [n, c, h, w] with planes that straddle the 256-value blocks and the pool's
        // chunks; a flat vector (one channel); [n, c] (a plane of one value).
        for dims in [vec![2, 3, 5, 7], vec![1, 5, 112, 117], vec![1 << 16], vec![4, 9]] {
            let n: usize = dims.iter().product();
            let channels = if dims.len() > 1 { dims[1] } else { 1 };
            let plane = n / dims[0] / channels;
            let wave = |k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin()).collect() };
            let parts = [wave(0.37), wave(0.11), wave(0.23)];
            let y: Vec<f32> = wave(0.61).iter().map(|v| v.max(0.0)).collect();
            let scale: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32).collect();
            let tensor = |v: &[f32]| Tensor::from_slice(v, dims.as_slice(), &dev).unwrap();
            let part_tensors: Vec<Tensor> = parts.iter().map(|p| tensor(p)).collect();
            let (yt, scale_t) = (tensor(&y), Tensor::new(scale.as_slice(), &dev).unwrap());
            // (gate on the output, gate on the gradient): vanilla, guided, rectified, none.
            for (output, grad) in [(true, false), (true, true), (false, true), (false, false)] {
                for count in [1, 3] {
                    let refs: Vec<&Tensor> = part_tensors[..count].iter().collect();
                    let gate = Gate { y: &yt, output, grad };
                    let got = gated_sum(&refs, Some(gate), Some(&scale_t)).unwrap();
                    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let want: Vec<f32> = (0..n)
                        .map(|i| {
                            let g: f32 = parts[..count].iter().map(|p| p[i]).sum();
                            let shut = (output && y[i] <= 0.0) || (grad && g <= 0.0);
                            if shut { 0.0 } else { g * scale[i / plane % channels] }
                        })
                        .collect();
                    let worst =
                        got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(worst < 1e-5, "{dims:?}, {count} parts, gates {output} {grad}");
                }
            }
            let plain = gated_sum(&part_tensors.iter().collect::<Vec<_>>(), None, None).unwrap();
            let plain = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                plain.iter().enumerate().all(|(i, v)| (v - parts
                    .iter()
                    .map(|p| p[i])
                    .sum::<f32>())
                .abs()
                    < 1e-5)
            );
        }
        let short = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let one = Tensor::new(&[1f32], &dev).unwrap();
        assert!(gated_sum(&[&short, &one], None, None).is_err());
        assert!(
            gated_sum(&[&short], Some(Gate { y: &one, output: true, grad: false }), None).is_err()
        );
        assert!(gated_sum(&[], None, None).is_err());
        let wrong_scale = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let image = Tensor::zeros((1, 2, 3, 3), DType::F32, &dev).unwrap();
        assert!(gated_sum(&[&image], None, Some(&wrong_scale)).is_err());
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
