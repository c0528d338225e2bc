//! Numeric kernels for the ops candle does not give us in the form we need: convolution
//! (forward, input gradient, weight gradient) with per-axis stride and dilation, asymmetric
//! padding and groups, and max/average pooling with a correct backward.
//!
//! Kernels for the hot layers work on the tensors' own contiguous buffers (borrowed, not
//! copied) and call the `gemm` crate directly: convolution is im2col (per image, into a
//! buffer reused across the batch) followed by one matrix product per group, the input
//! gradient a product followed by col2im; bias and ReLU are applied in the same pass as
//! the product's output is written. On x86-64 CPUs with AVX2 and FMA (detected at run time)
//! f32 work takes faster paths where they apply: `direct` convolution, the `sparse` input
//! gradient below a pool, the `dense` input gradient for a few rows; the 2×2 max pool's
//! gradient runs in SSE2 (`pool`). A batch of several images is split image by image over
//! the rayon pool; a single image lets gemm use the pool instead. Dense layers and the ReLU
//! gradient have kernels here too, so a forward/backward pass costs few allocations and no
//! per-op dispatch. Kernels work in f32 and f64; f64 serves the finite-difference tests.

use std::cell::Cell;
use std::thread::LocalKey;

use candle_core::{DType, Storage, Tensor, WithDType};
use num_traits::Zero;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Pads;

mod dense;
mod direct;
mod pool;
mod sparse;

/// Runs `$body` with `$T` bound to the Rust type of a float dtype.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            other => {
                Err(Error::Invalid(format!("unsupported tensor type {other:?}: use f32 or f64")))
            }
        }
    };
}
pub(crate) use with_float;

/// Window geometry of a conv or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: Pads,
}

impl Window {
    /// Output `[oh, ow]` for an input of `[h, w]`; the graph checked that windows fit.
    pub fn out_size(&self, h: usize, w: usize) -> [usize; 2] {
        let axis = |size: usize, a: usize, pad: usize| {
            let span = (self.kernel[a] - 1) * self.dilation[a] + 1;
            (size + pad - span) / self.stride[a] + 1
        };
        [axis(h, 0, self.pads[0] + self.pads[2]), axis(w, 1, self.pads[1] + self.pads[3])]
    }

    /// The output coordinates `lo..hi` on axis `a` (of `out` in all) whose tap `k` reads
    /// inside an input of `size`.
    fn inside(&self, a: usize, k: usize, size: usize, out: usize) -> (usize, usize) {
        let offset = (k * self.dilation[a]) as isize - self.pads[a] as isize;
        let stride = self.stride[a] as isize;
        let lo = if offset >= 0 { 0 } else { (-offset + stride - 1) / stride };
        let last = size as isize - 1 - offset;
        let hi = if last < 0 { 0 } else { (last / stride + 1).min(out as isize) };
        (lo.min(hi) as usize, hi as usize)
    }

    /// For output coordinate `o` on axis `a` and kernel tap `k`, the input coordinate, if it
    /// falls inside an input of `size` (else it reads padding).
    #[inline]
    fn source(&self, a: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        let pos = (o * self.stride[a] + k * self.dilation[a]).checked_sub(self.pads[a])?;
        (pos < size).then_some(pos)
    }
}

/// The float types the kernels compute in: exactly those `gemm` multiplies (it panics on
/// any other), so the trait is implemented for nothing else.
pub(crate) trait Float: WithDType + Send + Sync {
    /// This thread's reusable scratch buffer for the type, see [`Scratch`].
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>>;

    /// `grad·kernelᵀ` for `[n, units]·[inputs, units]ᵀ` by a type's own kernel, where it has
    /// one for the shape (see [`dense`](self::dense)).
    fn dense_backward(_gs: &[Self], _ks: &[Self], _dims: [usize; 3]) -> Option<Result<Vec<Self>>> {
        None
    }

    /// The gradient of a 2×2 max pool of one plane by a type's own kernel, if it has one
    /// (see [`pool`]): false where it did nothing.
    fn max_pool_2x2_backward(
        _plane: &[Self],
        _grad: &[Self],
        _w: usize,
        _dx: &mut [Self],
        _ow: usize,
    ) -> bool {
        false
    }
}

thread_local! {
    static SCRATCH_F32: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_F64: Cell<Vec<f64>> = const { Cell::new(Vec::new()) };
}

impl Float for f32 {
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>> {
        &SCRATCH_F32
    }

    fn dense_backward(gs: &[f32], ks: &[f32], dims: [usize; 3]) -> Option<Result<Vec<f32>>> {
        dense::backward_input(gs, ks, dims)
    }

    fn max_pool_2x2_backward(
        plane: &[f32],
        grad: &[f32],
        w: usize,
        dx: &mut [f32],
        ow: usize,
    ) -> bool {
        pool::max_2x2_backward(plane, grad, w, dx, ow)
    }
}

impl Float for f64 {
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>> {
        &SCRATCH_F64
    }
}

/// A buffer of `len` values taken from this thread's scratch and given back when dropped, so
/// every conv call on a thread reuses one allocation instead of allocating and zeroing its
/// column buffer (a nested user finds the scratch taken and gets a fresh buffer). Values are
/// stale: users write every value they later read.
struct Scratch<T: Float> {
    buffer: Vec<T>,
    len: usize,
}

impl<T: Float> Scratch<T> {
    /// Buffers up to this many bytes stay with the thread; a model with huge maps does not
    /// keep its peak column buffer alive between calls.
    const KEEP_BYTES: usize = 16 << 20;

