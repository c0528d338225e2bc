//! Dense layers: the forward `x·K` (+ bias, ReLU) and the input gradient `g·Kᵀ`, by gemm, and
//! for a few rows (one image, a batch of classes) in f32 with AVX2 and FMA a product with a
//! transposed matrix by a kernel of its own ([`product_with_transpose`]): `a·bᵀ` as dot
//! products of `b`'s rows with `a`'s rows, two `b` rows at a time against up to five `a` rows.
//!
//! The kernel `K` `[in, out]` lies either row by row (Keras, convscope's files) or as its
//! transpose (PyTorch's `Linear` weight `[out, in]` in an ONNX `Gemm` with `transB=1`,
//! imported as a view, not moved). The two layouts swap the products: the forward is `x·K`
//! or `x·(Kᵀ)ᵀ`, the gradient `g·Kᵀ` or `g·(Kᵀ)`.
//!
//! Why not gemm: with a handful of rows against a large kernel (9216 × 128 in the digits
//! CNN) the product is bound by reading the kernel, and gemm packs (copies) all of it on
//! every call first. Here it is read once, in order, where it lies; the pool splits it by
//! rows, so each thread owns its part of every row of `dx`. The other product, `x·K` (a
//! Keras kernel's forward, a PyTorch one's gradient), adds the kernel's rows into the
//! result where they lie, skipping those multiplied by zero (see `product`).

use std::ops::Range;

use candle_core::{DType, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use super::matmul::{Mat, matmul, matmul_strided};
use super::relu::{Clamp, activate};
use super::{Float, direct, vectorised, with_float, with_optional_slice, with_slice};
use crate::error::{Error, Result};

/// How a dense kernel `[in, out]`'s values lie.
#[derive(Clone, Copy)]
enum Kernel<'a, T> {
    /// Row by row: `[in, out]`.
    RowMajor(&'a [T]),
    /// As its transpose, row by row: `[out, in]`.
    Transposed(&'a [T]),
}

/// Calls `f` with `kernel`'s values as they lie (a copy only for any other layout).
fn with_kernel<T: Float, R>(
    kernel: &Tensor,
    f: impl FnOnce(Kernel<'_, T>) -> Result<R>,
) -> Result<R> {
    if !kernel.is_contiguous() && kernel.t()?.is_contiguous() {
        return with_slice::<T, _>(&kernel.t()?, |ks| f(Kernel::Transposed(ks)));
    }
    with_slice::<T, _>(kernel, |ks| f(Kernel::RowMajor(ks)))
}

/// Dense layer forward: `x` `[n, in]` · `kernel` `[in, out]` (+ `bias` `[out]`), each value
/// clamped when `clamp` is set.
pub fn dense(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    clamp: Option<Clamp>,
) -> Result<Tensor> {
    let (n, inputs) = x.dims2()?;
    let (rows, units) = kernel.dims2()?;
    if rows != inputs {
        return Err(Error::Invalid(format!(
            "dense layer of {rows} inputs given {inputs} features"
        )));
    }
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        with_kernel::<T, _>(kernel, |ks| {
            with_optional_slice::<T, _>(bias, |bs| {
                if bs.is_some_and(|b| b.len() != units) {
                    return Err(Error::Invalid(format!("dense bias for {units} units has another length")));
                }
                let mut y = match ks {
                    Kernel::RowMajor(ks) => product(xs, ks, [n, inputs, units])?,
                    Kernel::Transposed(ks) => product_with_transpose(xs, ks, [n, inputs, units])?,
                };
                for row in y.chunks_exact_mut(units.max(1)) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = activate(*v + bs.map_or(T::zero(), |b| b[j]), clamp);
                    }
                }
                Ok(Tensor::from_vec(y, (n, units), x.device())?)
            })
        })
    }))
}

/// Gradient of [`dense`] (without its ReLU) with respect to its input: `grad · kernelᵀ`.
pub fn dense_backward_input(grad: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let (n, units) = grad.dims2()?;
    let (inputs, _) = kernel.dims2()?;
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        with_kernel::<T, _>(kernel, |ks| {
            let dx = match ks {
                Kernel::RowMajor(ks) => product_with_transpose(gs, ks, [n, units, inputs])?,
                Kernel::Transposed(ks) => product(gs, ks, [n, units, inputs])?,
            };
            Ok(Tensor::from_vec(dx, (n, inputs), grad.device())?)
        })
    }))
}

