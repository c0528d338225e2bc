//! Matrix products through the `gemm` crate: a strided matrix view and the checked calls
//! that the conv and dense kernels (and occlusion's dense-layer update) make.

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
#[allow(unsafe_code)]
pub(super) fn matmul_strided<T: Float>(
    dst: &mut [T],
    [dst_row_stride, dst_col_stride]: [usize; 2],
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let dst_view = Mat {
        data: &*dst,
        rows: m,
        cols: n,
        row_stride: dst_row_stride,
        col_stride: dst_col_stride,
    };
    if b.rows != k || dst.len() != m * n || !dst_view.fits() || !a.fits() || !b.fits() {
        return Err(Error::Invalid(format!(
            "matrix product of [{m}, {k}] and [{}, {n}] into {} values",
            b.rows,
            dst.len()
        )));
    }
    if dst.is_empty() {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return Ok(());
    }
    let parallelism =
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let one = T::from_f64(1.0);
    // SAFETY: the checks above keep every element gemm reads or writes inside the three
    // slices (dst has exactly m·n values and its strides fit them, `a` and `b` fit theirs), the
    // `&mut` keeps dst apart from the inputs, and `Float` admits only f32 and f64, types
    // gemm computes in.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