    fn take(len: usize) -> Self {
        let mut buffer = T::scratch().take();
        // Grown only, never shortened: shortening would make the next, larger user zero the
        // difference again.
        if buffer.len() < len {
            buffer.resize(len, T::zero());
        }
        Scratch { buffer, len }
    }

    fn values(&mut self) -> &mut [T] {
        &mut self.buffer[..self.len]
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        if self.buffer.len() * size_of::<T>() <= Self::KEEP_BYTES {
            T::scratch().set(std::mem::take(&mut self.buffer));
        }
    }
}

/// Runs `f` on `t`'s elements in row-major order: borrowed from the tensor's storage when
/// they already lie contiguous in memory (no copy), copied out otherwise.
pub(crate) fn with_slice<T: Float, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
        return f(&cpu.as_slice::<T>()?[start..end]);
    }
    drop(storage);
    f(&t.flatten_all()?.to_vec1::<T>()?)
}

/// [`with_slice`] for an optional tensor.
fn with_optional_slice<T: Float, R>(
    t: Option<&Tensor>,
    f: impl FnOnce(Option<&[T]>) -> Result<R>,
) -> Result<R> {
    match t {
        Some(t) => with_slice(t, |s| f(Some(s))),
        None => f(None),
    }
}

/// A matrix view of a slice: element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    fn t(self) -> Self {
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
fn matmul<T: Float>(
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
fn matmul_strided<T: Float>(
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

/// `z`, or `max(z, 0)` when `relu` is set.
#[inline]
fn activate<T: Float>(z: T, relu: bool) -> T {
    // NaN counts as not positive, as in candle's ReLU-by-mask.
    if relu && z.partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
        T::zero()
    } else {
        z
    }
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

/// `y = activate(y + bias[row])` over `[rows, len]` row-major `y`, one bias per row.
fn add_bias_relu<T: Float>(y: &mut [T], bias: Option<&[T]>, len: usize, relu: bool) {
    if len == 0 {
        return;
    }
    for (row, values) in y.chunks_exact_mut(len).enumerate() {
        let b = bias.and_then(|b| b.get(row).copied()).unwrap_or(T::zero());
        for v in values {
            *v = activate(*v + b, relu);
        }
    }
}

/// Splits the batch over the rayon pool when it has more than one item (each item then
/// runs single-threaded), else gives the one item the whole pool. `run(item, scratch,
/// threads)` gets a [`Scratch`] buffer of `scratch` values per worker.
fn for_each_item<T: Float, O: Send>(
    out: &mut [O],
    out_len: usize,
    input: &[T],
    in_len: usize,
    scratch: usize,
    run: impl Fn(&[T], &mut [O], &mut [T], usize) -> Result<()> + Sync,
) -> Result<()> {
    if out_len == 0 || in_len == 0 {
        return Ok(());
    }
    let items = out.len() / out_len;
    if items <= 1 {
        let mut buffer = Scratch::take(scratch);
        let threads = rayon::current_num_threads();
        return out
            .chunks_exact_mut(out_len)
            .zip(input.chunks_exact(in_len))
            .try_for_each(|(o, i)| run(i, o, buffer.values(), threads));
    }
    out.par_chunks_exact_mut(out_len).zip(input.par_chunks_exact(in_len)).try_for_each_init(
        || Scratch::take(scratch),
        |buffer, (o, i)| run(i, o, buffer.values(), 1),
    )
}

/// One image `[c, h, w]` → `[c·kh·kw, oh·ow]` in `cols`, every cell written (`cols` is a
/// reused [`Scratch`]): cells that read padding get zero.
fn im2col_image<T: Float>(img: &[T], [c, h, w]: [usize; 3], win: &Window, cols: &mut [T]) {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let sw = win.stride[1];
    let mut rows = cols.chunks_exact_mut(oh * ow);
    for plane in img.chunks_exact(h * w).take(c) {
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return };
                let (lo, hi) = win.inside(1, kj, w, ow);
                for (oy, out_row) in row.chunks_exact_mut(ow.max(1)).enumerate() {
                    let source = win.source(0, oy, ki, h).filter(|_| lo < hi);
                    let Some(iy) = source else {
                        out_row.fill(T::zero());
                        continue;
                    };
                    out_row[..lo].fill(T::zero());
                    out_row[hi..].fill(T::zero());
                    let src = &plane[iy * w..(iy + 1) * w];
                    let dst = &mut out_row[lo..hi];
                    let first = (lo * sw + kj * win.dilation[1]) - win.pads[1];
                    if sw == 1 {
                        dst.copy_from_slice(&src[first..first + dst.len()]);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src[first..].iter().step_by(sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col_image`]: adds `[c·kh·kw, oh·ow]` columns into the image `img`.
fn col2im_image<T: Float>(cols: &[T], [c, h, w]: [usize; 3], win: &Window, img: &mut [T]) {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let sw = win.stride[1];
    let mut rows = cols.chunks_exact(oh * ow);
    for plane in img.chunks_exact_mut(h * w).take(c) {
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return };
                let (lo, hi) = win.inside(1, kj, w, ow);
                if lo >= hi {
                    continue;
                }
                for oy in 0..oh {
                    let Some(iy) = win.source(0, oy, ki, h) else { continue };
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    let src = &row[oy * ow + lo..oy * ow + hi];
                    let first = (lo * sw + kj * win.dilation[1]) - win.pads[1];
                    if sw == 1 {
                        // Contiguous: a plain zip, which the compiler vectorises.
                        for (d, s) in dst[first..first + src.len()].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(sw).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

/// Geometry of a convolution, from its input and kernel dims.
#[derive(Clone, Copy)]
struct ConvShape {
    /// Input `[c, h, w]` of one image.
    image: [usize; 3],
    /// Output channels.
    filters: usize,
    /// Output pixels `oh·ow`.
    pixels: usize,
    /// Column rows `c·kh·kw`.
    taps: usize,
    groups: usize,
    /// A 1×1 window with stride 1 and no padding reads the image as its own columns.
    pointwise: bool,
}

impl ConvShape {
    fn new([_, c, h, w]: [usize; 4], filters: usize, win: &Window, groups: usize) -> Self {
        let [oh, ow] = win.out_size(h, w);
        ConvShape {
            image: [c, h, w],
            filters,
            pixels: oh * ow,
            taps: c * win.kernel[0] * win.kernel[1],
            groups,
            pointwise: win.kernel == [1, 1] && win.stride == [1, 1] && win.pads == [0; 4],
        }
    }

    fn image_len(&self) -> usize {
        self.image.iter().product()
    }

    fn out_len(&self) -> usize {
        self.filters * self.pixels
    }

    /// Group `g`'s kernel `[filters/groups, taps/groups]` and its slice of column rows.
    fn group_rows(&self, g: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (og, kg) = (self.filters / self.groups, self.taps / self.groups);
        (g * og..(g + 1) * og, g * kg..(g + 1) * kg)
    }
}

/// Convolution forward: `x` `[n, c, h, w]`, `kernel` `[o, c/groups, kh, kw]`, optional
/// `bias` `[o]` → `[n, o, oh, ow]`, with a ReLU applied when `relu` is set.
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
    relu: bool,
) -> Result<Tensor> {
    let dims @ [n, _, h, w] = dims4(x)?;
    let [o, ..] = dims4(kernel)?;
    let [oh, ow] = win.out_size(h, w);
    if x.dtype() == DType::F32 {
        let out = with_slice::<f32, _>(kernel, |ks| {
            let Some(plan) = direct::Plan::new(dims, o, win, groups, ks) else { return Ok(None) };
            with_slice::<f32, _>(x, |xs| {
                with_optional_slice::<f32, _>(bias, |bs| plan.run(xs, bs, relu))
            })
            .map(Some)
        })?;
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, (n, o, oh, ow), x.device())?);
        }
    }
    conv2d_im2col(x, kernel, bias, win, groups, relu)
}

/// [`conv2d`] as im2col + gemm, for every window and type.
fn conv2d_im2col(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
    relu: bool,
) -> Result<Tensor> {
    let dims @ [n, _, h, w] = dims4(x)?;
    let [o, ..] = dims4(kernel)?;
    let [oh, ow] = win.out_size(h, w);
    let shape = ConvShape::new(dims, o, win, groups);
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        with_slice::<T, _>(kernel, |ks| {
            with_optional_slice::<T, _>(bias, |bs| {
                let mut out = vec![T::zero(); n * shape.out_len()];
                let scratch = if shape.pointwise { 0 } else { shape.taps * shape.pixels };
                for_each_item(&mut out, shape.out_len(), xs, shape.image_len(), scratch,
                    |img, y, cols, threads| {
                        let cols: &[T] = if shape.pointwise {
                            img
                        } else {
                            im2col_image(img, shape.image, win, cols);
                            cols
                        };
                        for g in 0..groups {
                            let (filters, taps) = shape.group_rows(g);
                            let l = shape.pixels;
                            let a = Mat::row_major(&ks[filters.start * taps.len()..filters.end * taps.len()], filters.len(), taps.len());
                            let b = Mat::row_major(&cols[taps.start * l..taps.end * l], taps.len(), l);
                            matmul(&mut y[filters.start * l..filters.end * l], a, b, false, threads)?;
                        }
                        add_bias_relu(y, bs, shape.pixels, relu);
                        Ok(())
                    })?;
                Ok(Tensor::from_vec(out, (n, o, oh, ow), x.device())?)
            })
        })
    }))
}

/// Gradient of [`conv2d`] (without its ReLU) with respect to its input, given the output
/// gradient `grad`.
pub fn conv2d_backward_input(
    grad: &Tensor,
    kernel: &Tensor,
    input_dims: [usize; 4],
    win: &Window,
    groups: usize,
) -> Result<Tensor> {
    let [_, o, ..] = dims4(grad)?;
    if grad.dtype() == DType::F32 {
        let sparse = with_slice::<f32, _>(grad, |gs| {
            with_slice::<f32, _>(kernel, |ks| {
                let Some(plan) = sparse::Plan::new(gs, ks, input_dims, o, win, groups) else {
                    return Ok(None);
                };
                let mut dx = vec![0.0; input_dims[0] * plan.image_len()];
                for_each_item(
                    &mut dx,
                    plan.image_len(),
                    gs,
                    plan.out_len(),
                    plan.scratch_len(),
                    |g_img, dx_img, scratch, _| plan.image(g_img, dx_img, scratch),
                )?;
                Ok(Some(dx))
            })
        })?;
        if let Some(dx) = sparse {
            return Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?);
        }
    }
    let shape = ConvShape::new(input_dims, o, win, groups);
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        with_slice::<T, _>(kernel, |ks| {
            let mut dx = vec![T::zero(); input_dims[0] * shape.image_len()];
            let scratch = if shape.pointwise { 0 } else { shape.taps * shape.pixels };
            // `for_each_item` walks the output (here dx) image by image alongside the input
            // (here the gradient).
            for_each_item(&mut dx, shape.image_len(), gs, shape.out_len(), scratch,
                |g_img, dx_img, cols, threads| {
                    let l = shape.pixels;
                    let target: &mut [T] = if shape.pointwise { dx_img } else { cols };
                    for g in 0..groups {
                        let (filters, taps) = shape.group_rows(g);
                        let w = Mat::row_major(&ks[filters.start * taps.len()..filters.end * taps.len()], filters.len(), taps.len());
                        let b = Mat::row_major(&g_img[filters.start * l..filters.end * l], filters.len(), l);
                        matmul(&mut target[taps.start * l..taps.end * l], w.t(), b, false, threads)?;
                    }
                    if !shape.pointwise {
                        col2im_image(cols, shape.image, win, dx_img);
                    }
                    Ok(())
                })?;
            Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?)
        })
    }))
}

/// Gradients of [`conv2d`] (without its ReLU) with respect to its kernel and bias.
pub fn conv2d_backward_weights(
    x: &Tensor,
    grad: &Tensor,
    kernel_dims: [usize; 4],
    win: &Window,
    groups: usize,
) -> Result<(Tensor, Tensor)> {
    let x_dims = dims4(x)?;
    let [n, o, ..] = dims4(grad)?;
    let shape = ConvShape::new(x_dims, o, win, groups);
    let d_kernel = with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        with_slice::<T, _>(grad, |gs| {
            let (og, kg, l) = (o / groups, shape.taps / groups, shape.pixels);
            let mut dk = vec![T::zero(); o * kg];
            let mut cols = vec![T::zero(); shape.taps * l];
            // Sums over the batch: dK_g += grad_g · cols_gᵀ, image by image.
            for (i, (img, g_img)) in
                xs.chunks_exact(shape.image_len()).zip(gs.chunks_exact(shape.out_len())).enumerate().take(n)
            {
                im2col_image(img, shape.image, win, &mut cols);
                for g in 0..groups {
                    let (filters, taps) = shape.group_rows(g);
                    let a = Mat::row_major(&g_img[filters.start * l..filters.end * l], og, l);
                    let b = Mat::row_major(&cols[taps.start * l..taps.end * l], kg, l).t();
                    let threads = rayon::current_num_threads();
                    matmul(&mut dk[filters.start * kg..filters.end * kg], a, b, i > 0, threads)?;
                }
            }
            Ok(Tensor::from_vec(dk, kernel_dims.to_vec(), x.device())?)
        })
    }))?;
    let d_bias = grad.sum((0, 2, 3))?;
    Ok((d_kernel, d_bias))
}

/// Dense layer forward: `x` `[n, in]` · `kernel` `[in, out]` (+ `bias` `[out]`), with a
/// ReLU applied when `relu` is set.
pub fn dense(x: &Tensor, kernel: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let (n, inputs) = x.dims2()?;
    let (rows, units) = kernel.dims2()?;
    if rows != inputs {
        return Err(Error::Invalid(format!(
            "dense layer of {rows} inputs given {inputs} features"
        )));
    }
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        with_slice::<T, _>(kernel, |ks| {
            with_optional_slice::<T, _>(bias, |bs| {
                if bs.is_some_and(|b| b.len() != units) {
                    return Err(Error::Invalid(format!("dense bias for {units} units has another length")));
                }
                let mut y = dense_product(xs, ks, [n, inputs, units])?;
                for row in y.chunks_exact_mut(units.max(1)) {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = activate(*v + bs.map_or(T::zero(), |b| b[j]), relu);
                    }
                }
                Ok(Tensor::from_vec(y, (n, units), x.device())?)
            })
        })
    }))
}

/// `x · kernel` for `x` `[n, inputs]` and `kernel` `[inputs, units]`. A few rows against a
/// large kernel is bound by reading the kernel, which gemm does on one thread: there the
/// kernel's rows are split over the pool and the partial products summed. Up to 12 rows
/// (a batch of classes): 9216 × 128 at 10 rows took 0.23–0.25 ms this way against
/// 0.40–0.51 ms with gemm on both threads.
fn dense_product<T: Float>(xs: &[T], ks: &[T], [n, inputs, units]: [usize; 3]) -> Result<Vec<T>> {
    let threads = rayon::current_num_threads();
    if n > 12 || threads < 2 || inputs * units < 1 << 16 {
        let mut y = vec![T::zero(); n * units];
        let (a, b) = (Mat::row_major(xs, n, inputs), Mat::row_major(ks, inputs, units));
        matmul(&mut y, a, b, false, threads)?;
        return Ok(y);
    }
    let partials = split_evenly(inputs, threads)
        .into_par_iter()
        .map(|rows| {
            let mut y = vec![T::zero(); n * units];
            let a = Mat {
                data: xs.get(rows.start..).unwrap_or_default(),
                rows: n,
                cols: rows.len(),
                row_stride: inputs,
                col_stride: 1,
            };
            let b = Mat::row_major(&ks[rows.start * units..rows.end * units], rows.len(), units);
            matmul(&mut y, a, b, false, 1)?;
            Ok(y)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = partials.into_iter();
    let mut y = parts.next().unwrap_or_else(|| vec![T::zero(); n * units]);
    for part in parts {
        for (v, p) in y.iter_mut().zip(part) {
            *v += p;
        }
    }
    Ok(y)
}

/// `0..len` split into at most `parts` near-equal non-empty ranges.
fn split_evenly(len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, len.max(1));
    (0..parts).map(|i| len * i / parts..len * (i + 1) / parts).filter(|r| !r.is_empty()).collect()
}

/// Gradient of [`dense`] (without its ReLU) with respect to its input: `grad · kernelᵀ`.
pub fn dense_backward_input(grad: &Tensor, kernel: &Tensor) -> Result<Tensor> {
    let (n, units) = grad.dims2()?;
    let (inputs, _) = kernel.dims2()?;
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        with_slice::<T, _>(kernel, |ks| {
            if let Some(dx) = T::dense_backward(gs, ks, [n, inputs, units]) {
                return Ok(Tensor::from_vec(dx?, (n, inputs), grad.device())?);
            }
            let mut dx = vec![T::zero(); n * inputs];
            // Computed as dxᵀ = kernel·gradᵀ: gemm then reads the kernel row by row as it
            // lies, where packing its transpose costs more than the product itself.
            let a = Mat::row_major(ks, inputs, units);
            let b = Mat::row_major(gs, n, units).t();
            matmul_strided(&mut dx, [1, inputs], a, b, false, rayon::current_num_threads())?;
            Ok(Tensor::from_vec(dx, (n, inputs), grad.device())?)
        })
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
            // them read per value it ran scalar: 9% of activation maximisation).
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

/// How a pooling window reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Maximum; padded cells never win; the gradient goes to the first maximum, as
    /// TensorFlow and PyTorch route it.
    Max,
    /// Mean over the window, counting padded cells or not.
    Avg {
        /// Whether padded cells count in the divisor.
        count_include_pad: bool,
    },
}

/// Per output coordinate along axis `a`, the in-bounds input coordinates its window reads.
fn window_taps(win: &Window, a: usize, size: usize, out: usize) -> Vec<Vec<usize>> {
    (0..out)
        .map(|o| (0..win.kernel[a]).filter_map(|k| win.source(a, o, k, size)).collect())
        .collect()
}

/// Runs `run(input_plane, output_plane)` over the `h·w` planes of `input` and the matching
/// `oh·ow` planes of `output`, split over the rayon pool when there is enough work.
fn for_each_plane<A: Sync, B: Send>(
    input: &[A],
    in_len: usize,
    output: &mut [B],
    out_len: usize,
    run: impl Fn(&[A], &mut [B]) + Sync,
) {
    if in_len == 0 || out_len == 0 {
        return;
    }
    // Below this many values a plane loop is faster than waking the pool.
    if output.len() < 1 << 14 {
        output
            .chunks_exact_mut(out_len)
            .zip(input.chunks_exact(in_len))
            .for_each(|(o, i)| run(i, o));
    } else {
        output
            .par_chunks_exact_mut(out_len)
            .zip(input.par_chunks_exact(in_len))
            .for_each(|(o, i)| run(i, o));
    }
}

/// The in-plane index of the first maximum of a window (row-major order), if it has cells.
#[inline]
fn first_max<T: Float>(plane: &[T], w: usize, rows: &[usize], cols: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for &iy in rows {
        for &ix in cols {
            let t = iy * w + ix;
            if best.is_none_or(|(_, b)| plane[t] > b) {
                best = Some((t, plane[t]));
            }
        }
    }
    best.map(|(t, _)| t)
}

fn divisor(win: &Window, pool: Pool, rows: &[usize], cols: &[usize]) -> usize {
    match pool {
        Pool::Avg { count_include_pad: true } => win.kernel[0] * win.kernel[1],
        _ => rows.len() * cols.len(),
    }
    .max(1)
}

/// The window `[kh, kw]` when windows tile the map (stride equal to the window, no
/// dilation or padding: the common 2×2 max pool), which the tiled loops below handle without
/// per-window tap lists.
fn tiles(win: &Window) -> Option<[usize; 2]> {
    (win.stride == win.kernel && win.dilation == [1, 1] && win.pads == [0; 4]).then_some(win.kernel)
}

/// Max pool of one plane (row length `w`) over tiles `[kh, kw]` into `out` rows of `ow`.
fn max_pool_tiles<T: Float>(plane: &[T], w: usize, [kh, kw]: [usize; 2], out: &mut [T], ow: usize) {
    // Tiles 2 wide (nearly every max pool) get the loop inlined with the width a constant,
    // which the compiler turns into vector maxima.
    match kw {
        2 => max_pool_tile_rows(plane, w, [kh, 2], out, ow),
        _ => max_pool_tile_rows(plane, w, [kh, kw], out, ow),
    }
}

#[inline(always)]
fn max_pool_tile_rows<T: Float>(
    plane: &[T],
    w: usize,
    [kh, kw]: [usize; 2],
    out: &mut [T],
    ow: usize,
) {
    for (oy, out_row) in out.chunks_exact_mut(ow.max(1)).enumerate() {
        for ky in 0..kh {
            let row = &plane[(oy * kh + ky) * w..][..ow * kw];
            for (o, taps) in out_row.iter_mut().zip(row.chunks_exact(kw)) {
                let tile = taps.iter().skip(1).fold(taps[0], |m, &v| if v > m { v } else { m });
                *o = if ky == 0 || tile > *o { tile } else { *o };
            }
        }
    }
}

/// Gradient of [`max_pool_tiles`]: each output's gradient goes to the first maximum of its
/// tile (row-major), written a tile row at a time like the forward (`dx` starts zeroed).
fn max_pool_tiles_backward<T: Float>(
    plane: &[T],
    grad: &[T],
    w: usize,
    [kh, kw]: [usize; 2],
    dx: &mut [T],
    ow: usize,
) {
    if [kh, kw] == [2, 2] && T::max_pool_2x2_backward(plane, grad, w, dx, ow) {
        return;
    }
    match kw {
        2 => max_pool_tile_rows_backward(plane, grad, w, [kh, 2], dx, ow),
        _ => max_pool_tile_rows_backward(plane, grad, w, [kh, kw], dx, ow),
    }
}

#[inline(always)]
fn max_pool_tile_rows_backward<T: Float>(
    plane: &[T],
    grad: &[T],
    w: usize,
    [kh, kw]: [usize; 2],
    dx: &mut [T],
    ow: usize,
) {
    let mut maxima = vec![T::zero(); ow];
    // Whether a tile's gradient has been placed, as 0/1 so the loop stays branch-free.
    let mut placed = vec![0u8; ow];
    for (oy, g_row) in grad.chunks_exact(ow.max(1)).enumerate() {
        let tile_rows = (oy * kh * w)..((oy + 1) * kh * w);
        max_pool_tile_rows(&plane[tile_rows.clone()], w, [kh, kw], &mut maxima, ow);
        placed.fill(0);
        for (ky, dx_row) in dx[tile_rows.clone()].chunks_exact_mut(w).enumerate() {
            let row = &plane[tile_rows.start + ky * w..][..ow * kw];
            let cells = dx_row[..ow * kw].chunks_exact_mut(kw).zip(row.chunks_exact(kw));
            for ((((d, taps), &m), p), &g) in cells.zip(&maxima).zip(&mut placed).zip(g_row) {
                for (d, &v) in d.iter_mut().zip(taps) {
                    let hit = u8::from(v == m) & (1 - *p);
                    *d = if hit == 1 { g } else { T::zero() };
                    *p |= hit;
                }
            }
        }
    }
}

/// Pooling forward on `[n, c, h, w]`.
pub fn pool2d(x: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let [n, c, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    let (rows, cols) = (window_taps(win, 0, h, oh), window_taps(win, 1, w, ow));
    let tiles = tiles(win).filter(|_| pool == Pool::Max);
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |src| {
        let mut out = vec![T::zero(); n * c * oh * ow];
        for_each_plane(src, h * w, &mut out, oh * ow, |plane, out| {
            if let Some([kh, kw]) = tiles {
                return max_pool_tiles(plane, w, [kh, kw], out, ow);
            }
            let mut out = out.iter_mut();
            for ry in &rows {
                for cx in &cols {
                    let Some(o) = out.next() else { return };
                    *o = match pool {
                        Pool::Max => {
                            // The value alone, as a select rather than a branch: the same
                            // first maximum as `first_max`, without its mispredictions.
                            let mut taps =
                                ry.iter().flat_map(|&iy| cx.iter().map(move |&ix| plane[iy * w + ix]));
                            taps.next().map_or(T::zero(), |first| {
                                taps.fold(first, |m, v| if v > m { v } else { m })
                            })
                        }
                        Pool::Avg { .. } => {
                            let mut sum = T::zero();
                            for &iy in ry {
                                for &ix in cx {
                                    sum += plane[iy * w + ix];
                                }
                            }
                            sum / T::from_f64(divisor(win, pool, ry, cx) as f64)
                        }
                    };
                }
            }
        });
        Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
    }))
}

/// Gradient of [`pool2d`] with respect to its input `x`, given the output gradient.
pub fn pool2d_backward(x: &Tensor, grad: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let dims @ [_, _, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    let (rows, cols) = (window_taps(win, 0, h, oh), window_taps(win, 1, w, ow));
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |src| {
        with_slice::<T, _>(grad, |g| {
            if g.len() * h * w != src.len() * oh * ow {
                return Err(Error::Invalid(format!(
                    "pooling gradient of {} values for an input of shape {dims:?}",
                    g.len()
                )));
            }
            let mut dx = vec![T::zero(); src.len()];
            // Each task owns one plane of dx, read alongside its plane of x and of the
            // gradient.
            let planes: Vec<(&[T], &[T])> =
                src.chunks_exact(h * w).zip(g.chunks_exact((oh * ow).max(1))).collect();
            let tiles = tiles(win).filter(|_| pool == Pool::Max);
            for_each_plane(&planes, 1, &mut dx, h * w, |item, dx| {
                let Some(&(plane, g)) = item.first() else { return };
                if let Some([kh, kw]) = tiles {
                    return max_pool_tiles_backward(plane, g, w, [kh, kw], dx, ow);
                }
                let mut g = g.iter();
                for ry in &rows {
                    for cx in &cols {
                        let Some(&go) = g.next() else { return };
                        match pool {
                            Pool::Max => {
                                if let Some(t) = first_max(plane, w, ry, cx) {
                                    dx[t] += go;
                                }
                            }
                            Pool::Avg { .. } => {
                                let share = go / T::from_f64(divisor(win, pool, ry, cx) as f64);
                                for &iy in ry {
                                    for &ix in cx {
                                        dx[iy * w + ix] += share;
                                    }
                                }
                            }
                        }
                    }
                }
            });
            Ok(Tensor::from_vec(dx, dims.to_vec(), x.device())?)
        })
    }))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn window(k: usize, s: usize, pads: Pads) -> Window {
        Window { kernel: [k, k], stride: [s, s], dilation: [1, 1], pads }
    }

    #[test]
    fn conv_matches_a_hand_computed_case() {
        // 1×1×3×3 input 1..9, 2×2 kernel [[1, 0], [0, -1]]: out[i][j] = x[i][j] - x[i+1][j+1]
        // = -4 everywhere; bias 0.5 → -3.5.
        let x = Tensor::arange(1f32, 10., &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
        let k = Tensor::new(&[[[[1f32, 0.], [0., -1.]]]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let y = conv2d(&x, &k, Some(&b), &window(2, 1, [0; 4]), 1, false).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![-3.5; 4]);
    }

    #[test]
    fn conv_with_padding_and_stride_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 4, 7, 7), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 4, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 2, [1; 4]), 1, false).unwrap();
        let theirs = x.conv2d(&k, 1, 2, 1, 1).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn padded_conv_after_a_valid_one_reads_zeros_not_stale_columns() {
        // The first call leaves its columns in this thread's scratch; the second, padded, must
        // not read them where it reads padding.
        let dev = Device::Cpu;
        let big = Tensor::randn(0f32, 1., (1, 4, 9, 9), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (3, 4, 3, 3), &dev).unwrap();
        conv2d(&big, &k, None, &window(3, 1, [0; 4]), 1, false).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 4, 8, 8), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 1, [1; 4]), 1, false).unwrap();
        let theirs = x.conv2d(&k, 1, 1, 1, 1).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn grouped_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 5, 5), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 2, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 1, [0; 4]), 2, false).unwrap();
        let theirs = x.conv2d(&k, 0, 1, 1, 2).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn max_pool_gradient_goes_whole_to_the_first_maximum() {
        // Window [[1, 3], [3, 2]]: the maximum 3 appears twice; the first (row-major) wins and
        // gets the full gradient 1, not 1/4 (candle 0.11's bug) and not split.
        let x = Tensor::new(&[[[[1f32, 3.], [3., 2.]]]], &Device::Cpu).unwrap();
        let g = Tensor::new(&[[[[1f32]]]], &Device::Cpu).unwrap();
        let dx = pool2d_backward(&x, &g, &window(2, 2, [0; 4]), Pool::Max).unwrap();
        assert_eq!(dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 0., 0.]);

        // Ties in every position (ReLU outputs tie at 0 all the time): tiles [a, b, c, d]
        // (rows [a, b] and [c, d]) and the cell their gradient goes to; nine tiles in a row
        // so two groups of four and one left over all meet each pattern.
        let patterns = [
            ([0f32, 0., 0., 0.], 0),
            ([0., 1., 2., 2.], 2),
            ([0., 4., 4., 0.], 1),
            ([0., 1., 1., 2.], 3),
            ([-1., -2., -1., -1.], 0),
        ];
        let tiles = [0, 1, 2, 3, 4, 3, 2, 1, 2];
        let mut x = vec![0f32; 2 * 18];
        let mut expected = vec![0f32; 2 * 18];
        for (i, &p) in tiles.iter().enumerate() {
            let (cells, winner) = patterns[p];
            for (cell, v) in cells.into_iter().enumerate() {
                x[(cell / 2) * 18 + 2 * i + cell % 2] = v;
            }
            expected[(winner / 2) * 18 + 2 * i + winner % 2] = (i + 1) as f32;
        }
        let x = Tensor::from_vec(x, (1, 1, 2, 18), &Device::Cpu).unwrap();
        let g = Tensor::arange(1f32, 10., &Device::Cpu).unwrap().reshape((1, 1, 1, 9)).unwrap();
        let dx = pool2d_backward(&x, &g, &window(2, 2, [0; 4]), Pool::Max).unwrap();
        assert_eq!(dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn tiled_max_pool_matches_candle_and_a_plain_loop() {
        // Odd sizes leave rows and columns outside every tile; both directions must skip them.
        let x = Tensor::randn(0f32, 1., (2, 3, 7, 9), &Device::Cpu).unwrap();
        for k in [2, 3] {
            let win = window(k, k, [0; 4]);
            let ours = pool2d(&x, &win, Pool::Max).unwrap();
            let theirs = x.max_pool2d(k).unwrap();
            let diff = (&ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

            let g = Tensor::randn(0f32, 1., ours.dims(), &Device::Cpu).unwrap();
            let dx = pool2d_backward(&x, &g, &win, Pool::Max).unwrap();
            let (xs, gs) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let [oh, ow] = [7 / k, 9 / k];
            let mut expected = vec![0f32; xs.len()];
            for plane in 0..6 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let cells =
                            (0..k * k).map(|t| plane * 63 + (oy * k + t / k) * 9 + ox * k + t % k);
                        let first_max =
                            cells.reduce(|a, b| if xs[b] > xs[a] { b } else { a }).unwrap();
                        expected[first_max] = gs[plane * oh * ow + oy * ow + ox];
                    }
                }
            }
            assert_eq!(dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);
        }
    }

    /// Largest absolute difference between two tensors.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn direct_conv_matches_im2col() {
        let dev = Device::Cpu;
        // (n, c, o, [h, w], [kh, kw], dilation, pads [top, left, bottom, right], groups)
        type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], Pads, usize);
        // The first case has more taps than one pass of the kernel takes (360 > 320).
        let cases: [Case; 10] = [
            (1, 40, 11, [10, 13], [3, 3], [1, 1], [1; 4], 1),
            (1, 32, 64, [26, 26], [3, 3], [1, 1], [0; 4], 1),
            (3, 1, 32, [28, 28], [3, 3], [1, 1], [0; 4], 1),
            (1, 3, 7, [9, 5], [3, 3], [1, 1], [1; 4], 1),
            (2, 4, 13, [12, 7], [5, 3], [1, 2], [2, 1, 0, 3], 1),
            (1, 6, 9, [8, 8], [2, 2], [1, 1], [0, 0, 1, 1], 3),
            (2, 5, 5, [6, 11], [3, 3], [2, 1], [2, 1, 2, 1], 5),
            (1, 2, 1, [4, 3], [1, 3], [1, 1], [0, 1, 0, 1], 1),
            (2, 8, 12, [3, 3], [3, 3], [1, 1], [1; 4], 2),
            (1, 4, 6, [30, 2], [3, 1], [3, 1], [0; 4], 1),
        ];
        for (n, c, o, [h, w], kernel, dilation, pads, groups) in cases {
            let win = Window { kernel, stride: [1, 1], dilation, pads };
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (o, c / groups, kernel[0], kernel[1]), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let plan = direct::Plan::new([n, c, h, w], o, &win, groups, &ks);
            assert_eq!(plan.is_some(), direct::available(), "case {kernel:?} {pads:?}");
            for relu in [false, true] {
                let ours = conv2d(&x, &k, Some(&b), &win, groups, relu).unwrap();
                let theirs = conv2d_im2col(&x, &k, Some(&b), &win, groups, relu).unwrap();
                assert!(max_diff(&ours, &theirs) < 1e-4, "forward {kernel:?} {pads:?}");
            }
        }
    }

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
            let taken = dense::backward_input(&gs, &ks, [n, inputs, units]).is_some();
            assert_eq!(taken, n <= 12 && direct::available(), "{n} rows");
            let ours = dense_backward_input(&g, &k).unwrap();
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let theirs = dense_backward_input(&f64s(&g), &f64s(&k)).unwrap();
            let theirs = theirs.to_dtype(DType::F32).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-3, "{n} × {inputs} × {units}");
        }
    }

    #[test]
    fn sparse_conv_gradient_matches_gemm() {
        let dev = Device::Cpu;
        // (n, c, o, [h, w], [kh, kw], pads): valid and padded, 1 to 3 columns, blocks of 32,
        // 16 and 8 channels, several blocks, more than 64 output channels (two mask words),
        // tall windows.
        type Case = (usize, usize, usize, [usize; 2], [usize; 2], Pads);
        let cases: [Case; 9] = [
            (2, 32, 64, [12, 12], [3, 3], [0; 4]),
            (1, 32, 70, [6, 5], [3, 3], [1; 4]),
            (1, 16, 12, [8, 8], [3, 3], [1; 4]),
            (2, 8, 9, [7, 6], [2, 3], [0; 4]),
            (1, 48, 6, [5, 5], [3, 1], [1; 4]),
            (1, 64, 16, [9, 7], [3, 3], [1; 4]),
            (3, 32, 5, [6, 6], [2, 2], [0, 1, 1, 0]),
            (1, 32, 8, [10, 8], [5, 3], [2, 1, 2, 1]),
            (2, 32, 7, [7, 9], [3, 1], [1, 0, 1, 0]),
        ];
        for (n, c, o, [h, w], kernel, pads) in cases {
            let win = Window { kernel, stride: [1, 1], dilation: [1, 1], pads };
            let [oh, ow] = win.out_size(h, w);
            let k = Tensor::randn(0f32, 1., (o, c, kernel[0], kernel[1]), &dev).unwrap();
            // Four in five gradients zero, as below a max pool.
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let keep = Tensor::rand(0f32, 1., (n, o, oh, ow), &dev).unwrap().ge(0.8).unwrap();
            let g = (g * keep.to_dtype(DType::F32).unwrap()).unwrap();
            let (gs, ks) = (
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let dims = [n, c, h, w];
            let taken = sparse::Plan::new(&gs, &ks, dims, o, &win, 1).is_some();
            assert_eq!(taken, direct::available(), "{kernel:?} {pads:?}");
            let ours = conv2d_backward_input(&g, &k, dims, &win, 1).unwrap();
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let theirs = conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &win, 1).unwrap();
            let theirs = theirs.to_dtype(DType::F32).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-4, "{kernel:?} {pads:?}");
        }
        // A dense gradient goes to gemm.
        let g: Vec<f32> = (0..64 * 100).map(|i| 1.0 + i as f32).collect();
        let ks = vec![0.5f32; 64 * 32 * 9];
        let win = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
        assert!(sparse::Plan::new(&g, &ks, [1, 32, 12, 12], 64, &win, 1).is_none());
    }

    #[test]
    fn direct_blocks_cover_the_rows_evenly() {
        let sizes = |rows, threads| {
            direct::blocks(rows, threads).iter().map(|b| b.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(64, 2), [6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 5, 5]);
        assert_eq!(sizes(4, 2), [4]);
        assert_eq!(sizes(7, 2), [4, 3]);
        assert_eq!(sizes(7, 8), [1; 7]);
        let blocks = direct::blocks(100, 3);
        assert_eq!(blocks.len() % 3, 0);
        assert!(blocks.windows(2).all(|p| p[0].end == p[1].start));
        assert_eq!((blocks[0].start, blocks[blocks.len() - 1].end), (0, 100));
    }

    #[test]
    fn average_pool_can_exclude_padding() {
        // 1×1×2×2 ones, 2×2 window, stride 2, one pixel of padding top-left: windows hold
        // 1, 2, 2 and 4 real pixels of value 1.
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let win = window(2, 1, [1, 1, 0, 0]);
        let excl = pool2d(&x, &win, Pool::Avg { count_include_pad: false }).unwrap();
        let incl = pool2d(&x, &win, Pool::Avg { count_include_pad: true }).unwrap();
        assert_eq!(excl.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.; 4]);
        assert_eq!(
            incl.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.25, 0.5, 0.5, 1.0]
        );
    }
}
