//! Elementwise passes the forward and backward make on whole feature maps: the sum of
//! same-shaped values (residual adds, gradient accumulation), products (a squeeze-and-
//! excitation block's channel scale), a per-channel affine map (batch norm at inference and
//! its gradient) and any function of one or two values (activations and their slopes). candle's binary ops split such passes over
//! its own barrier pool, which spun for about a third of their time on the 2-core machine;
//! these split them over rayon's in large chunks, and compute the affine map in one pass
//! instead of a multiply and an add.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};
use num_traits::Zero;
use rayon::prelude::*;

use super::relu::{Clamp, activate};
use super::{Float, vectorised, with_float, with_slice, with_slices};
use crate::error::{Error, Result};

/// Values per task when a pass is split over the pool: large enough that scheduling is
/// noise, small enough that both cores get work on a 56×56 map.
const CHUNK: usize = 1 << 14;

/// `f` of every value of `xs`, split over the pool in large chunks.
pub(crate) fn map<T: Copy + Send + Sync>(xs: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    filled(
        xs.len(),
        #[inline(always)]
        |start, out| {
            for (o, &x) in out.iter_mut().zip(&xs[start..]) {
                o.write(f(x));
            }
        },
    )
}

/// The two halves of `f` of every value of `xs` as two vectors, in one pass split over the
/// pool in large chunks (an activation and what its gradient reads, from one exponential).
pub(crate) fn map_pair<T: Copy + Send + Sync>(
    xs: &[T],
    f: impl Fn(T) -> (T, T) + Sync,
) -> (Vec<T>, Vec<T>) {
    let len = xs.len();
    let (mut firsts, mut seconds) = (Vec::with_capacity(len), Vec::with_capacity(len));
    type Outs<'a, T> = (&'a mut [MaybeUninit<T>], &'a mut [MaybeUninit<T>]);
    let fill = |(xs, (firsts, seconds)): (&[T], Outs<T>)| {
        vectorised(
            #[inline(always)]
            || {
                for ((&x, a), b) in xs.iter().zip(firsts).zip(seconds) {
                    let (p, q) = f(x);
                    a.write(p);
                    b.write(q);
                }
            },
        )
    };
    let outs = (&mut firsts.spare_capacity_mut()[..len], &mut seconds.spare_capacity_mut()[..len]);
    if len < 2 * CHUNK {
        fill((xs, outs));
    } else {
        let (a, b) = outs;
        xs.par_chunks(CHUNK)
            .zip(a.par_chunks_mut(CHUNK).zip(b.par_chunks_mut(CHUNK)))
            .for_each(fill);
    }
    #[allow(unsafe_code)]
    // SAFETY: the chunks of both outputs cover `0..len` alongside `xs`'s, which is `len`
    // long, and `fill` wrote every value of each.
    unsafe {
        firsts.set_len(len);
        seconds.set_len(len);
    }
    (firsts, seconds)
}

/// `x = f(x)` for every value of `xs`, split over the pool in large chunks.
pub(crate) fn map_in_place<T: Copy + Send + Sync>(xs: &mut [T], f: impl Fn(T) -> T + Sync) {
    in_chunks(
        xs,
        #[inline(always)]
        |_, chunk| {
            for x in chunk {
                *x = f(*x);
            }
        },
    );
}

/// `work(start, chunk)` on chunks of `values` (starting at `start`), in AVX2 where the CPU
/// has it, split over the pool when there are several chunks' worth.
fn in_chunks<U: Send>(values: &mut [U], work: impl Fn(usize, &mut [U]) + Sync) {
    if values.len() < 2 * CHUNK {
        vectorised(
            #[inline(always)]
            || work(0, values),
        );
    } else {
        values.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
            vectorised(
                #[inline(always)]
                || work(i * CHUNK, chunk),
            )
        });
    }
}

/// `f` of every pair of values of `xs` and `ys` (the same length), split over the pool.
pub(crate) fn zip_map<T: Copy + Send + Sync>(
    xs: &[T],
    ys: &[T],
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    filled(
        xs.len().min(ys.len()),
        #[inline(always)]
        |start, out| {
            for ((o, &x), &y) in out.iter_mut().zip(&xs[start..]).zip(&ys[start..]) {
                o.write(f(x, y));
            }
        },
    )
}

