//! Convolution: forward, input gradient and weight gradient as im2col (or col2im) and gemm,
//! for every window, group count and float type. In f32 the forward and the input gradient
//! of depthwise and small grouped convs go to `depthwise`; the forward hands other convs to
//! `direct` and the input gradient hands mostly-zero gradients to `sparse`, and stride-1
//! convs on large maps to `direct` as the conv by the flipped kernel, where the CPU runs
//! them; batches split image by image over the rayon pool ([`for_each_item`]).

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use super::depthwise::GroupedConv;
use super::matmul::{Mat, matmul, matmul_by_transpose, matmul_uninit};
use super::narrow::{self, Panels};
use super::phased::Phased;
use super::pixelwise::Pixelwise;
use super::relu::{Clamp, activate};
use super::winograd::Winograd;
use super::{
    Cached, Float, Scratch, Window, dims4, direct, flipped, kept_or_made, sparse, vectorised,
    with_float, with_optional_slice, with_slice,
};
use crate::error::{Error, Result};
use crate::model::{Derived, KernelCache};

/// `y = activate(y + bias[row])` over `[rows, len]` row-major `y`, one bias per row; rows
/// split over `threads` for a large map.
fn add_bias_clamp<T: Float>(
    y: &mut [T],
    bias: Option<&[T]>,
    len: usize,
    clamp: Option<Clamp>,
    threads: usize,
) {
    if len == 0 || (bias.is_none() && clamp.is_none()) {
        return;
    }
    let row = |(r, values): (usize, &mut [T])| {
        let b = bias.and_then(|b| b.get(r).copied()).unwrap_or(T::zero());
        vectorised(move || {
            for v in values {
                *v = activate(*v + b, clamp);
            }
        })
    };
    if threads > 1 && y.len() >= 1 << 15 {
        y.par_chunks_exact_mut(len).enumerate().for_each(row);
    } else {
        y.chunks_exact_mut(len).enumerate().for_each(row);
    }
}

/// Splits the batch over the rayon pool when it has more than one item (each item then
/// runs single-threaded), else gives the one item the whole pool. `run(item, scratch,
/// threads)` gets a [`Scratch`] buffer of `scratch` values per worker.
pub(super) fn for_each_item<T: Float, O: Send>(
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

/// A batch `xs` of images of `image_len` values through `image(img, out, scratch,
/// threads)` into a new output of `out_len` values per image, by [`for_each_item`]; the
/// output is not zeroed first (a serial pass over a large batch's output was a visible part
/// of a forward pass), so `image` must write every value of its `out`.
pub(super) fn each_image_into_new(
    xs: &[f32],
    image_len: usize,
    out_len: usize,
    scratch: usize,
    image: impl Fn(&[f32], &mut [MaybeUninit<f32>], &mut [f32], usize) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let n = xs.len() / image_len.max(1);
    if xs.len() != n * image_len {
        return Err(Error::Invalid(format!(
            "a batch of {} values for images of {image_len}",
            xs.len()
        )));
    }
    let len = n * out_len;
    let mut out = Vec::with_capacity(len);
    for_each_item(&mut out.spare_capacity_mut()[..len], out_len, xs, image_len, scratch, image)?;
    #[allow(unsafe_code)]
    // SAFETY: `for_each_item` returned Ok having run every image (or there were none to
    // run, when `len` is 0), and `image` wrote every value of each (the caller's contract),
    // so all `len` values are initialised.
    unsafe {
        out.set_len(len)
    };
    Ok(out)
}

/// One image `[c, h, w]` → `[c·kh·kw, oh·ow]` in `cols`, every cell written (`cols` is a
/// reused [`Scratch`]): cells that read padding get zero.
fn im2col_image<T: Float>(img: &[T], [c, h, w]: [usize; 3], win: &Window, cols: &mut [T]) {
    let [kh, kw] = win.kernel;
    if win.stride != [1, 1] && kh * kw > 1 {
        return im2col_phased(img, [c, h, w], win, cols);
    }
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

/// [`im2col_image`] at a stride, for windows of several taps (the adjoint of
/// [`col2im_phased`]): each plane padded and split by stride phase ([`Phased`]) once, then
/// every tap's column row copied output row by output row as a contiguous run, where each
/// tap had picked values `stride` apart (in-model medians, resnet50's 3×3/2 convs: on
/// 128 × 56×56 0.45 → 0.31 ms against a gemm of 0.88, on 256 × 28×28 0.25 → 0.20).
fn im2col_phased<T: Float>(img: &[T], [c, h, w]: [usize; 3], win: &Window, cols: &mut [T]) {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let phased = Phased::new([h, w], win);
    let width = phased.width();
    // Zeroed once: each plane then writes only the values inside the padding.
    let mut split = vec![T::zero(); phased.len()];
    let mut rows = cols.chunks_exact_mut(oh * ow);
    for plane in img.chunks_exact(h * w).take(c) {
        phased.pack_inside(plane, &mut split);
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return };
                let offset = phased.offset(ki, kj);
                for (oy, dst) in row.chunks_exact_mut(ow.max(1)).enumerate() {
                    dst.copy_from_slice(&split[offset + oy * width..][..dst.len()]);
                }
            }
        }
    }
}

/// How a single image's im2col or col2im splits over `threads`: `[channels per task, column
/// values per channel]`, or `None` where it is not worth it. Each task moves at least 16K
/// values. On one thread the columns (nine copies of the image for a 3×3 window) were
/// written while gemm's other threads waited.
fn channel_tasks([c, h, w]: [usize; 3], win: &Window, threads: usize) -> Option<[usize; 2]> {
    let per_channel = win.kernel[0] * win.kernel[1] * win.out_size(h, w).iter().product::<usize>();
    let channels = (1usize << 14).div_ceil(per_channel.max(1));
    (threads > 1 && per_channel > 0 && h * w > 0 && channels < c).then_some([channels, per_channel])
}

/// [`im2col_image`] split by channels over `threads`.
fn im2col_split<T: Float>(
    img: &[T],
    [c, h, w]: [usize; 3],
    win: &Window,
    cols: &mut [T],
    threads: usize,
) {
    let Some([channels, per_channel]) = channel_tasks([c, h, w], win, threads) else {
        return im2col_image(img, [c, h, w], win, cols);
    };
    cols[..c * per_channel]
        .par_chunks_mut(channels * per_channel)
        .zip(img.par_chunks(channels * h * w))
        .for_each(|(cols, img)| im2col_image(img, [img.len() / (h * w), h, w], win, cols));
}

