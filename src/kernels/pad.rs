//! Padding of images. Constant: the value is written as it is, so padding with `-inf` or
//! `-f32::MAX` (how exporters write a max pool's ceil mode or same padding) is exact.
//! Reflect and edge: each added pixel copies one of the map's, and its gradient goes back
//! there.

use candle_core::{DType, Tensor, WithDType};
use num_traits::Zero;

use super::{with_float, with_slice};
use crate::error::{Error, Result};
use crate::model::PadMode;

/// `x` `[n, c, h, w]` padded with `value` by `[top, bottom, left, right]` pixels.
pub fn pad_constant(
    x: &Tensor,
    [top, bottom, left, right]: [usize; 4],
    value: f64,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h + top + bottom, w + left + right);
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let mut out = vec![T::from_f64(value); n * c * oh * ow];
        if h * w > 0 {
            for (plane, padded) in xs.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                for (y, row) in plane.chunks_exact(w).enumerate() {
                    let at = (y + top) * ow + left;
                    padded[at..at + w].copy_from_slice(row);
                }
            }
        }
        Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
    }))
}

/// Per padded coordinate along an axis of `size` padded by `before`, the map's coordinate
/// its value comes from: itself inside, the mirror image about the edge pixel (`Reflect`,
/// which needs `before` and `after` below `size`) or the edge pixel (`Edge`) outside.
fn sources(size: usize, before: usize, after: usize, mode: PadMode) -> Result<Vec<usize>> {
    let last = size as isize - 1;
    if size == 0 || (mode == PadMode::Reflect && before.max(after) as isize > last) {
        return Err(Error::Invalid(format!(
            "{mode:?} padding by {before} and {after} of an axis of {size}: reflection needs \
             pads smaller than the axis"
        )));
    }
    Ok((0..before + size + after)
        .map(|p| {
            let i = p as isize - before as isize;
            let mirrored = if i < 0 {
                -i
            } else if i > last {
                2 * last - i
            } else {
                i
            };
            match mode {
                PadMode::Reflect => mirrored as usize,
                _ => i.clamp(0, last) as usize,
            }
        })
        .collect())
}

/// `x` `[n, c, h, w]` padded by `[top, bottom, left, right]` pixels copied from the map as
/// `mode` says ([`PadMode::Reflect`] or [`PadMode::Edge`]).
pub fn pad_copied(
    x: &Tensor,
    [top, bottom, left, right]: [usize; 4],
    mode: PadMode,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (rows, cols) = (sources(h, top, bottom, mode)?, sources(w, left, right, mode)?);
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let mut out = Vec::with_capacity(n * c * rows.len() * cols.len());
        for plane in xs.chunks_exact(h * w) {
            for &y in &rows {
                let row = &plane[y * w..][..w];
                out.extend(cols.iter().map(|&x| row[x]));
            }
        }
        Ok(Tensor::from_vec(out, (n, c, rows.len(), cols.len()), x.device())?)
    }))
}

/// The gradient of [`pad_copied`] for an input of `[n, c, h, w]`: each added pixel's
/// gradient summed into the pixel it copies.
pub fn pad_copied_backward(
    grad: &Tensor,
    [n, c, h, w]: [usize; 4],
    [top, bottom, left, right]: [usize; 4],
    mode: PadMode,
) -> Result<Tensor> {
    let (rows, cols) = (sources(h, top, bottom, mode)?, sources(w, left, right, mode)?);
    if grad.dims() != [n, c, rows.len(), cols.len()] {
        return Err(Error::Invalid(format!("padding gradient of shape {:?}", grad.dims())));
    }
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        let mut dx = vec![T::zero(); n * c * h * w];
        for (plane, g) in dx.chunks_exact_mut(h * w).zip(gs.chunks_exact(rows.len() * cols.len())) {
            for (&y, g_row) in rows.iter().zip(g.chunks_exact(cols.len())) {
                let row = &mut plane[y * w..][..w];
                for (&x, &g) in cols.iter().zip(g_row) {
                    row[x] += g;
                }
            }
        }
        Ok(Tensor::from_vec(dx, (n, c, h, w), grad.device())?)
    }))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{PadMode, pad_constant, pad_copied, pad_copied_backward};

    #[test]
    fn pads_with_the_value_exactly() {
        let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let padded = pad_constant(&x, [1, 0, 0, 1], f64::NEG_INFINITY).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(padded.dims(), [1, 1, 3, 3]);
        assert_eq!(
            padded.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [inf, inf, inf, 1., 2., inf, 3., 4., inf]
        );
        let most = pad_constant(&x, [0, 1, 1, 0], f64::from(-f32::MAX)).unwrap();
        let values = most.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values, [-f32::MAX, 1., 2., -f32::MAX, 3., 4., -f32::MAX, -f32::MAX, -f32::MAX]);
    }

    #[test]
    fn reflected_and_edge_pads_copy_the_map_and_send_gradients_back() {
        // One row [a b c] = [1 2 3] padded by 2 before and 1 after, across.
        let x = Tensor::from_vec(vec![1f32, 2., 3.], (1, 1, 1, 3), &Device::Cpu).unwrap();
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let reflected = pad_copied(&x, [0, 0, 2, 1], PadMode::Reflect).unwrap();
        assert_eq!(values(reflected), [3., 2., 1., 2., 3., 2.]);
        let edge = pad_copied(&x, [0, 0, 2, 1], PadMode::Edge).unwrap();
        assert_eq!(values(edge), [1., 1., 1., 2., 3., 3.]);
        // Down a column of two, one above and below: [b a b a].
        let column = x.narrow(3, 0, 2).unwrap().reshape((1, 1, 2, 1)).unwrap();
        assert_eq!(
            values(pad_copied(&column, [1, 1, 0, 0], PadMode::Reflect).unwrap()),
            [2., 1., 2., 1.]
        );
        // The gradient: ones sum onto each source pixel.
        let ones = Tensor::ones((1, 1, 1, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let dx = pad_copied_backward(&ones, [1, 1, 1, 3], [0, 0, 2, 1], PadMode::Reflect).unwrap();
        assert_eq!(values(dx), [1., 3., 2.]);
        let dx = pad_copied_backward(&ones, [1, 1, 1, 3], [0, 0, 2, 1], PadMode::Edge).unwrap();
        assert_eq!(values(dx), [3., 1., 2.]);
        // Reflection past the far edge has nothing to mirror.
        assert!(pad_copied(&x, [0, 0, 3, 0], PadMode::Reflect).is_err());
    }
}