/// `f` of every triple of values of `xs`, `ys` and `zs` (the same length), split over the
/// pool.
pub(crate) fn zip3_map<T: Copy + Send + Sync>(
    [xs, ys, zs]: [&[T]; 3],
    f: impl Fn(T, T, T) -> T + Sync,
) -> Vec<T> {
    filled(
        xs.len().min(ys.len()).min(zs.len()),
        #[inline(always)]
        |start, out| {
            let inputs = xs[start..].iter().zip(&ys[start..]).zip(&zs[start..]);
            for (o, ((&x, &y), &z)) in out.iter_mut().zip(inputs) {
                o.write(f(x, y, z));
            }
        },
    )
}

/// A vector of `len` values, written by `fill(start, chunk)` for chunks of it split over
/// the pool: `fill` writes every value of its chunk. Not zeroed first: on a fresh map that
/// pass cost as much as a swish.
pub(super) fn filled<T: Send + Sync>(
    len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    in_chunks(&mut out.spare_capacity_mut()[..len], fill);
    #[allow(unsafe_code)]
    // SAFETY: the chunks cover `0..len` and `fill` wrote every value of each (`map` and
    // `zip_map` zip their chunk with inputs at least as long).
    unsafe {
        out.set_len(len)
    };
    out
}

/// `f` of every pair of values of two tensors of the same shape and type; `None` when they
/// differ (the caller broadcasts).
fn zip_same_shape(
    a: &Tensor,
    b: &Tensor,
    f32s: impl Fn(f32, f32) -> f32 + Sync,
    f64s: impl Fn(f64, f64) -> f64 + Sync,
) -> Result<Option<Tensor>> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Ok(None);
    }
    let values = |out: Result<Tensor>| out.map(Some);
    match a.dtype() {
        DType::F32 => values(with_slice::<f32, _>(a, |xs| {
            with_slice::<f32, _>(b, |ys| {
                Ok(Tensor::from_vec(zip_map(xs, ys, &f32s), a.dims(), a.device())?)
            })
        })),
        DType::F64 => values(with_slice::<f64, _>(a, |xs| {
            with_slice::<f64, _>(b, |ys| {
                Ok(Tensor::from_vec(zip_map(xs, ys, &f64s), a.dims(), a.device())?)
            })
        })),
        _ => Ok(None),
    }
}

/// `a + b` for tensors of the same shape; `None` when the shapes differ (the caller
/// broadcasts).
pub fn add_same_shape(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    zip_same_shape(a, b, |x, y| x + y, |x, y| x + y)
}

/// `acc = activate(acc + other, clamp)` in place, overwriting `acc` and every tensor that
/// shares its storage: a residual sum (and the ReLU after it) into an operand no other node
/// reads, without a new map's memory and page faults, in one pass. False, with nothing
/// written, when the two differ in shape or type or are not f32 or f64.
pub fn add_in_place(acc: &Tensor, other: &Tensor, clamp: Option<Clamp>) -> Result<bool> {
    if acc.dims() != other.dims()
        || acc.dtype() != other.dtype()
        || !matches!(acc.dtype(), DType::F32 | DType::F64)
    {
        return Ok(false);
    }
    acc.inplace_op2(other, &SumInPlace(clamp))?;
    Ok(true)
}

/// [`add_in_place`]'s pass.
struct SumInPlace(Option<Clamp>);

impl candle_core::InplaceOp2 for SumInPlace {
    fn name(&self) -> &'static str {
        "add-in-place"
    }

    fn cpu_fwd(
        &self,
        acc: &mut CpuStorage,
        acc_layout: &Layout,
        other: &CpuStorage,
        other_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((a, a_end)), Some((b, b_end))) =
            (acc_layout.contiguous_offsets(), other_layout.contiguous_offsets())
        else {
            candle_core::bail!("a sum in place needs contiguous tensors");
        };
        match (acc, other) {
            (CpuStorage::F32(acc), CpuStorage::F32(other)) => {
                sum_into(&mut acc[a..a_end], &other[b..b_end], self.0)
            }
            (CpuStorage::F64(acc), CpuStorage::F64(other)) => {
                sum_into(&mut acc[a..a_end], &other[b..b_end], self.0)
            }
            _ => candle_core::bail!("a sum in place needs two f32 or two f64 tensors"),
        }
        Ok(())
    }
}