/// [`col2im_image`] split by channels over `threads`: each channel's plane takes only its
/// own column rows, so the tasks add into disjoint planes.
fn col2im_split<T: Float>(
    cols: &[T],
    [c, h, w]: [usize; 3],
    win: &Window,
    img: &mut [T],
    threads: usize,
) {
    let Some([channels, per_channel]) = channel_tasks([c, h, w], win, threads) else {
        return col2im_image(cols, [c, h, w], win, img);
    };
    img[..c * h * w]
        .par_chunks_mut(channels * h * w)
        .zip(cols.par_chunks(channels * per_channel))
        .for_each(|(img, cols)| col2im_image(cols, [img.len() / (h * w), h, w], win, img));
}

/// `values` set to zero, as the initialised slice they now are.
fn zeroed<T: Float>(values: &mut [MaybeUninit<T>]) -> &mut [T] {
    for v in values.iter_mut() {
        v.write(T::zero());
    }
    #[allow(unsafe_code)]
    // SAFETY: every value was just written; `MaybeUninit<T>` has `T`'s layout, and the
    // borrow of `values` passes to the result.
    unsafe {
        &mut *(std::ptr::from_mut(values) as *mut [T])
    }
}

/// Adjoint of [`im2col_image`]: adds `[c·kh·kw, oh·ow]` columns into the image `img`.
fn col2im_image<T: Float>(cols: &[T], [c, h, w]: [usize; 3], win: &Window, img: &mut [T]) {
    if win.stride != [1, 1] {
        return col2im_phased(cols, [c, h, w], win, img);
    }
    // Stride 1 from here: each tap's row adds into the plane as a contiguous run.
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
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
                    let first = (lo + kj * win.dilation[1]) - win.pads[1];
                    for (d, s) in dst[first..first + src.len()].iter_mut().zip(src) {
                        *d += *s;
                    }
                }
            }
        }
    }
}

/// [`col2im_image`] at a stride: each tap's column row added, output row by output row,
/// as a contiguous run into the padded plane split by stride phase ([`Phased`]), then the
/// plane cropped out of its phases into `img` (which it overwrites, all of it). Added
/// straight into the plane, a tap's values land `stride` apart, a loop that does not
/// vectorise: resnet50's 7×7/2 stem's input gradient took 2.0 ms, 0.9 of them gemm's.
fn col2im_phased<T: Float>(cols: &[T], [c, h, w]: [usize; 3], win: &Window, img: &mut [T]) {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let phased = Phased::new([h, w], win);
    let width = phased.width();
    let mut split = vec![T::zero(); phased.len()];
    let mut rows = cols.chunks_exact(oh * ow);
    for plane in img.chunks_exact_mut(h * w).take(c) {
        split.fill(T::zero());
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return };
                let offset = phased.offset(ki, kj);
                for (oy, src) in row.chunks_exact(ow).enumerate() {
                    let dst = &mut split[offset + oy * width..][..ow];
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                }
            }
        }
        phased.unpack(&split, plane);
    }
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

    /// The kernel `[filters, taps/groups]` transposed group by group: `[taps/groups,
    /// filters/groups]` per group, in group order.
    ///
    /// Made once per model, but in a one-shot `convscope saliency` that once is on every
    /// call: gathering each output row down a column of the kernel (a cache line read per
    /// value) took 11% of resnet50's whole process. Blocks of [`TRANSPOSE_ROWS`] output rows
    /// read each kernel row's run of taps as one line, and the blocks split over the pool.
    fn transposed_kernel<T: Float>(&self, ks: &[T]) -> Vec<T> {
        let (filters, taps) = (self.filters / self.groups, self.taps / self.groups);
        let mut transposed = Vec::with_capacity(ks.len());
        let group_len = filters * taps;
        if group_len > 0 {
            let out = &mut transposed.spare_capacity_mut()[..ks.len()];
            // Each group's rows in blocks, so no block straddles two groups.
            out.par_chunks_mut(group_len).zip(ks.par_chunks(group_len)).for_each(|(out, group)| {
                out.par_chunks_mut(TRANSPOSE_ROWS * filters).enumerate().for_each(
                    |(b, rows_out)| {
                        let (t0, count) = (b * TRANSPOSE_ROWS, rows_out.len() / filters);
                        for (f, row) in group.chunks_exact(taps).enumerate() {
                            for (dt, &v) in row[t0..t0 + count].iter().enumerate() {
                                rows_out[dt * filters + f].write(v);
                            }
                        }
                    },
                )
            });
        }
        #[allow(unsafe_code)]
        // SAFETY: the blocks cover every group's `taps` rows of `filters` values, and each
        // block wrote every value of its rows (every filter `f` of each tap `t0 + dt`).
        unsafe {
            transposed.set_len(ks.len())
        };
        transposed
    }

    /// Whether the input gradient's products `wᵀ·g` go through [`matmul_by_transpose`]:
    /// for small maps under large kernels, where repacking the kernel costs as much as the
    /// product. Per conv at 7×7 (2 threads): a gain from 256 → 256 3×3 (0.57 → 0.50 ms)
    /// and 1024 → 512 1×1 (0.61 → 0.52) up, a loss below (128 → 1024 1×1 0.18 → 0.20,
    /// 128 → 32 3×3 0.08 → 0.16); at 12×12 and 14×14 a loss at every size tried.
    fn gradient_by_transpose(&self) -> bool {
        let kernel_len = self.filters * self.taps / (self.groups * self.groups);
        self.pixels <= 64 && kernel_len >= 1 << 19
    }
}

/// Taps per block of [`ConvShape::transposed_kernel`]'s output: a 64-byte line of f32.
const TRANSPOSE_ROWS: usize = 16;

/// Output maps of at most this many pixels go to im2col + gemm rather than the direct
/// kernel: each of its blocks of output channels reads the whole input and its kernel for a
/// few tiles only there. Measured per conv, batch 1, best of 14 (2-core box): 512 channels
/// 3×3 at 7×7 3.0 ms by gemm against 5.4 direct, 256 at 14×14 2.5 against 2.9; at 28×28 and
/// up the direct kernel is as fast or faster (64 at 56×56: 2.3 against 2.9).
const GEMM_MAX_PIXELS: usize = 14 * 14;

/// Strided convs reading more channels than this (per group) go to im2col + gemm, also on
/// large maps: the direct kernel ran them at a fraction of its stride-1 rate. Per conv,
/// batch 1, 2 threads, medians of 30, direct against gemm (2-core Sapphire Rapids): 3×3/2
/// 16 → 32 at 224×224 1.56 → 1.09 ms, 64 → 64 at 224×224 21.6 → 7.4, 64 → 128 at 112×112
/// 4.9 → 2.2, 128 → 128 at 56×56 (resnet50's) 1.76 → 1.12; stems stay direct (3 → 64 7×7/2
/// 1.0 against 1.7 by gemm), and up to 12 channels the two were level (12 → 48 at 112×112
/// 0.35 against 0.36, 8 → 64 5×5/2 0.39 against 0.58).
const STRIDED_DIRECT_MAX_CHANNELS: usize = 12;