/// `a · b` for `a` `[n, k]` and `b` `[k, m]`. One or two rows (an image), or up to
/// [`MAX_ROWS`] (a batch of classes) against a `b` far larger than the caches, are bound by
/// reading `b`: its rows are split over the pool, each part added row by row into a partial
/// product of its own, skipping the rows of `b` that every row of `a` multiplies by zero (a
/// gradient below a ReLU, an input after one: about half of them), and the partial
/// products summed. gemm packed (copied) its part of `b` first: vgg11_bn's first
/// classifier layer (102M weights) read 411 MB twice and wrote it once, 44% of a grad-CAM.
/// Ten rows against the sample model's 9216 × 128 kernel (4.7 MB) ran faster by gemm
/// (activation maximisation 600–603 ms against 672–685 this way).
fn product<T: Float>(xs: &[T], ks: &[T], [n, inputs, units]: [usize; 3]) -> Result<Vec<T>> {
    let threads = rayon::current_num_threads();
    let bound_by_reading = n <= 2 || inputs * units >= 1 << 22;
    if n > MAX_ROWS || inputs * units < 1 << 16 || !bound_by_reading {
        let mut y = vec![T::zero(); n * units];
        let (a, b) = (Mat::row_major(xs, n, inputs), Mat::row_major(ks, inputs, units));
        matmul(&mut y, a, b, false, threads)?;
        return Ok(y);
    }
    if xs.len() != n * inputs || ks.len() != inputs * units {
        return Err(Error::Invalid(format!(
            "product of [{n}, {inputs}] and [{inputs}, {units}] given other sizes"
        )));
    }
    let partial = |rows: Range<usize>| {
        let mut y = vec![T::zero(); n * units];
        vectorised(|| {
            for i in rows {
                let b_row = &ks[i * units..(i + 1) * units];
                for (r, y_row) in y.chunks_exact_mut(units).enumerate() {
                    let s = xs[r * inputs + i];
                    if s != T::zero() {
                        for (y, &b) in y_row.iter_mut().zip(b_row) {
                            *y += s * b;
                        }
                    }
                }
            }
        });
        y
    };
    let mut parts =
        split_evenly(inputs, threads).into_par_iter().map(partial).collect::<Vec<_>>().into_iter();
    let mut y = parts.next().unwrap_or_else(|| vec![T::zero(); n * units]);
    for part in parts {
        for (v, p) in y.iter_mut().zip(part) {
            *v += p;
        }
    }
    Ok(y)
}

/// `a · bᵀ` for `a` `[n, k]` and `b` `[m, k]`: `[n, m]`.
fn product_with_transpose<T: Float>(a: &[T], b: &[T], [n, k, m]: [usize; 3]) -> Result<Vec<T>> {
    if let Some(out) = T::product_with_transpose(a, b, [n, m, k]) {
        return out;
    }
    let mut out = vec![T::zero(); n * m];
    // Computed as outᵀ = b·aᵀ: gemm then reads `b` row by row as it lies, where packing
    // its transpose costs more than the product itself.
    let lhs = Mat::row_major(b, m, k);
    let rhs = Mat::row_major(a, n, k).t();
    matmul_strided(&mut out, [1, m], lhs, rhs, false, rayon::current_num_threads())?;
    Ok(out)
}

/// `0..len` split into at most `parts` near-equal non-empty ranges.
fn split_evenly(len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, len.max(1));
    (0..parts).map(|i| len * i / parts..len * (i + 1) / parts).filter(|r| !r.is_empty()).collect()
}

/// Most rows this path takes; more amortise gemm's packing.
const MAX_ROWS: usize = 12;
/// Kernel rows per pass: 8 KB of a 128-unit kernel, kept in L1 while every block of
/// gradient rows reads it.
const ROWS_PER_PASS: usize = 16;
/// Gradient rows per dot-product tile: with two kernel rows that is 10 accumulators.
const GRAD_ROWS: usize = 5;

