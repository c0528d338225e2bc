//! Matrix products through the `gemm` crate: a strided matrix view and the checked calls
//! that the conv and dense kernels (and occlusion's dense-layer update) make.

use std::mem::MaybeUninit;
use std::sync::Once;

use rayon::prelude::*;

use crate::error::{Error, Result};

use super::{Float, SendPtr};

/// A matrix view of a slice: element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a, T> {
    pub(super) data: &'a [T],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    pub(super) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    pub(super) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `range` of the matrix.
    fn rows_of(self, range: std::ops::Range<usize>) -> Self {
        Mat { data: &self.data[range.start * self.row_stride..], rows: range.len(), ..self }
    }

    /// Columns `range` of the matrix.
    fn cols_of(self, range: std::ops::Range<usize>) -> Self {
        Mat { data: &self.data[range.start * self.col_stride..], cols: range.len(), ..self }
    }

    /// Whether every element lies inside `data`.
    pub(super) fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = a·b`, or `dst += a·b` with `accumulate`; `dst` is row-major `[a.rows, b.cols]`.
/// `threads > 1` splits the product over the rayon pool (see `splits`).
pub(super) fn matmul<T: Float>(
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    matmul_strided(dst, [b.cols, 1], a, b, accumulate, threads)
}

/// [`matmul`] into a `dst` with `[row_stride, col_stride]`: `[1, rows]` stores the product
/// transposed (column-major), so `(a·b)ᵀ` can be had as a product in gemm's fast order.
pub(super) fn matmul_strided<T: Float>(
    dst: &mut [T],
    dst_strides: [usize; 2],
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    let len = dst.len();
    // SAFETY: `dst` is `len` initialised values, borrowed mutably for the call.
    #[allow(unsafe_code)]
    unsafe {
        product_into(dst.as_mut_ptr(), len, dst_strides, a, b, accumulate, threads)
    }
}

/// `dst = a·b` into row-major `dst` `[a.rows, b.cols]` whose values are not initialised:
/// every one is written (a conv's output need not be zeroed first, a pass over the whole
/// map). Returns `dst`, now initialised.
pub(super) fn matmul_uninit<'d, T: Float>(
    dst: &'d mut [MaybeUninit<T>],
    a: Mat<T>,
    b: Mat<T>,
    threads: usize,
) -> Result<&'d mut [T]> {
    let len = dst.len();
    let ptr = dst.as_mut_ptr().cast::<T>();
    #[allow(unsafe_code)]
    // SAFETY: `dst` is `len` writable values, borrowed mutably for the call and its result;
    // `product_into` without `accumulate` writes all of them and reads none of them before
    // it does, so afterwards they are initialised and `ptr..ptr+len` is a valid `[T]`.
    unsafe {
        product_into(ptr, len, [b.cols, 1], a, b, false, threads)?;
        Ok(std::slice::from_raw_parts_mut(ptr, len))
    }
}

/// `dst = a·b` into row-major `dst` `[a.rows, b.cols]`, computed column-major into
/// `scratch` (at least as long as `dst`) and then transposed into place. For `a` a large
/// transposed weight (a conv's input gradient, `wᵀ·g`) and `b` of few columns: gemm
/// repacks the whole of `a` on each call in row-major order, where in column-major order it
/// reads `a` as it lies and packs only the small `b`. Measured per conv, batch 1, 2
/// threads, median of 30 alternating calls: resnet50's 3×3 512 → 512 at 7×7 2.74 →
/// 2.24 ms, its 1×1 2048 → 512 at 7×7 1.16 → 1.02.
pub(super) fn matmul_by_transpose<T: Float>(
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    scratch: &mut [T],
    threads: usize,
) -> Result<()> {
    let (m, n) = (a.rows, b.cols);
    if dst.len() != m * n || scratch.len() < m * n {
        return Err(Error::Invalid(format!(
            "a [{m}, {n}] product into {} values with {} to spare",
            dst.len(),
            scratch.len()
        )));
    }
    let transposed = &mut scratch[..m * n];
    matmul_strided(transposed, [1, m], a, b, false, threads)?;
    // Blocks of rows of dst: each reads a short run of every column of the transpose.
    const ROWS: usize = 16;
    let transposed = &*transposed;
    let block = |(index, rows): (usize, &mut [T])| {
        let first = index * ROWS;
        let height = rows.len() / n.max(1);
        for (j, column) in transposed.chunks_exact(m).enumerate() {
            for (r, &v) in column[first..first + height].iter().enumerate() {
                rows[r * n + j] = v;
            }
        }
    };
    match threads > 1 && m * n >= 1 << 16 {
        true => dst.par_chunks_mut(ROWS * n).enumerate().for_each(block),
        false => dst.chunks_mut(ROWS * n).enumerate().for_each(block),
    }
    Ok(())
}

/// `dst = a·b` (or `+=` with `accumulate`) into the `len` values at `dst`, laid out with
/// `[row_stride, col_stride]`. Without `accumulate`, writes every value and reads none.
///
/// # Safety
/// `dst` points to `len` values valid for writes (and, with `accumulate`, initialised),
/// which nothing else accesses during the call.
#[allow(unsafe_code)]
unsafe fn product_into<T: Float>(
    dst: *mut T,
    len: usize,
    [dst_row_stride, dst_col_stride]: [usize; 2],
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let fits = m == 0 || n == 0 || (m - 1) * dst_row_stride + (n - 1) * dst_col_stride < len;
    if b.rows != k || len != m * n || !fits || !a.fits() || !b.fits() {
        return Err(Error::Invalid(format!(
            "matrix product of [{m}, {k}] and [{}, {n}] into {len} values",
            b.rows
        )));
    }
    if len == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..len {
                // SAFETY: `i < len`, in the caller's buffer.
                unsafe { dst.add(i).write(T::zero()) };
            }
        }
        return Ok(());
    }
    if splits(m, n, k, [dst_row_stride, dst_col_stride], threads) {
        // Disjoint rows or columns of dst per task, each product on one thread: gemm's own
        // split over the pool kept its threads waiting on each other on the products of
        // deep, narrow layers (resnet50's 14×14 and 7×7 convs ran 20–30% slower on two
        // threads); see `splits`.
        let dst = SendPtr(dst);
        let by_rows = m > n;
        // Parts in whole microkernel tiles (16 × 6, the 16 along a row-major dst's
        // columns once gemm transposes it), so only the last part has a ragged edge.
        let (len_along, align) = if by_rows { (m, 6) } else { (n, 16) };
        let step = len_along.div_ceil(threads).div_ceil(align) * align;
        (0..len_along.div_ceil(step)).into_par_iter().for_each(|p| {
            let (lo, hi) = (p * step, ((p + 1) * step).min(len_along));
            let (a, b, offset) = match by_rows {
                true => (a.rows_of(lo..hi), b, lo * dst_row_stride),
                false => (a, b.cols_of(lo..hi), lo * dst_col_stride),
            };
            // SAFETY: as for the whole product below; this task's rows (or columns) of
            // dst are its own, as `splits` admits only layouts without overlap.
            unsafe {
                gemm_call(
                    dst.get().add(offset),
                    [dst_row_stride, dst_col_stride],
                    a,
                    b,
                    accumulate,
                    gemm::Parallelism::None,
                )
            }
        });
        return Ok(());
    }
    // SAFETY: the checks above keep every element gemm reads or writes inside the three
    // buffers (dst has exactly m·n values and its strides fit them, `a` and `b` fit theirs),
    // the caller keeps dst apart from the inputs, gemm reads dst only when `accumulate`
    // (its `read_dst`), and `Float` admits only f32 and f64, types gemm computes in.
    unsafe {
        let parallelism =
            if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        gemm_call(dst, [dst_row_stride, dst_col_stride], a, b, accumulate, parallelism);
    }
    Ok(())
}

/// Whether [`product_into`] splits an `[m, k]·[k, n]` product on `threads` threads into one
/// task per thread itself (else gemm splits it or not). It splits products large enough
/// that a task is not all overhead, into a dst laid out row- or column-major (whose rows
/// and columns do not overlap). Side by side on the 2-core machine (best of 60, GMAC/s,
/// gemm's split against halves of the longer side): 256×2304·196 62.7 → 81.9,
/// 512×4608·49 58.8 → 70.0, 672×112·196 73.3 → 82.1, 64×256·3136 74.6 → 84.4; within ±5%
/// elsewhere.
fn splits(
    m: usize,
    n: usize,
    k: usize,
    [row_stride, col_stride]: [usize; 2],
    threads: usize,
) -> bool {
    let dense = (row_stride == n && col_stride == 1) || (row_stride == 1 && col_stride == m);
    threads > 1 && dense && m * n * k >= 1 << 18
}

/// One call of gemm: `dst = a·b` (or `+=` with `accumulate`) at `dst` with the given
/// strides.
///
/// # Safety
/// Every element of the `[a.rows, b.cols]` product at `dst` with `strides` is valid for
/// writes (and reads, with `accumulate`) and accessed by nothing else during the call; `a`
/// and `b` fit their data; `T` is f32 or f64.
#[allow(unsafe_code)]
unsafe fn gemm_call<T: Float>(
    dst: *mut T,
    [dst_row_stride, dst_col_stride]: [usize; 2],
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let one = T::from_f64(1.0);
    // gemm copies the side its 6-wide tiles run along (a conv's kernel, once it has
    // transposed a row-major product) into panels unless the other side has at most
    // threshold × 16 rows. Packing reads a model's cold weights once more and writes them
    // again for a product of few pixels: raising the threshold from 2 to 16 (products of up
    // to 256 pixels, a 14×14 map or a split 16×16 one, read the kernel in place) made the
    // forward 5–8% faster (in-process alternating passes, 2-core box: resnet50 55.4 → 51.0
    // ms, densenet121 41.9 → 39.5, mobilenet_v2 7.42 → 6.96, efficientnet_b0 12.2 → 11.5)
    // and saliency 2–4%; 64 and 256 measured the same as 16. A process-wide gemm setting:
    // candle's products after the first of ours take it too.
    static UNPACKED_KERNELS: Once = Once::new();
    UNPACKED_KERNELS.call_once(|| gemm::set_rhs_packing_threshold(16));
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            dst_col_stride as isize,
            dst_row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            one,
            one,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst += a·b` for `a` `[m, k]` with rows `a_row_stride` apart, row-major `b` `[k, n]` and