/// An f32 conv kernel other than gemm, planned for one call.
enum Plan {
    Pixelwise(Pixelwise),
    Winograd(Winograd),
    Direct(direct::DirectConv),
    Narrow(NarrowConv),
}

impl Plan {
    fn run(&self, xs: &[f32], bias: Option<&[f32]>, clamp: Option<Clamp>) -> Result<Vec<f32>> {
        match self {
            Plan::Pixelwise(plan) => plan.run(xs, bias, clamp),
            Plan::Winograd(plan) => plan.run(xs, bias, clamp),
            Plan::Direct(plan) => plan.run(xs, bias, clamp),
            Plan::Narrow(plan) => plan.forward(xs, bias, clamp),
        }
    }
}

/// Output maps of at most this many pixels (7×7 and 8×8) go to [`NarrowConv`] where its
/// products have at least [`NARROW_MIN_ROWS`] rows and the CPU runs it. Forward passes
/// alternating with and without it in one process (2-core box, medians of 110 each), the
/// 7×7 convs: resnet50 9.85 → 9.25 ms (its 3×3 512 → 512 ones, which Winograd had run,
/// 2.06 → 1.76 and 1.97 → 1.75), efficientnet_b0 1.96 → 1.81, mobilenet_v2 1.23 → 1.17;
/// resnet50's saliency 97.5–101.8 → 94.4–97.5 ms over four rounds. At 14×14 it only
/// matched gemm (and lost on mobilenet_v2's shallow products).
const NARROW_MAX_PIXELS: usize = 64;
/// Each of its tasks packs every tile of the columns for its share of the rows, so few rows
/// pay for the packing: with 128, densenet121's 7×7 convs (128 rows) took 2.51 → 2.63 ms
/// and efficientnet_b0's (some of 192) 2.29 → 2.43.
const NARROW_MIN_ROWS: usize = 256;

/// A one-group conv on a small map as products of the kernel's packed panels
/// ([`narrow`]) by the image's columns (the image itself for a 1×1 conv at stride 1); its
/// input gradient as the products of the transposed kernel's panels by the output
/// gradient, then col2im.
struct NarrowConv {
    shape: ConvShape,
    win: Window,
    panels: Arc<Panels>,
}

impl NarrowConv {
    /// Whether convs should run by this plan: not where the CPU has AVX-512, as gemm's
    /// 512-bit kernels then beat this AVX2 one (resnet50's 7×7 convs by layer, 2 threads on
    /// a 2-core Sapphire Rapids: 1×1 3.21 → 2.11 ms, 3×3/2 1.67 → 0.96, 3×3 (then by
    /// Winograd) 3.14 → 2.56; a 512-bit form of this kernel, a panel per vector, gained
    /// only 3.82 → 3.25 and 3.64 → 3.34).
    fn beats_gemm() -> bool {
        narrow::available() && !direct::has_avx512()
    }

    /// The plan for a conv of `x` `[n, c, h, w]` by `ks` (`[o, c, kh, kw]`), or for its
    /// input gradient with `transposed`, taking the panels from `cached` where given; None
    /// where the kernel does not apply or the CPU lacks it. Callers ask [`Self::beats_gemm`]
    /// first: the panels are packed (and kept) here.
    fn new(
        dims: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
        cached: Option<Cached<'_>>,
        transposed: bool,
    ) -> Option<NarrowConv> {
        let shape = ConvShape::new(dims, o, win, groups);
        let fits = groups == 1 && ks.len() == o * shape.taps && shape.image_len() > 0;
        let rows = if transposed { shape.taps } else { o };
        let small_map = shape.pixels <= NARROW_MAX_PIXELS && rows >= NARROW_MIN_ROWS;
        if !fits || !small_map || !narrow::available() {
            return None;
        }
        let w = Mat::row_major(ks, o, shape.taps);
        let panels = kept_or_made(cached, Derived::Panels { transposed }, || {
            Panels::pack(if transposed { w.t() } else { w })
        });
        Some(NarrowConv { shape, win: *win, panels })
    }

    fn cols_len(&self) -> usize {
        if self.shape.pointwise { 0 } else { self.shape.taps * self.shape.pixels }
    }

    fn forward(&self, xs: &[f32], bias: Option<&[f32]>, clamp: Option<Clamp>) -> Result<Vec<f32>> {
        let shape = &self.shape;
        each_image_into_new(
            xs,
            shape.image_len(),
            shape.out_len(),
            self.cols_len(),
            |img, y, cols, threads| {
                let cols: &[f32] = if shape.pointwise {
                    img
                } else {
                    im2col_split(img, shape.image, &self.win, cols, threads);
                    cols
                };
                let cols = Mat::row_major(cols, shape.taps, shape.pixels);
                narrow::product(&self.panels, cols, y, bias, clamp, threads)
            },
        )
    }

    /// The input gradient for the output gradient `gs`.
    fn backward(&self, gs: &[f32]) -> Result<Vec<f32>> {
        let shape = &self.shape;
        each_image_into_new(
            gs,
            shape.out_len(),
            shape.image_len(),
            self.cols_len(),
            |g, dx, cols, threads| {
                let g = Mat::row_major(g, shape.filters, shape.pixels);
                if shape.pointwise {
                    return narrow::product(&self.panels, g, dx, None, None, threads);
                }
                narrow::product_into(&self.panels, g, cols, threads)?;
                col2im_split(cols, shape.image, &self.win, zeroed(dx), threads);
                Ok(())
            },
        )
    }
}

/// Convolution forward: `x` `[n, c, h, w]`, `kernel` `[o, c/groups, kh, kw]`, optional
/// `bias` `[o]` → `[n, o, oh, ow]`, each value clamped as it is written when `clamp` is set.
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
    clamp: Option<Clamp>,
) -> Result<Tensor> {
    conv2d_with_cache(x, kernel, bias, win, groups, clamp, None)
}

