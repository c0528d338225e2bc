//! Constant padding of images: the value is written as it is, so padding with `-inf` or
//! `-f32::MAX` (how exporters write a max pool's ceil mode or same padding) is exact.

use candle_core::{DType, Tensor, WithDType};

use super::{with_float, with_slice};
use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::pad_constant;

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
}