/// `a·bᵀ` with `a` `[n, units]` and `b` `[inputs, units]` (the input gradient `grad·kernelᵀ`,
/// or the forward of a transposed kernel), or None where this path does not apply.
pub(super) fn transposed_product_f32(
    gs: &[f32],
    ks: &[f32],
    dims: [usize; 3],
) -> Option<Result<Vec<f32>>> {
    let [n, inputs, units] = dims;
    let applies = (1..=MAX_ROWS).contains(&n)
        && units.is_multiple_of(8)
        && inputs * units >= 1 << 16
        && gs.len() == n * units
        && ks.len() == inputs * units
        && direct::available();
    if !applies {
        return None;
    }
    let parts = split_evenly(inputs, rayon::current_num_threads());
    // Each part owns a range of kernel rows: one column range of every row of dx.
    let mut dx = vec![0.0; n * inputs];
    let mut columns: Vec<Vec<&mut [f32]>> = parts.iter().map(|_| Vec::with_capacity(n)).collect();
    for row in dx.chunks_exact_mut(inputs) {
        let mut rest = row;
        for (part, columns) in parts.iter().zip(&mut columns) {
            let (mine, after) = rest.split_at_mut(part.len());
            columns.push(mine);
            rest = after;
        }
    }
    let part = |(rows, mut columns): (&Range<usize>, Vec<&mut [f32]>)| -> Result<()> {
        let ks = &ks[rows.start * units..rows.end * units];
        // Kernel rows in passes that stay in L1 while every block of gradient rows reads
        // them: the kernel comes from memory once.
        for pass in (0..rows.len()).step_by(ROWS_PER_PASS) {
            let pass = pass..(pass + ROWS_PER_PASS).min(rows.len());
            for (grads, columns) in gs.chunks(GRAD_ROWS * units).zip(columns.chunks_mut(GRAD_ROWS))
            {
                dots(ks, units, pass.clone(), grads, columns)?;
            }
        }
        Ok(())
    };
    let work = parts.iter().zip(columns);
    let done = if parts.len() > 1 {
        work.collect::<Vec<_>>().into_par_iter().try_for_each(part)
    } else {
        work.into_iter().try_for_each(part)
    };
    Some(done.map(|()| dx))
}

