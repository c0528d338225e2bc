//! Elementwise passes the forward and backward make on whole feature maps: the sum of
//! same-shaped values (residual adds, gradient accumulation) and a per-channel affine map
//! (batch norm at inference and its gradient). candle's binary ops split such passes over
//! its own barrier pool, which spun for about a third of their time on the 2-core machine;
//! these split them over rayon's in large chunks, and compute the affine map in one pass
//! instead of a multiply and an add.

use candle_core::{DType, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use super::{with_float, with_slice};
use crate::error::{Error, Result};

/// Values per task when a pass is split over the pool: large enough that scheduling is
/// noise, small enough that both cores get work on a 56×56 map.
const CHUNK: usize = 1 << 14;

/// `a + b` for tensors of the same shape; `None` when the shapes differ (the caller
/// broadcasts).
pub fn add_same_shape(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Ok(None);
    }
    with_float!(a.dtype(), T => with_slice::<T, _>(a, |xs| {
        with_slice::<T, _>(b, |ys| {
            let mut sum = vec![T::zero(); xs.len()];
            let add = |(s, (x, y)): (&mut [T], (&[T], &[T]))| {
                for ((s, &x), &y) in s.iter_mut().zip(x).zip(y) {
                    *s = x + y;
                }
            };
            if xs.len() < 2 * CHUNK {
                add((&mut sum, (xs, ys)));
            } else {
                sum.par_chunks_mut(CHUNK)
                    .zip(xs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
                    .for_each(add);
            }
            Ok(Some(Tensor::from_vec(sum, a.dims(), a.device())?))
        })
    }))
}

/// `x·scale[c] + shift[c]` over a batch `[N, C, …]`, with `scale` and `shift` holding one
/// value per channel (`shift` none: zero).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let channels = *dims.get(1).ok_or_else(|| {
        Error::Invalid(format!("a per-channel scale needs channels, got shape {dims:?}"))
    })?;
    let plane: usize = dims[2..].iter().product();
    if scale.elem_count() != channels || shift.is_some_and(|s| s.elem_count() != channels) {
        return Err(Error::Invalid(format!(
            "{channels} channels but {} scales",
            scale.elem_count()
        )));
    }
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let scale = scale.to_dtype(x.dtype())?.flatten_all()?.to_vec1::<T>()?;
        let shift = match shift {
            Some(s) => s.to_dtype(x.dtype())?.flatten_all()?.to_vec1::<T>()?,
            None => vec![T::zero(); channels],
        };
        let mut out = vec![T::zero(); xs.len()];
        let map = |(c, (o, x)): (usize, (&mut [T], &[T]))| {
            let (a, b) = (scale[c % channels], shift[c % channels]);
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x * a + b;
            }
        };
        if plane == 0 {
            // Nothing to map.
        } else if xs.len() < 2 * CHUNK {
            out.chunks_mut(plane).zip(xs.chunks(plane)).enumerate().for_each(map);
        } else {
            out.par_chunks_mut(plane).zip(xs.par_chunks(plane)).enumerate().for_each(map);
        }
        Ok(Tensor::from_vec(out, dims, x.device())?)
    }))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn ramp(dims: &[usize], dtype: DType) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor) -> bool {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64);
        d.unwrap().to_scalar::<f64>().unwrap() < 1e-6
    }

    #[test]
    fn sums_equal_candles_small_and_split() {
        for dims in [vec![2, 3, 4, 5], vec![1, 64, 32, 32]] {
            for dtype in [DType::F32, DType::F64] {
                let (a, b) = (ramp(&dims, dtype), ramp(&dims, dtype).affine(-0.5, 1.0).unwrap());
                let sum = add_same_shape(&a, &b).unwrap().unwrap();
                assert!(close(&sum, &(&a + &b).unwrap()));
            }
        }
        let (a, b) = (ramp(&[2, 3], DType::F32), ramp(&[1, 3], DType::F32));
        assert!(add_same_shape(&a, &b).unwrap().is_none());
    }

    #[test]
    fn channel_affine_equals_broadcast_ops() {
        for dims in [vec![2, 3, 4, 5], vec![2, 64, 32, 32], vec![3, 7]] {
            let x = ramp(&dims, DType::F64);
            let c = dims[1];
            let scale = ramp(&[c], DType::F64).affine(2.0, 0.5).unwrap();
            let shift = ramp(&[c], DType::F64).affine(-1.0, 0.25).unwrap();
            let mut shape = vec![1; dims.len()];
            shape[1] = c;
            let (s, b) = (scale.reshape(shape.clone()).unwrap(), shift.reshape(shape).unwrap());
            let want = x.broadcast_mul(&s).unwrap().broadcast_add(&b).unwrap();
            assert!(close(&channel_affine(&x, &scale, Some(&shift)).unwrap(), &want));
            let scaled = x.broadcast_mul(&s).unwrap();
            assert!(close(&channel_affine(&x, &scale, None).unwrap(), &scaled));
        }
    }
}