/// `acc = activate(acc + other, clamp)`, split over the pool.
fn sum_into<T: Float>(acc: &mut [T], other: &[T], clamp: Option<Clamp>) {
    in_chunks(
        acc,
        #[inline(always)]
        |start, chunk| {
            let pairs = chunk.iter_mut().zip(&other[start..]);
            // The clamp bound outside the loop: read through the closure's reference, it
            // might alias the values stored, and the loop would not vectorise.
            match clamp {
                None => pairs.for_each(|(a, &b)| *a += b),
                Some(clamp) => pairs.for_each(|(a, &b)| *a = activate(*a + b, Some(clamp))),
            }
        },
    );
}

/// `a · b` where that is one pass: the same shapes, or one of them a value per channel
/// (`[N or 1, C, 1, …]`, a squeeze-and-excitation scale) of the other `[N, C, …]`; `None`
/// otherwise (the caller broadcasts).
pub fn mul_fast(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if let Some(product) = zip_same_shape(a, b, |x, y| x * y, |x, y| x * y)? {
        return Ok(Some(product));
    }
    let scaled =
        |x: &Tensor, s: &Tensor| channel_affine(x, &s.flatten_all()?, None, None).map(Some);
    if is_channel_scale(b, a) {
        scaled(a, b)
    } else if is_channel_scale(a, b) {
        scaled(b, a)
    } else {
        Ok(None)
    }
}

/// Whether `s` holds one value per channel (`[N or 1, C, 1, …]`) of `x` (`[N, C, …]`), in
/// the same type.
pub fn is_channel_scale(s: &Tensor, x: &Tensor) -> bool {
    let (sd, xd) = (s.dims(), x.dims());
    sd.len() == xd.len()
        && xd.len() >= 3
        && (sd[0] == 1 || sd[0] == xd[0])
        && sd[1] == xd[1]
        && sd[2..].iter().all(|&d| d == 1)
        && s.dtype() == x.dtype()
}

/// `fill(p, at, part)` for each part of a chunk (value `start` on of a batch) that lies in
/// one plane `p` (a channel of an item, `plane` values); the part starts at value `at` of
/// the batch. An empty chunk divides by no plane.
#[inline(always)]
fn by_plane<U>(
    start: usize,
    chunk: &mut [U],
    plane: usize,
    mut fill: impl FnMut(usize, usize, &mut [U]),
) {
    let mut i = 0;
    while i < chunk.len() {
        let p = (start + i) / plane;
        let end = ((p + 1) * plane - start).min(chunk.len());
        fill(p, start + i, &mut chunk[i..end]);
        i = end;
    }
}

/// A batch of shape `dims` (`[N, C, …]`) whose every plane holds its channel's value of
/// `values` (`N·C` of them): the gradient of a mean or sum over each plane, spread back
/// (candle's broadcast and strided copy were 5% of EfficientNet-B0's saliency).
pub fn spread_channels(values: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let planes = dims.iter().take(2).product::<usize>();
    if dims.len() < 2 || values.elem_count() != planes {
        return Err(Error::Invalid(format!(
            "{} values to spread over the channels of shape {dims:?}",
            values.elem_count()
        )));
    }
    let plane: usize = dims[2..].iter().product();
    with_float!(values.dtype(), T => {
        let vs = values.flatten_all()?.to_vec1::<T>()?;
        let out = filled(planes * plane, #[inline(always)] |start, out| {
            by_plane(start, out, plane, |p, _, part| {
                for o in part {
                    o.write(vs[p]);
                }
            });
        });
        Ok(Tensor::from_vec(out, dims, values.device())?)
    })
}