/// `columns[b][i] = grads[b] · ks[i]` for the kernel rows `i` in `pass` of `ks` (`units`
/// each) and up to [`GRAD_ROWS`] gradient rows.
fn dots(
    ks: &[f32],
    units: usize,
    pass: Range<usize>,
    grads: &[f32],
    columns: &mut [&mut [f32]],
) -> Result<()> {
    let rows = ks.len() / units.max(1);
    let fits = direct::available()
        && units.is_multiple_of(8)
        && ks.len() == rows * units
        && !pass.is_empty()
        && pass.end <= rows
        && (1..=GRAD_ROWS).contains(&columns.len())
        && grads.len() == columns.len() * units
        && columns.iter().all(|c| c.len() == rows);
    if !fits {
        return Err(Error::Invalid("dense gradient tile out of bounds".into()));
    }
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `fits` checked the CPU features and every length the kernel reads and writes.
    unsafe {
        match columns.len() {
            1 => avx2::dots::<1>(ks, units, pass.clone(), grads, columns),
            2 => avx2::dots::<2>(ks, units, pass.clone(), grads, columns),
            3 => avx2::dots::<3>(ks, units, pass.clone(), grads, columns),
            4 => avx2::dots::<4>(ks, units, pass.clone(), grads, columns),
            _ => avx2::dots::<GRAD_ROWS>(ks, units, pass.clone(), grads, columns),
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// [`super::dots`] for `B` gradient rows, two kernel rows at a time (the last one twice
    /// when their count is odd).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `units` is a multiple of 8; `ks` holds whole rows of
    /// `units` and `pass` is a non-empty range of them; `grads` holds `B` rows; `columns` has
    /// `B` slices of one value per kernel row.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots<const B: usize>(
        ks: &[f32],
        units: usize,
        pass: Range<usize>,
        grads: &[f32],
        columns: &mut [&mut [f32]],
    ) {
        // SAFETY: every load is within row `i` or `i + 1 ≤ pass.end − 1` of `ks`, or a row of
        // `grads`, at a vector start `v ≤ units − 8`; stores are bounds-checked.
        unsafe {
            for i in pass.clone().step_by(2) {
                let second = (i + 1).min(pass.end - 1);
                let (k0, k1) = (ks.as_ptr().add(i * units), ks.as_ptr().add(second * units));
                let mut acc = [[_mm256_setzero_ps(); 2]; B];
                for v in (0..units).step_by(8) {
                    let (a, b) = (_mm256_loadu_ps(k0.add(v)), _mm256_loadu_ps(k1.add(v)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let g = _mm256_loadu_ps(grads.as_ptr().add(r * units + v));
                        acc[0] = _mm256_fmadd_ps(a, g, acc[0]);
                        acc[1] = _mm256_fmadd_ps(b, g, acc[1]);
                    }
                }
                for (acc, column) in acc.iter().zip(columns.iter_mut()) {
                    column[i] = sum(acc[0]);
                    column[second] = sum(acc[1]);
                }
            }
        }
    }

    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn sum(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::kernels::testing::max_diff;

    #[test]
    fn dense_gradient_kernel_matches_gemm() {
        let dev = Device::Cpu;
        // (rows, inputs, units): one and several blocks of gradient rows, an odd number of
        // kernel rows (the last pair repeats a row), a pass boundary, and 13 rows (gemm).
        for (n, inputs, units) in
            [(1, 1031, 64), (5, 600, 128), (7, 517, 136), (12, 4096, 16), (13, 700, 128)]
        {
            let g = Tensor::randn(0f32, 1., (n, units), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (inputs, units), &dev).unwrap();
            let (gs, ks) = (
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let taken = transposed_product_f32(&gs, &ks, [n, inputs, units]).is_some();
            assert_eq!(taken, n <= 12 && direct::available(), "{n} rows");
            let ours = dense_backward_input(&g, &k).unwrap();
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let theirs = dense_backward_input(&f64s(&g), &f64s(&k)).unwrap();
            let theirs = theirs.to_dtype(DType::F32).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-3, "{n} × {inputs} × {units}");
        }
    }

    #[test]
    fn few_rows_against_a_large_kernel_skip_zeros_and_equal_gemm() {
        // (rows, inputs, units): one and two rows, split over the pool, and ten rows
        // against a kernel of 2^22 values; below a ReLU, about half of each row is zero.
        for (n, inputs, units) in [(1, 1031, 64), (2, 600, 130), (10, 4096, 1024)] {
            let a: Vec<f32> = (0..n * inputs)
                .map(|i| if (i * 7919) % 13 < 6 { 0.0 } else { ((i % 97) as f32 - 48.0) / 32.0 })
                .collect();
            let b: Vec<f32> =
                (0..inputs * units).map(|i| ((i % 89) as f32 - 44.0) / 64.0).collect();
            let ours = product(&a, &b, [n, inputs, units]).unwrap();
            let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            let (a64, b64) = (f64s(&a), f64s(&b));
            let mut theirs = vec![0.0f64; n * units];
            let (a64, b64) = (Mat::row_major(&a64, n, inputs), Mat::row_major(&b64, inputs, units));
            matmul(&mut theirs, a64, b64, false, 1).unwrap();
            let diff = ours.iter().zip(&theirs).map(|(&o, &t)| (f64::from(o) - t).abs());
            assert!(diff.fold(0.0, f64::max) < 1e-3, "{n} × {inputs} × {units}");
        }
    }

    #[test]
    fn a_kernel_lying_transposed_gives_the_same_forward_and_gradient() {
        let dev = Device::Cpu;
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        // Few rows (own kernels, split over the pool), many rows (gemm), small and large.
        for (n, inputs, units) in [(1, 4096, 64), (3, 1032, 72), (20, 700, 128), (2, 9, 5)] {
            let x = Tensor::randn(0f32, 1., (n, inputs), &dev).unwrap();
            let g = Tensor::randn(0f32, 1., (n, units), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., units, &dev).unwrap();
            // As an ONNX Gemm's B with transB=1 is imported: `[out, in]` viewed as `[in, out]`.
            let lying = Tensor::randn(0f32, 1., (units, inputs), &dev).unwrap();
            let kernel = lying.t().unwrap();
            assert!(!kernel.is_contiguous());
            let row_major = f64s(&kernel.contiguous().unwrap());
            for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: -0.5, hi: 0.5 })] {
                let ours = dense(&x, &kernel, Some(&bias), clamp).unwrap();
                let reference = dense(&f64s(&x), &row_major, Some(&f64s(&bias)), clamp).unwrap();
                let reference = reference.to_dtype(DType::F32).unwrap();
                assert!(max_diff(&ours, &reference) < 1e-3, "forward {n} × {inputs} × {units}");
            }
            let ours = dense_backward_input(&g, &kernel).unwrap();
            let reference = dense_backward_input(&f64s(&g), &row_major).unwrap();
            let reference = reference.to_dtype(DType::F32).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-3, "gradient {n} × {inputs} × {units}");
        }
    }
}
