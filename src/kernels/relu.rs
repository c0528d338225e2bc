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