/// `Σ a·b` over each plane (channel of an item) of two batches of one shape `[N, C, …]`:
/// `[N, C]`, the gradient of a per-channel scale without the full product it sums.
pub fn channel_dots(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = a.dims();
    if dims.len() < 2 || b.dims() != dims || a.dtype() != b.dtype() {
        return Err(Error::Invalid(format!(
            "per-channel products of shapes {dims:?} and {:?}",
            b.dims()
        )));
    }
    let plane: usize = dims[2..].iter().product::<usize>().max(1);
    with_float!(a.dtype(), T => with_slice::<T, _>(a, |xs| {
        with_slice::<T, _>(b, |ys| {
            let dots = plane_sums(xs, ys, plane, #[inline(always)] |x, y| x * y);
            Ok(Tensor::from_vec(dots, &dims[..2], a.device())?)
        })
    }))
}

/// The mean of each plane (channel of an item) of a batch `[N, C, …]`: `[N, C]`, a global
/// average pool in one pass on the pool.
pub fn channel_means(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(Error::Invalid(format!("per-channel means of shape {dims:?}")));
    }
    let plane: usize = dims[2..].iter().product::<usize>();
    if plane == 0 {
        return Err(Error::Invalid(format!("per-channel means of empty planes {dims:?}")));
    }
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        let count = T::from_f64(plane as f64);
        // The sums' second operand is unused: the same slice, so no buffer is made for it.
        let sums = plane_sums(xs, xs, plane, #[inline(always)] |x, _| x);
        let means = sums.into_iter().map(|sum| sum / count).collect();
        Ok(Tensor::from_vec(means, &dims[..2], x.device())?)
    }))
}

/// `Σ term(x, y)` over each plane of `plane` values of `xs` alongside `ys`, split over the
/// pool for a large batch.
fn plane_sums<T: Float>(
    xs: &[T],
    ys: &[T],
    plane: usize,
    term: impl Fn(T, T) -> T + Sync + Copy,
) -> Vec<T> {
    // Sixteen running sums, so the loop vectorises (one sum is a chain of adds the
    // compiler may not reorder).
    let sum = |(x, y): (&[T], &[T])| {
        vectorised(
            #[inline(always)]
            || {
                let (xs, ys) = (x.chunks_exact(16), y.chunks_exact(16));
                let tail = xs.remainder().iter().zip(ys.remainder());
                let tail = tail.fold(T::zero(), |sum, (&x, &y)| sum + term(x, y));
                let mut sums = [T::zero(); 16];
                for (x, y) in xs.zip(ys) {
                    for ((s, &x), &y) in sums.iter_mut().zip(x).zip(y) {
                        *s += term(x, y);
                    }
                }
                sums.iter().fold(tail, |sum, &s| sum + s)
            },
        )
    };
    if xs.len() < 2 * CHUNK {
        xs.chunks(plane).zip(ys.chunks(plane)).map(sum).collect()
    } else {
        let per_task = CHUNK.div_ceil(plane);
        xs.par_chunks(plane).zip(ys.par_chunks(plane)).with_min_len(per_task).map(sum).collect()
    }
}

/// `x·scale[c] + shift[c]` over a batch `[N, C, …]`, with `scale` and `shift` holding one
/// value per channel, or one per channel of each item (`N·C`; `shift` none: zero), clamped
/// by `clamp` when given (a batch norm and the ReLU after it in one pass).
pub fn channel_affine(
    x: &Tensor,
    scale: &Tensor,
    shift: Option<&Tensor>,
    clamp: Option<Clamp>,
) -> Result<Tensor> {
    channel_affine_of_concat(&[x], scale, shift, clamp)
}