/// [`conv2d`], taking a transformed kernel from `cache` (or leaving it there) where it
/// runs by Winograd's algorithm.
pub fn conv2d_with_cache(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
    clamp: Option<Clamp>,
    cache: Option<&KernelCache>,
) -> Result<Tensor> {
    let cached = cache.map(|cache| Cached { cache, kernel: kernel.id() });
    let dims @ [n, _, h, w] = dims4(x)?;
    let [o, ..] = dims4(kernel)?;
    let [oh, ow] = win.out_size(h, w);
    if x.dtype() == DType::F32 {
        if let Some(plan) = GroupedConv::new(dims, o, win, groups, kernel.elem_count()) {
            let out = with_slice::<f32, _>(x, |xs| {
                with_slice::<f32, _>(kernel, |ks| {
                    with_optional_slice::<f32, _>(bias, |bs| plan.forward(xs, ks, bs, clamp))
                })
            })?;
            return Ok(Tensor::from_vec(out, (n, o, oh, ow), x.device())?);
        }
        let out = with_slice::<f32, _>(kernel, |ks| {
            let pixelwise = || Pixelwise::new(dims, o, win, groups, ks).map(Plan::Pixelwise);
            let narrow = || {
                let plan = NarrowConv::beats_gemm()
                    .then(|| NarrowConv::new(dims, o, win, groups, ks, cached, false));
                plan.flatten().map(Plan::Narrow)
            };
            let winograd = || Winograd::new(dims, o, win, groups, ks, cached).map(Plan::Winograd);
            let plan = match pixelwise().or_else(narrow).or_else(winograd) {
                Some(plan) => Some(plan),
                None if oh * ow > GEMM_MAX_PIXELS
                    && (win.stride == [1, 1]
                        || dims[1] / groups <= STRIDED_DIRECT_MAX_CHANNELS) =>
                {
                    direct::DirectConv::new(dims, o, win, groups, ks).map(Plan::Direct)
                }
                None => None,
            };
            let Some(plan) = plan else {
                return Ok(None);
            };
            with_slice::<f32, _>(x, |xs| {
                with_optional_slice::<f32, _>(bias, |bs| plan.run(xs, bs, clamp))
            })
            .map(Some)
        })?;
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, (n, o, oh, ow), x.device())?);
        }
    }
    conv2d_im2col(x, kernel, bias, win, groups, clamp)
}