/// `dst` `[m, n]`, on one thread: the small products of occlusion's dense-layer update.
pub(crate) fn matmul_accumulate<T: Float>(
    dst: &mut [T],
    a: &[T],
    a_row_stride: usize,
    b: &[T],
    [m, k, n]: [usize; 3],
) -> Result<()> {
    let a = Mat { data: a, rows: m, cols: k, row_stride: a_row_stride, col_stride: 1 };
    matmul(dst, a, Mat::row_major(b, k, n), true, 1)
}

/// `dst = a·b` for row-major `a` `[m, k]`, `b` `[k, n]` and `dst` `[m, n]` in f32: the
/// product the conv and dense kernels run, with the same settings, public so benchmarks can
/// measure the gemm rate on the kernels' own shapes.
pub fn sgemm(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    [m, k, n]: [usize; 3],
    threads: usize,
) -> Result<()> {
    matmul(dst, Mat::row_major(a, m, k), Mat::row_major(b, k, n), false, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_by_transpose_equals_a_loop() {
        // A transposed `a` as the conv gradient passes it; row blocks with a ragged last
        // one, on one thread and split.
        for [m, k, n] in [[37, 11, 5], [300, 20, 240]] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64) - 6.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 11) as f64) * 0.5 - 2.0).collect();
            for threads in [1, 2] {
                let mut dst = vec![f64::NAN; m * n];
                let mut scratch = vec![f64::NAN; m * n + 3];
                let at = Mat::row_major(&a, k, m).t();
                let bm = Mat::row_major(&b, k, n);
                matmul_by_transpose(&mut dst, at, bm, &mut scratch, threads).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want = (0..k).map(|t| a[t * m + i] * b[t * n + j]).sum::<f64>();
                        assert_eq!(dst[i * n + j], want, "[{m}, {k}, {n}] at ({i}, {j})");
                    }
                }
            }
            let mut short = vec![0.0; m * n - 1];
            let at = Mat::row_major(&a, k, m).t();
            let bm = Mat::row_major(&b, k, n);
            assert!(matmul_by_transpose(&mut vec![0.0; m * n], at, bm, &mut short, 1).is_err());
        }
    }

    #[test]
    fn products_split_over_tasks_equal_a_loop_in_both_layouts() {
        // Tall (split by rows) and wide (split by columns) products, each large enough to
        // split, into three tasks with uneven last parts; written and accumulated, into
        // row-major and column-major dst.
        for [m, k, n] in [[203, 40, 37], [29, 50, 401]] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64) - 6.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 11) as f64) * 0.5 - 2.0).collect();
            assert!(splits(m, n, k, [n, 1], 3) && splits(m, n, k, [1, m], 3));
            let expected =
                |i: usize, j: usize| (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f64>();
            for strides in [[n, 1], [1, m]] {
                for accumulate in [false, true] {
                    let mut dst = vec![1.0; m * n];
                    let (a, b) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
                    matmul_strided(&mut dst, strides, a, b, accumulate, 3).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let want = expected(i, j) + if accumulate { 1.0 } else { 0.0 };
                            let got = dst[i * strides[0] + j * strides[1]];
                            assert_eq!(got, want, "[{m}, {k}, {n}] {strides:?} at ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}