/// [`channel_affine`] of `parts` concatenated along the channels, without the concatenation
/// ever being written: a densenet layer's batch norm reads the concat of every earlier
/// layer's maps, and copying them all once more per layer was 6% of its forward.
pub fn channel_affine_of_concat(
    parts: &[&Tensor],
    scale: &Tensor,
    shift: Option<&Tensor>,
    clamp: Option<Clamp>,
) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::Invalid("a concatenation of nothing".into()));
    };
    let mut dims = first.dims().to_vec();
    if dims.len() < 2 {
        return Err(Error::Invalid(format!(
            "a per-channel scale needs channels, got shape {dims:?}"
        )));
    }
    // For each channel of the whole: its part, its channel there and the part's channels.
    let mut sources = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let d = part.dims();
        if d.len() != dims.len() || d[0] != dims[0] || d[2..] != dims[2..] {
            return Err(Error::Invalid(format!(
                "cannot join shapes {dims:?} and {d:?} along the channels"
            )));
        }
        sources.extend((0..d[1]).map(|c| (j, c, d[1])));
    }
    let channels = sources.len();
    dims[1] = channels;
    let plane: usize = dims[2..].iter().product();
    let per_item = channels * dims[0];
    let fits = |n: usize| n == channels || n == per_item;
    if !fits(scale.elem_count()) || shift.is_some_and(|s| !fits(s.elem_count())) {
        return Err(Error::Invalid(format!(
            "{channels} channels but {} scales",
            scale.elem_count()
        )));
    }
    let dtype = first.dtype();
    with_float!(dtype, T => with_slices::<T, _>(parts, |xs| {
        let scale = scale.to_dtype(dtype)?.flatten_all()?.to_vec1::<T>()?;
        let shift = match shift {
            Some(s) => s.to_dtype(dtype)?.flatten_all()?.to_vec1::<T>()?,
            None => vec![T::zero(); channels],
        };
        let len = per_item * plane;
        let out = filled(len, #[inline(always)] |start, out| {
            by_plane(start, out, plane, |p, at, part| {
                let (a, b) = (scale[p % scale.len()], shift[p % shift.len()]);
                let (item, (j, c, in_part)) = (p / channels, sources[p % channels]);
                let from = (item * in_part + c) * plane + (at - p * plane);
                let values = part.iter_mut().zip(&xs[j][from..]);
                // The clamp bound outside the loop, as in `sum_into`.
                match clamp {
                    None => values.for_each(|(o, &x)| _ = o.write(x * a + b)),
                    Some(clamp) => {
                        values.for_each(|(o, &x)| _ = o.write(activate(x * a + b, Some(clamp))))
                    }
                }
            });
        });
        Ok(Tensor::from_vec(out, dims, first.device())?)
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

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
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
    fn sums_in_place_equal_candles_clamped_and_leave_other_shapes_untouched() {
        let relu6 = Clamp { lo: 0.0, hi: 6.0 };
        for dims in [vec![2, 3, 4, 5], vec![1, 64, 32, 32]] {
            for dtype in [DType::F32, DType::F64] {
                for clamp in [None, Some(Clamp::RELU), Some(relu6)] {
                    let (a, b) = (ramp(&dims, dtype), ramp(&dims, dtype).affine(8.0, 1.0).unwrap());
                    let sum = (&a + &b).unwrap();
                    let want = match clamp {
                        None => sum,
                        Some(Clamp { lo, hi }) => sum.clamp(lo, hi).unwrap(),
                    };
                    let acc = a.copy().unwrap();
                    assert!(add_in_place(&acc, &b, clamp).unwrap());
                    assert!(close(&acc, &want), "{dims:?} {dtype:?} {clamp:?}");
                }
            }
        }
        let (a, b) = (ramp(&[2, 3], DType::F32), ramp(&[1, 3], DType::F32));
        assert!(!add_in_place(&a, &b, None).unwrap());
        assert!(close(&a, &ramp(&[2, 3], DType::F32)));
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
            assert!(close(&channel_affine(&x, &scale, Some(&shift), None).unwrap(), &want));
            let relu = channel_affine(&x, &scale, Some(&shift), Some(Clamp::RELU)).unwrap();
            assert!(close(&relu, &want.relu().unwrap()));
            let scaled = x.broadcast_mul(&s).unwrap();
            assert!(close(&channel_affine(&x, &scale, None, None).unwrap(), &scaled));
        }
    }

    #[test]
    fn channel_affine_of_parts_equals_it_on_their_concatenation() {
        // Planes smaller and larger than a chunk; per-channel and per-item scales; one part.
        for (plane, widths) in
            [([3, 5], vec![2, 1, 4]), ([32, 32], vec![48, 16]), ([2, 2], vec![5])]
        {
            for dtype in [DType::F32, DType::F64] {
                let parts: Vec<Tensor> = widths
                    .iter()
                    .enumerate()
                    .map(|(j, &c)| ramp(&[2, c, plane[0], plane[1]], dtype).affine(1.0, j as f64))
                    .collect::<candle_core::Result<_>>()
                    .unwrap();
                let whole = Tensor::cat(&parts, 1).unwrap();
                let channels: usize = widths.iter().sum();
                for count in [channels, 2 * channels] {
                    let scale = ramp(&[count], dtype).affine(2.0, 0.5).unwrap();
                    let shift = ramp(&[count], dtype).affine(-1.0, 0.25).unwrap();
                    let refs: Vec<&Tensor> = parts.iter().collect();
                    for clamp in [None, Some(Clamp::RELU)] {
                        let want = channel_affine(&whole, &scale, Some(&shift), clamp).unwrap();
                        let got = channel_affine_of_concat(&refs, &scale, Some(&shift), clamp);
                        assert_eq!(flat(&got.unwrap()), flat(&want));
                    }
                }
            }
        }
        let (a, b) = (ramp(&[1, 2, 3, 3], DType::F32), ramp(&[1, 2, 3, 4], DType::F32));
        let scale = ramp(&[4], DType::F32);
        assert!(channel_affine_of_concat(&[&a, &b], &scale, None, None).is_err());
        assert!(channel_affine_of_concat(&[], &scale, None, None).is_err());
    }

    #[test]
    fn maps_split_over_the_pool_equal_one_pass() {
        let xs: Vec<f32> = (0..5 * CHUNK + 7).map(|i| (i as f32 * 0.37).sin()).collect();
        let ys: Vec<f32> = xs.iter().map(|v| v * 0.5 - 0.25).collect();
        let squares = map(&xs, |x| x * x);
        assert!(squares.iter().zip(&xs).all(|(s, x)| *s == x * x));
        let products = zip_map(&xs, &ys, |x, y| x * y - 1.0);
        assert!(products.iter().zip(xs.iter().zip(&ys)).all(|(p, (x, y))| *p == x * y - 1.0));
    }

    #[test]
    fn spreads_channel_dots_and_means_equal_candles_broadcast_sums_and_means() {
        // Planes smaller and larger than a chunk, several per chunk, one value each.
        for dims in [vec![2, 3, 4, 5], vec![2, 5, 130, 130], vec![1, 200, 7, 7], vec![3, 4, 1, 1]] {
            for dtype in [DType::F32, DType::F64] {
                let (n, c) = (dims[0], dims[1]);
                let values = ramp(&[n, c], dtype);
                let want = values.reshape((n, c, 1, 1)).unwrap().broadcast_as(dims.as_slice());
                let spread = spread_channels(&values, &dims).unwrap();
                assert!(close(&spread, &want.unwrap().contiguous().unwrap()), "{dims:?}");
                let (a, b) = (ramp(&dims, dtype), ramp(&dims, dtype).affine(-0.5, 0.3).unwrap());
                let want = (&a * &b).unwrap().sum_keepdim(vec![2, 3]).unwrap();
                let dots = channel_dots(&a, &b).unwrap().reshape((n, c, 1, 1)).unwrap();
                let d = (&dots - &want).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                // Sums of up to 17,000 products: f32's rounding, summed in another order.
                let scale = dims[2..].iter().product::<usize>() as f64;
                assert!(d < 1e-6 * scale, "{dims:?} {dtype:?}: {d}");
                let means = channel_means(&b).unwrap().reshape((n, c, 1, 1)).unwrap();
                let want = b.mean_keepdim(vec![2, 3]).unwrap();
                let d = (&means - &want).unwrap().abs().unwrap().max_all().unwrap();
                let d = d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
                assert!(d < 1e-6, "means {dims:?} {dtype:?}: {d}");
            }
        }
        assert!(channel_means(&ramp(&[2, 3, 0], DType::F32)).is_err());
        assert!(spread_channels(&ramp(&[2, 3], DType::F32), &[2, 4, 5, 5]).is_err());
        assert!(
            channel_dots(&ramp(&[2, 3, 4], DType::F32), &ramp(&[2, 3, 5], DType::F32)).is_err()
        );
    }

    #[test]
    fn products_equal_candles_for_same_shapes_and_channel_scales() {
        for dtype in [DType::F32, DType::F64] {
            let x = ramp(&[2, 3, 40, 50], dtype);
            for scale in [vec![2, 3, 1, 1], vec![1, 3, 1, 1], vec![2, 3, 40, 50]] {
                let s = ramp(&scale, dtype).affine(2.0, 0.5).unwrap();
                let want = x.broadcast_mul(&s).unwrap();
                assert!(close(&mul_fast(&x, &s).unwrap().unwrap(), &want), "{scale:?}");
                assert!(close(&mul_fast(&s, &x).unwrap().unwrap(), &want), "{scale:?}");
            }
            // Shapes it leaves to broadcasting.
            let row = ramp(&[1, 1, 1, 50], dtype);
            assert!(mul_fast(&x, &row).unwrap().is_none());
        }
    }
}