/// [`conv2d`] as im2col + gemm, for every window and type.
fn conv2d_im2col(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
    clamp: Option<Clamp>,
) -> Result<Tensor> {
    let dims @ [n, _, h, w] = dims4(x)?;
    let [o, ..] = dims4(kernel)?;
    let [oh, ow] = win.out_size(h, w);
    let shape = ConvShape::new(dims, o, win, groups);
    let c = dims[1];
    if groups == 0 || !o.is_multiple_of(groups) || !c.is_multiple_of(groups) {
        return Err(Error::Invalid(format!("{groups} groups of {c} → {o} channels")));
    }
    if shape.image_len() == 0 {
        // No input values to read: every output is what the padding gives, zero.
        return Ok(Tensor::zeros((n, o, oh, ow), x.dtype(), x.device())?);
    }
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |xs| {
        with_slice::<T, _>(kernel, |ks| {
            with_optional_slice::<T, _>(bias, |bs| {
                if bs.is_some_and(|b| b.len() != o) || ks.len() != o * shape.taps / groups {
                    return Err(Error::Invalid(format!("conv kernel or bias does not fit {o} filters of {} taps", shape.taps / groups)));
                }
                let len = n * shape.out_len();
                let mut out = Vec::with_capacity(len);
                let scratch = if shape.pointwise { 0 } else { shape.taps * shape.pixels };
                for_each_item(&mut out.spare_capacity_mut()[..len], shape.out_len(), xs, shape.image_len(), scratch,
                    |img, y, cols, threads| {
                        let cols: &[T] = if shape.pointwise {
                            img
                        } else {
                            im2col_split(img, shape.image, win, cols, threads);
                            cols
                        };
                        let l = shape.pixels;
                        // Each group's product writes its rows of `y`, so together they
                        // write all of it.
                        for (g, y) in y.chunks_exact_mut(shape.out_len() / groups).enumerate() {
                            let (filters, taps) = shape.group_rows(g);
                            let a = Mat::row_major(&ks[filters.start * taps.len()..filters.end * taps.len()], filters.len(), taps.len());
                            let b = Mat::row_major(&cols[taps.start * l..taps.end * l], taps.len(), l);
                            let y = matmul_uninit(y, a, b, threads)?;
                            add_bias_clamp(y, bs.map(|b| &b[filters]), l, clamp, threads);
                        }
                        Ok(())
                    })?;
                #[allow(unsafe_code)]
                // SAFETY: `for_each_item` returned Ok having run every image (none is empty,
                // or it returned before any), and each image's groups wrote all its values.
                unsafe { out.set_len(len) };
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
    conv2d_backward_input_with_cache(grad, kernel, input_dims, win, groups, None)
}

/// [`conv2d_backward_input`], taking a transformed kernel from `cache` (or leaving it
/// there) where it runs by Winograd's algorithm.
pub fn conv2d_backward_input_with_cache(
    grad: &Tensor,
    kernel: &Tensor,
    input_dims: [usize; 4],
    win: &Window,
    groups: usize,
    cache: Option<&KernelCache>,
) -> Result<Tensor> {
    let cached = cache.map(|cache| Cached { cache, kernel: kernel.id() });
    let [_, o, ..] = dims4(grad)?;
    if grad.dtype() == DType::F32 {
        if let Some(plan) = GroupedConv::new(input_dims, o, win, groups, kernel.elem_count()) {
            let dx = with_slice::<f32, _>(grad, |gs| {
                with_slice::<f32, _>(kernel, |ks| plan.backward_input(gs, ks))
            })?;
            return Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?);
        }
        let sparse = with_slice::<f32, _>(grad, |gs| {
            with_slice::<f32, _>(kernel, |ks| {
                let Some(plan) = sparse::SparseGradient::new(gs, ks, input_dims, o, win, groups)
                else {
                    return Ok(None);
                };
                let mut dx = vec![0.0; input_dims[0] * plan.image_len()];
                for_each_item(
                    &mut dx,
                    plan.image_len(),
                    gs,
                    plan.out_len(),
                    plan.scratch_len(),
                    |g_img, dx_img, scratch, threads| plan.image(g_img, dx_img, scratch, threads),
                )?;
                Ok(Some(dx))
            })
        })?;
        if let Some(dx) = sparse {
            return Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?);
        }
        let direct = with_slice::<f32, _>(grad, |gs| {
            with_slice::<f32, _>(kernel, |ks| {
                let plan = NarrowConv::beats_gemm()
                    .then(|| NarrowConv::new(input_dims, o, win, groups, ks, cached, true));
                if let Some(plan) = plan.flatten() {
                    return plan.backward(gs).map(Some);
                }
                Winograd::transposed(input_dims, o, win, groups, ks, cached)
                    .map(Plan::Winograd)
                    .or_else(|| transposed_direct(input_dims, o, win, groups, ks).map(Plan::Direct))
                    .map(|plan| plan.run(gs, None, None))
                    .transpose()
            })
        })?;
        if let Some(dx) = direct {
            return Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?);
        }
    }
    let shape = ConvShape::new(input_dims, o, win, groups);
    with_float!(grad.dtype(), T => with_slice::<T, _>(grad, |gs| {
        with_slice::<T, _>(kernel, |ks| {
            let len = input_dims[0] * shape.image_len();
            // Not zeroed first where the products write every value (a 1×1 conv's): that
            // pass was 4% of MobileNetV2's saliency.
            let mut dx = Vec::with_capacity(len);
            let cols_len = if shape.pointwise { 0 } else { shape.taps * shape.pixels };
            // With a cache, the kernel transposed once and kept: gemm then reads it as it
            // reads a forward's kernel, not through a transposed view.
            let kept_transpose = cached.map(|cached| {
                kept_or_made(Some(cached), Derived::Transposed, || shape.transposed_kernel(ks))
            });
            let by_transpose = kept_transpose.is_none() && shape.gradient_by_transpose();
            // A group's product, transposed, after the columns.
            let product_len = if by_transpose { shape.taps / groups * shape.pixels } else { 0 };
            // `for_each_item` walks the output (here dx) image by image alongside the input
            // (here the gradient).
            for_each_item(&mut dx.spare_capacity_mut()[..len], shape.image_len(), gs, shape.out_len(), cols_len + product_len,
                |g_img, dx_img, scratch, threads| {
                    let (cols, transposed) = scratch.split_at_mut(cols_len);
                    let l = shape.pixels;
                    // Group `g`'s product, `wᵀ·g`: the rows of its taps.
                    let product = |g| {
                        let (filters, taps) = shape.group_rows(g);
                        let w = match &kept_transpose {
                            Some(kt) => Mat::row_major(&kt[taps.start * filters.len()..taps.end * filters.len()], taps.len(), filters.len()),
                            None => Mat::row_major(&ks[filters.start * taps.len()..filters.end * taps.len()], filters.len(), taps.len()).t(),
                        };
                        let b = Mat::row_major(&g_img[filters.start * l..filters.end * l], filters.len(), l);
                        (taps.start * l..taps.end * l, w, b)
                    };
                    // The groups' taps cover every row: in a 1×1 conv, every input value.
                    for g in 0..groups {
                        let (rows, w, b) = product(g);
                        match (shape.pointwise, by_transpose) {
                            (true, false) => _ = matmul_uninit(&mut dx_img[rows], w, b, threads)?,
                            (false, false) => matmul(&mut cols[rows], w, b, false, threads)?,
                            // Zeroed first, a pass over a map of at most 64 pixels.
                            (true, true) => matmul_by_transpose(zeroed(&mut dx_img[rows]), w, b, transposed, threads)?,
                            (false, true) => matmul_by_transpose(&mut cols[rows], w, b, transposed, threads)?,
                        }
                    }
                    if !shape.pointwise {
                        col2im_split(cols, shape.image, win, zeroed(dx_img), threads);
                    }
                    Ok(())
                })?;
            #[allow(unsafe_code)]
            // SAFETY: `for_each_item` returned Ok having run every image (none is empty, or
            // it returned before any), and each image's values were all written: by `zeroed`
            // or else, in a 1×1 conv, by the groups' products.
            unsafe { dx.set_len(len) };
            Ok(Tensor::from_vec(dx, input_dims.to_vec(), grad.device())?)
        })
    }))
}

/// The input gradient of a stride-1 conv of `[n, c, h, w]` by `ks` (`[o, c, kh, kw]`) as
/// a plan for the direct kernel: it is the conv of the output gradient, padded to the
/// window's reach less the padding on each side, by the kernel flipped in both axes with
/// its input and output channels swapped. None where the direct kernel would not run it
/// well (small maps, as in the forward), for groups, or where a side's padding passes the
/// window's reach. Against gemm + col2im: DenseNet's 3×3 convs have 32 filters, so gemm
/// summed 32 terms per value into a buffer nine times the image that col2im then folded.
fn transposed_direct(
    [n, c, h, w]: [usize; 4],
    o: usize,
    win: &Window,
    groups: usize,
    ks: &[f32],
) -> Option<direct::DirectConv> {
    let [kh, kw] = win.kernel;
    let full = win.transposed()?;
    // Refused before the kernel is flipped for nothing (resnet50's 1×1 convs on 56×56 and
    // 28×28 maps flipped theirs on every saliency, 0.7% of it).
    let refused = direct::DirectConv::leaves_to_gemm(&full);
    if refused || groups != 1 || h * w <= GEMM_MAX_PIXELS || ks.len() != o * c * kh * kw {
        return None;
    }
    let [oh, ow] = win.out_size(h, w);
    direct::DirectConv::new([n, o, oh, ow], c, &full, 1, &flipped(ks, 1, c, kh * kw))
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::kernels::testing::{max_diff, window};
    use crate::model::Pads;

    #[test]
    fn conv_matches_a_hand_computed_case() {
        // 1×1×3×3 input 1..9, 2×2 kernel [[1, 0], [0, -1]]: out[i][j] = x[i][j] - x[i+1][j+1]
        // = -4 everywhere; bias 0.5 → -3.5.
        let x = Tensor::arange(1f32, 10., &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
        let k = Tensor::new(&[[[[1f32, 0.], [0., -1.]]]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let y = conv2d(&x, &k, Some(&b), &window(2, 1, [0; 4]), 1, None).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![-3.5; 4]);
    }

    #[test]
    fn strided_col2im_by_phases_adds_each_column_where_its_tap_reads() {
        // (c, [h, w], kernel, stride, dilation, pads): stride 2 with the stem's padding, odd
        // and even sides, stride 3 across and 2 down, dilation, asymmetric and no padding,
        // a 1×1 downsample.
        type Case = (usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], Pads);
        let cases: [Case; 5] = [
            (3, [15, 16], [7, 7], [2, 2], [1, 1], [3; 4]),
            (2, [11, 13], [3, 2], [2, 3], [1, 1], [1, 0, 2, 1]),
            (2, [12, 12], [3, 3], [2, 2], [2, 2], [2; 4]),
            (1, [9, 10], [3, 3], [2, 2], [1, 1], [0; 4]),
            (4, [8, 8], [1, 1], [2, 2], [1, 1], [0; 4]),
        ];
        for (c, [h, w], kernel, stride, dilation, pads) in cases {
            let win = Window { kernel, stride, dilation, pads };
            let [oh, ow] = win.out_size(h, w);
            let [kh, kw] = kernel;
            let cols: Vec<f64> =
                (0..c * kh * kw * oh * ow).map(|i| ((i * 7919) % 1000) as f64 / 100.0).collect();
            let mut want = vec![0.0; c * h * w];
            for (r, row) in cols.chunks_exact(oh * ow).enumerate() {
                let (ch, ki, kj) = (r / (kh * kw), r / kw % kh, r % kw);
                for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                    let iy = (oy * stride[0] + ki * dilation[0]).checked_sub(pads[0]);
                    let ix = (ox * stride[1] + kj * dilation[1]).checked_sub(pads[1]);
                    if let (Some(iy), Some(ix)) = (iy.filter(|&y| y < h), ix.filter(|&x| x < w)) {
                        want[(ch * h + iy) * w + ix] += row[oy * ow + ox];
                    }
                }
            }
            // Over a plane of stale values: every value is written.
            let mut got = vec![9.0; c * h * w];
            col2im_image(&cols, [c, h, w], &win, &mut got);
            assert_eq!(got, want, "{c}×{h}×{w} {win:?}");
        }
    }

    #[test]
    fn conv_with_padding_and_stride_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 4, 7, 7), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 4, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 2, [1; 4]), 1, None).unwrap();
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
        conv2d(&big, &k, None, &window(3, 1, [0; 4]), 1, None).unwrap();
        let x = Tensor::randn(0f32, 1., (1, 4, 8, 8), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 1, [1; 4]), 1, None).unwrap();
        let theirs = x.conv2d(&k, 1, 1, 1, 1).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn im2col_and_col2im_split_over_channels_equal_one_pass() {
        // 40 channels of 9 taps × 9·11 pixels: tasks of 19 channels, the last one short.
        let (img_dims, win) = ([40, 9, 11], window(3, 1, [1, 0, 1, 2]));
        assert_eq!(channel_tasks(img_dims, &win, 2), Some([19, 9 * 9 * 11]));
        let [c, h, w] = img_dims;
        let img: Vec<f64> = (0..c * h * w).map(|i| (i as f64 * 0.37).sin()).collect();
        let len = c * 9 * 9 * 11;
        let (mut one, mut split) = (vec![0.0; len], vec![f64::NAN; len]);
        im2col_image(&img, img_dims, &win, &mut one);
        im2col_split(&img, img_dims, &win, &mut split, 2);
        assert_eq!(one, split);
        let cols: Vec<f64> = (0..len).map(|i| (i as f64 * 0.11).cos()).collect();
        let (mut one, mut split) = (vec![0.5; c * h * w], vec![0.5; c * h * w]);
        col2im_image(&cols, img_dims, &win, &mut one);
        col2im_split(&cols, img_dims, &win, &mut split, 2);
        assert_eq!(one, split);
        assert_eq!(channel_tasks(img_dims, &win, 1), None);
    }

    #[test]
    fn transposed_kernels_are_each_groups_transpose() {
        // (channels, filters, kernel side, groups): taps not a multiple of the block, one
        // tap, groups of one filter, and kernels over the split's threshold.
        for (c, o, k, groups) in
            [(3, 5, 3, 1), (8, 6, 1, 2), (4, 4, 3, 4), (256, 64, 3, 1), (96, 40, 5, 4)]
        {
            let win = window(k, 1, [0; 4]);
            let shape = ConvShape::new([1, c, 9, 9], o, &win, groups);
            let ks: Vec<f32> = (0..o * c / groups * k * k).map(|i| i as f32).collect();
            let (filters, taps) = (o / groups, c / groups * k * k);
            let want: Vec<f32> = (0..groups)
                .flat_map(|g| {
                    let ks = &ks;
                    (0..taps).flat_map(move |t| {
                        (0..filters).map(move |f| ks[(g * filters + f) * taps + t])
                    })
                })
                .collect();
            assert_eq!(shape.transposed_kernel(&ks), want, "{c}→{o} {k}×{k} in {groups} groups");
        }
    }

    #[test]
    fn input_gradients_from_the_kept_transposed_kernel_equal_the_uncached_ones() {
        let dev = Device::Cpu;
        // (c, o, side, kernel, stride, groups): strided 1×1 and 3×3 (gemm + col2im), a 1×1 at
        // stride 1 (the image as its columns), groups of more than one channel, a 7×7 map
        // under a large kernel (the uncached path multiplies by transpose there).
        let cases = [
            (8, 12, 9, 1, 2, 1),
            (6, 10, 11, 3, 2, 1),
            (16, 24, 7, 1, 1, 1),
            (48, 40, 9, 3, 2, 2),
            (512, 1024, 7, 1, 1, 1),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (c, o, side, k, stride, groups) in cases {
                let win = Window {
                    kernel: [k; 2],
                    stride: [stride; 2],
                    dilation: [1, 1],
                    pads: [k / 2; 4],
                };
                let [oh, ow] = win.out_size(side, side);
                let kernel = Tensor::randn(0f32, 1., (o, c / groups, k, k), &dev).unwrap();
                let g = Tensor::randn(0f32, 1., (2, o, oh, ow), &dev).unwrap();
                let (kernel, g) = (kernel.to_dtype(dtype).unwrap(), g.to_dtype(dtype).unwrap());
                let dims = [2, c, side, side];
                let cache = KernelCache::default();
                let cached = |cache| {
                    conv2d_backward_input_with_cache(&g, &kernel, dims, &win, groups, cache)
                        .unwrap()
                };
                let plain = cached(None);
                // Twice: the first call makes the transposed kernel, the second reads it back.
                for _ in 0..2 {
                    let ours = cached(Some(&cache));
                    let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
                    let worst = max_diff(&f32s(&ours), &f32s(&plain));
                    assert!(worst < 1e-4, "{dtype:?} {c}→{o} {k}×{k}/{stride}");
                }
                assert_eq!(cache.len(), 1, "{dtype:?} {c}→{o} {k}×{k}/{stride} kept one kernel");
            }
        }
    }

    #[test]
    fn grouped_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 5, 5), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 2, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 1, [0; 4]), 2, None).unwrap();
        let theirs = x.conv2d(&k, 0, 1, 1, 2).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn direct_conv_matches_im2col() {
        let dev = Device::Cpu;
        // (n, c, o, [h, w], [kh, kw], stride, dilation, pads [top, left, bottom, right],
        // groups); groups here are too large for `depthwise`.
        type Case =
            (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], Pads, usize);
        // The first case has more taps than one pass of the kernel takes (360 > 320).
        let cases: [Case; 16] = [
            (1, 40, 11, [10, 13], [3, 3], [1, 1], [1, 1], [1; 4], 1),
            (1, 32, 64, [26, 26], [3, 3], [1, 1], [1, 1], [0; 4], 1),
            (3, 1, 32, [28, 28], [3, 3], [1, 1], [1, 1], [0; 4], 1),
            (1, 3, 7, [9, 5], [3, 3], [1, 1], [1, 1], [1; 4], 1),
            (2, 4, 13, [12, 7], [5, 3], [1, 1], [1, 2], [2, 1, 0, 3], 1),
            (1, 36, 18, [8, 8], [2, 2], [1, 1], [1, 1], [0, 0, 1, 1], 2),
            (2, 5, 5, [6, 11], [3, 3], [1, 1], [2, 1], [2, 1, 2, 1], 1),
            (1, 2, 1, [4, 3], [1, 3], [1, 1], [1, 1], [0, 1, 0, 1], 1),
            (2, 40, 12, [3, 3], [3, 3], [1, 1], [1, 1], [1; 4], 2),
            (1, 4, 6, [30, 2], [3, 1], [1, 1], [3, 1], [0; 4], 1),
            // Strided: the phase-split input.
            (1, 3, 16, [17, 17], [3, 3], [2, 2], [1, 1], [1; 4], 1),
            (2, 8, 7, [14, 9], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 1),
            (1, 5, 9, [15, 20], [5, 3], [2, 3], [1, 2], [2, 1, 0, 3], 1),
            (1, 6, 13, [7, 7], [7, 7], [2, 2], [1, 1], [3; 4], 1),
            (1, 4, 4, [9, 9], [1, 1], [2, 2], [1, 1], [1, 0, 0, 1], 1),
            // The largest offset is not the last tap's (tap (1, 1) reads the last phase), and
            // the planes have no gap to absorb it.
            (1, 1, 5, [8, 6], [3, 3], [2, 2], [1, 1], [0; 4], 1),
        ];
        for (n, c, o, [h, w], kernel, stride, dilation, pads, groups) in cases {
            let win = Window { kernel, stride, dilation, pads };
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (o, c / groups, kernel[0], kernel[1]), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let plan = direct::DirectConv::new([n, c, h, w], o, &win, groups, &ks);
            assert_eq!(plan.is_some(), direct::available(), "case {kernel:?} {pads:?}");
            let (xs, bs) = (x.flatten_all().unwrap(), b.to_vec1::<f32>().unwrap());
            let xs = xs.to_vec1::<f32>().unwrap();
            for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: -0.5, hi: 0.5 })] {
                let theirs = conv2d_im2col(&x, &k, Some(&b), &win, groups, clamp).unwrap();
                let chosen = conv2d(&x, &k, Some(&b), &win, groups, clamp).unwrap();
                assert!(max_diff(&chosen, &theirs) < 1e-4, "forward {kernel:?} {pads:?}");
                // The direct kernel itself, also where `conv2d` leaves a small map to gemm.
                if let Some(plan) = &plan {
                    let ours = plan.run(&xs, Some(&bs), clamp).unwrap();
                    let ours = Tensor::from_vec(ours, theirs.shape(), &dev).unwrap();
                    assert!(max_diff(&ours, &theirs) < 1e-4, "direct {kernel:?} {pads:?}");
                }
            }
        }
    }

    #[test]
    fn input_gradient_by_the_direct_kernel_matches_the_f64_gemm_path() {
        let dev = Device::Cpu;
        // (n, c, o, [h, w], [kh, kw], dilation, pads [top, left, bottom, right]): same and
        // valid padding, asymmetric pads, tall and wide windows, dilation, batches, more
        // taps than one pass takes (40 filters × 9 = 360 > 320), maps past 14×14.
        type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], Pads);
        let cases: [Case; 7] = [
            (1, 16, 32, [20, 20], [3, 3], [1, 1], [1; 4]),
            (2, 8, 5, [17, 23], [3, 3], [1, 1], [0; 4]),
            (1, 3, 40, [16, 16], [3, 3], [1, 1], [1; 4]),
            (1, 6, 7, [15, 18], [5, 3], [1, 1], [2, 0, 1, 2]),
            (2, 4, 9, [21, 15], [3, 3], [2, 2], [2, 1, 2, 2]),
            (1, 5, 6, [16, 13], [1, 7], [1, 1], [0, 3, 0, 3]),
            (1, 2, 3, [15, 15], [2, 2], [1, 1], [1, 0, 0, 1]),
        ];
        for (n, c, o, [h, w], kernel, dilation, pads) in cases {
            let win = Window { kernel, stride: [1, 1], dilation, pads };
            let [oh, ow] = win.out_size(h, w);
            let k = Tensor::randn(0f32, 1., (o, c, kernel[0], kernel[1]), &dev).unwrap();
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let dims = [n, c, h, w];
            let label = format!("{dims:?} {win:?}");
            let plan = transposed_direct(dims, o, &win, 1, &ks);
            assert_eq!(plan.is_some(), direct::available(), "{label}");
            let ours = conv2d_backward_input(&g, &k, dims, &win, 1).unwrap();
            let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let theirs = conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &win, 1).unwrap();
            assert!(max_diff(&ours, &theirs.to_dtype(DType::F32).unwrap()) < 1e-4, "{label}");
        }
        // Not taken: strides, small maps, padding past the window's reach, groups.
        let k = vec![0.5f32; 4 * 4 * 9];
        let same = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [1; 4] };
        let strided = Window { stride: [2, 2], ..same };
        let wide = Window { pads: [3, 1, 1, 1], ..same };
        assert!(transposed_direct([1, 4, 32, 32], 4, &strided, 1, &k).is_none());
        assert!(transposed_direct([1, 4, 14, 14], 4, &same, 1, &k).is_none());
        assert!(transposed_direct([1, 4, 32, 32], 4, &wide, 1, &k).is_none());
        assert!(transposed_direct([1, 4, 32, 32], 4, &same, 2, &k[..72]).is_none());
    }

    #[test]
    fn convs_on_small_maps_by_packed_panels_equal_the_f64_convs() {
        let dev = Device::Cpu;
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        // (n, c, o, side, kernel, stride): a 1×1 conv over a batch, a strided 3×3 one whose
        // last panel has 4 rows, and a 3×3 one onto 8×8 (the largest map taken).
        let cases = [(2, 256, 288, 7, 1, 1), (1, 96, 260, 14, 3, 2), (1, 30, 256, 8, 3, 1)];
        for (n, c, o, side, k, stride) in cases {
            let pad = k / 2;
            let win =
                Window { kernel: [k, k], stride: [stride; 2], dilation: [1, 1], pads: [pad; 4] };
            let dims = [n, c, side, side];
            let [oh, ow] = win.out_size(side, side);
            let label = format!("{dims:?} → {o}, {k}×{k}/{stride}");
            let zeros = vec![0.0f32; o * c * k * k];
            let plan = NarrowConv::new(dims, o, &win, 1, &zeros, None, false);
            let taken = plan.is_some() && NarrowConv::beats_gemm();
            assert_eq!(taken, narrow::available() && !direct::has_avx512(), "{label}");
            let x = Tensor::randn(0f32, 1., dims.to_vec(), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.1, (o, c, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let relu = Some(Clamp::RELU);
            let exact = conv2d(&f64s(&x), &f64s(&w), Some(&f64s(&b)), &win, 1, relu).unwrap();
            let exact_dx = conv2d_backward_input(&f64s(&g), &f64s(&w), dims, &win, 1).unwrap();
            let cache = KernelCache::default();
            for cache in [None, Some(&cache), Some(&cache)] {
                let y = conv2d_with_cache(&x, &w, Some(&b), &win, 1, relu, cache).unwrap();
                let dx = conv2d_backward_input_with_cache(&g, &w, dims, &win, 1, cache).unwrap();
                assert!(max_diff(&y, &exact.to_dtype(DType::F32).unwrap()) < 1e-4, "{label}");
                assert!(max_diff(&dx, &exact_dx.to_dtype(DType::F32).unwrap()) < 1e-4, "{label}");
            }
            if taken {
                assert_eq!(cache.len(), 2, "{label}: both directions kept");
            }
            // The kernel itself where the CPU has it, also where convs go to gemm instead.
            let ks = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let plans = [false, true]
                .map(|transposed| NarrowConv::new(dims, o, &win, 1, &ks, None, transposed));
            if let [Some(forward), Some(backward)] = plans {
                let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bias = values(&b);
                let y = forward.forward(&values(&x), Some(&bias), relu).unwrap();
                let dx = backward.backward(&values(&g)).unwrap();
                let want = |t: &Tensor| values(&t.to_dtype(DType::F32).unwrap());
                for (got, want) in [(y, want(&exact)), (dx, want(&exact_dx))] {
                    let worst =
                        got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(got.len() == want.len() && worst < 1e-4, "{label}: by the kernel");
                }
            } else {
                assert!(!narrow::available(), "{label}");
            }
        }
        // Not taken onto larger maps, for fewer rows, or with groups.
        let same = window(3, 1, [1; 4]);
        let ks = vec![0.0f32; 256 * 256 * 9];
        assert!(NarrowConv::new([1, 256, 9, 9], 256, &same, 1, &ks, None, false).is_none());
        assert!(
            NarrowConv::new([1, 256, 7, 7], 255, &same, 1, &ks[..255 * 2304], None, false)
                .is_none()
        );
        assert!(
            NarrowConv::new([1, 256, 7, 7], 256, &same, 2, &ks[..256 * 1152], None, false)
                .is_none()
        );
    }

    #[test]
    fn input_gradients_of_large_kernels_on_small_maps_equal_a_transposed_conv() {
        let dev = Device::Cpu;
        // (n, c, o, side, kernel, stride, groups), each taking the transposed product: a 3×3
        // conv, a strided one, a 1×1 one over a batch, and two groups of 1×1.
        let cases = [
            (1, 256, 256, 7, 3, 1, 1),
            (1, 256, 256, 13, 3, 2, 1),
            (2, 1024, 512, 7, 1, 1, 1),
            (1, 2048, 1024, 5, 1, 1, 2),
        ];
        for (n, c, o, side, k, stride, groups) in cases {
            let pad = k / 2;
            let win =
                Window { kernel: [k, k], stride: [stride; 2], dilation: [1, 1], pads: [pad; 4] };
            let dims = [n, c, side, side];
            let shape = ConvShape::new(dims, o, &win, groups);
            let label = format!("{dims:?} → {o}, {k}×{k}/{stride}, {groups} groups");
            assert!(shape.gradient_by_transpose(), "{label}");
            let [oh, ow] = win.out_size(side, side);
            let w = Tensor::randn(0f64, 1., (o, c / groups, k, k), &dev).unwrap();
            let g = Tensor::randn(0f64, 1., (n, o, oh, ow), &dev).unwrap();
            let ours = conv2d_backward_input(&g, &w, dims, &win, groups).unwrap();
            let og = o / groups;
            let parts: Vec<Tensor> = (0..groups)
                .map(|i| {
                    let (g, w) =
                        (g.narrow(1, i * og, og).unwrap(), w.narrow(0, i * og, og).unwrap());
                    g.conv_transpose2d(&w, pad, 0, stride, 1).unwrap()
                })
                .collect();
            let theirs = Tensor::cat(&parts, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{label}");
            let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-9, "{label}");
        }
        // Not taken on larger maps or under smaller kernels.
        let same = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [1; 4] };
        assert!(!ConvShape::new([1, 256, 9, 9], 256, &same, 1).gradient_by_transpose());
        assert!(!ConvShape::new([1, 128, 7, 7], 128, &same, 1).gradient_by_transpose());
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
            // Nine in ten gradients zero, as below a max pool and a ReLU.
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let keep = Tensor::rand(0f32, 1., (n, o, oh, ow), &dev).unwrap().ge(0.9).unwrap();
            let g = (g * keep.to_dtype(DType::F32).unwrap()).unwrap();
            let (gs, ks) = (
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let dims = [n, c, h, w];
            let taken = sparse::SparseGradient::new(&gs, &ks, dims, o, &win, 1).is_some();
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
        assert!(sparse::SparseGradient::new(&g, &ks, [1, 32, 12, 12], 64, &win, 1).is_none());
        // So does one in ten non-zero on a product the dense path runs at its full rate
        // (256 → 256 channels at 28×28: 462M multiply-adds), but not one in a hundred.
        let (c, o, hw) = (256, 256, 28);
        let ks = vec![0.5f32; o * c * 9];
        let share = |every: usize| -> Vec<f32> {
            (0..o * hw * hw).map(|i| if i % every == 0 { 1.0 } else { 0.0 }).collect()
        };
        let same = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [1; 4] };
        let plan = |g: &[f32]| sparse::SparseGradient::new(g, &ks, [1, c, hw, hw], o, &same, 1);
        assert!(plan(&share(10)).is_none());
        assert_eq!(plan(&share(100)).is_some(), direct::available());
    }
}
