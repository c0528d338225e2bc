//! The ReLU: applied to conv and dense outputs as they are written ([`activate`]), and its
//! gradient ([`relu_backward`]) with the gates of the vanilla, guided and rectified rules.

use candle_core::{DType, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use super::{Float, with_float, with_slice};
use crate::error::{Error, Result};

/// `z`, or `max(z, 0)` when `relu` is set.
#[inline]
pub(super) fn activate<T: Float>(z: T, relu: bool) -> T {
    // NaN counts as not positive, as in candle's ReLU-by-mask.
    if relu && z.partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
        T::zero()
    } else {
        z
    }
}

/// `max(x, 0)` of a whole tensor, split over the pool for large maps (candle's own ReLU
/// runs on its barrier pool, which then contends with rayon's for the cores).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let mut y = vec![T::zero(); xs.len()];
        let apply = |(y, x): (&mut [T], &[T])| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = activate(x, true);
            }
        };
        const CHUNK: usize = 1 << 14;
        if xs.len() < 2 * CHUNK {
            apply((&mut y, xs));
        } else {
            y.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(apply);
        }
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
            // One loop per rule, so the flags are constants and the loop vectorises (with
            // them read per value it ran scalar).
            let gate: fn(&mut [T], &[T], &[T]) = match (gate_output, gate_grad) {
                (true, true) => relu_gate::<T, true, true>,
                (true, false) => relu_gate::<T, true, false>,
                (false, true) => relu_gate::<T, false, true>,
                (false, false) => relu_gate::<T, false, false>,
            };
            let mut dx = vec![T::zero(); gs.len()];
            // Large maps (a batch of conv outputs) over the pool: on one core this pass was 7%
            // of activation maximisation while the other core waited.
            const CHUNK: usize = 1 << 13;
            if gs.len() < 1 << 15 {
                gate(&mut dx, gs, ys);
            } else {
                dx.par_chunks_mut(CHUNK)
                    .zip(gs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
                    .for_each(|(dx, (gs, ys))| gate(dx, gs, ys));
            }
            Ok(Tensor::from_vec(dx, grad.dims(), grad.device())?)
        })
    }))
}

/// `dx = g` where the gate is open, else 0: open where `y > 0` (if `OUTPUT`) and `g > 0` (if
/// `GRAD`).
fn relu_gate<T: Float, const OUTPUT: bool, const GRAD: bool>(dx: &mut [T], gs: &[T], ys: &[T]) {
    let zero = T::zero();
    for ((dx, &g), &y) in dx.iter_mut().zip(gs).zip(ys) {
        // Non-short-circuit `|`/`&` keep the loop free of data-dependent branches, which
        // mispredict on ReLU gates about half the time.
        let open = (!OUTPUT | (y > zero)) & (!GRAD | (g > zero));
        *dx = if open { g } else { zero };
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

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
