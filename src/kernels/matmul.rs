//! Matrix products through the `gemm` crate: a strided matrix view and the checked calls
//! that the conv and dense kernels (and occlusion's dense-layer update) make.

use std::mem::MaybeUninit;

use crate::error::{Error, Result};

use super::Float;

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

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = a·b`, or `dst += a·b` with `accumulate`; `dst` is row-major `[a.rows, b.cols]`.
/// `threads > 1` lets `gemm` split the product over the rayon pool.
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
    let parallelism =
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let one = T::from_f64(1.0);
    // SAFETY: the checks above keep every element gemm reads or writes inside the three
    // buffers (dst has exactly m·n values and its strides fit them, `a` and `b` fit theirs),
    // the caller keeps dst apart from the inputs, gemm reads dst only when `accumulate`
    // (its `read_dst`), and `Float` admits only f32 and f64, types gemm computes in.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
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
    Ok(())
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
