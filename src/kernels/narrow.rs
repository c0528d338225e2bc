//! Products `y = a·x` whose `x` has few columns, in f32 on x86-64 CPUs with AVX2 and FMA
//! but not AVX-512 (where gemm's 512-bit kernels run these faster; see `conv::NarrowConv`):
//! the convs on 7×7 maps (1×1 ones, and im2col's columns of the others), forward and input
//! gradient, with a bias and a clamp applied in registers.
//!
//! Why not gemm: its tiles run 16 pixels along the vectors, so a 49-pixel map fills four
//! tiles for three tiles' worth of pixels (its edge kernel on the 49th pixel was 22% of a
//! 512 → 2048 conv's time in perf), and it repacks `a` (the model's weights, cold in the
//! caches) or reads it strided on every call. Why not Winograd at 7×7: its 16 transformed
//! kernels are 1.8× the kernel, read once each from memory per pass.
//!
//! Here a tile is 16 rows of `a` (output channels) along two vectors × 6 pixels
//! broadcast: 49 pixels make 8 tiles of 6 and one of 1, and a narrower tile costs only its
//! own FMAs. `a` is packed once ([`Panels`], which the model keeps) in panels of 16 rows,
//! `[depth][16]`, one stream per panel; `x` per call in tiles of 6 columns, `[depth][6]`.
//! A tile's accumulators hold one pixel's 16 channels per pair, so it is transposed
//! through a small buffer as it is stored: 96 values against 12·depth FMAs.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::matmul::Mat;
use super::relu::Clamp;
use super::{Scratch, SendPtr};
use crate::error::{Error, Result};

/// Rows of `a` per panel: two AVX vectors.
const PANEL: usize = 16;
/// Columns of `x` per tile: its 12 accumulators, two vectors of `a` and a broadcast fill
/// 15 of the 16 AVX registers.
const WIDTH: usize = 6;

/// Whether this CPU runs the kernel (std caches the detection).
pub(super) fn available() -> bool {
    super::direct::available()
}

/// `a` `[rows, depth]` as [`product`] reads it: panels of [`PANEL`] rows, each
/// `[depth][16]`, except a last one of at most 8 rows, `[depth][8]`; rows past the end are
/// zeros.
pub(crate) struct Panels {
    rows: usize,
    depth: usize,
    values: Vec<f32>,
}

impl Panels {
    /// Packs any strided view of `a`.
    pub(super) fn pack(a: Mat<f32>) -> Panels {
        let (rows, depth) = (a.rows, a.cols);
        let mut values = Vec::with_capacity(rows.next_multiple_of(8) * depth);
        for first in (0..rows).step_by(PANEL) {
            let lanes = lanes(rows - first);
            for k in 0..depth {
                values.extend((first..first + lanes).map(|r| match r < rows {
                    true => a.data[r * a.row_stride + k * a.col_stride],
                    false => 0.0,
                }));
            }
        }
        Panels { rows, depth, values }
    }
}

/// Lanes of the panel whose first row has `left` rows from it to the end.
fn lanes(left: usize) -> usize {
    if left > 8 { PANEL } else { 8 }
}

/// `y[r][p] = clamp(bias[r] + Σ_k a[r][k]·x[k][p])` into row-major `y` `[rows, pixels]`,
/// every value written; `x` `[depth, pixels]` has its rows' values side by side. Split over
/// the rayon pool when `threads` > 1: by runs of panels, or by tiles where there are fewer
/// panels than threads.
pub(super) fn product(
    a: &Panels,
    x: Mat<f32>,
    y: &mut [MaybeUninit<f32>],
    bias: Option<&[f32]>,
    clamp: Option<Clamp>,
    threads: usize,
) -> Result<()> {
    let (rows, depth, pixels) = (a.rows, a.depth, x.cols);
    let fits = available()
        && x.rows == depth
        && x.col_stride == 1
        && x.fits()
        && y.len() == rows * pixels
        && bias.is_none_or(|b| b.len() == rows);
    if !fits {
        return Err(Error::Invalid(format!(
            "a [{rows}, {depth}] product by [{}, {pixels}] into {} values",
            x.rows,
            y.len()
        )));
    }
    if y.is_empty() {
        return Ok(());
    }
    let (panels, tiles) = (rows.div_ceil(PANEL), pixels.div_ceil(WIDTH));
    let parts = if threads > 1 && rows * depth * pixels >= 1 << 16 { threads } else { 1 };
    let out = SendPtr(y.as_mut_ptr().cast::<f32>());
    // Each task packs the tiles it reads, so the pool is woken once per product (a worker
    // left idle while the caller packed took 30–130 µs to start, on products of 0.5 ms).
    // By panels where there are enough, every task packing every tile: split by tiles,
    // every task streams all of `a` (1×1 convs, 2 threads, ms: 2048 → 512 at 7×7 0.60 by
    // tiles against 0.52 by panels, 256 → 1024 at 14×14 0.65 against 0.53).
    let task = |part: usize| {
        let (panels, tiles) = match panels >= parts {
            true => (split(panels, parts, part), 0..tiles),
            false => (0..panels, split(tiles, parts, part)),
        };
        let mut packed = Scratch::take(tiles.len() * WIDTH * depth);
        let packed = packed.values();
        pack_tiles(x, tiles.start, packed);
        for panel in panels {
            for (i, (tile, xs)) in tiles.clone().zip(packed.chunks_exact(WIDTH * depth)).enumerate()
            {
                // The first tile fetches the next panel into the caches as it goes: a
                // panel's first pass otherwise waits on memory for weights not read since
                // the last forward.
                let ahead = (panel + usize::from(i == 0)) * PANEL * depth;
                // SAFETY: `fits` checked the CPU and the sizes of `a`, `x` (its tiles packed
                // into `xs`) and `y`; this task's panels × tiles are its own part of `y`.
                #[allow(unsafe_code)]
                unsafe {
                    store_tile(a, xs, panel, tile, ahead, pixels, out.get(), bias, clamp)
                };
            }
        }
    };
    match parts {
        1 => task(0),
        _ => (0..parts).into_par_iter().for_each(task),
    }
    Ok(())
}

/// [`product`] without bias or clamp into an initialised `y`.
pub(super) fn product_into(a: &Panels, x: Mat<f32>, y: &mut [f32], threads: usize) -> Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and `product` writes only initialised
    // values through the view.
    let y = unsafe { &mut *(std::ptr::from_mut(y) as *mut [MaybeUninit<f32>]) };
    product(a, x, y, None, None, threads)
}

/// The tiles of [`WIDTH`] columns of `x` `[depth, pixels]` from tile `first` on into
/// `packed`, each `[depth][6]`, the last padded with zeros.
fn pack_tiles(x: Mat<f32>, first: usize, packed: &mut [f32]) {
    let (depth, pixels) = (x.rows, x.cols);
    for (t, dst) in packed.chunks_exact_mut(WIDTH * depth).enumerate() {
        let start = (first + t) * WIDTH;
        let width = (pixels - start).min(WIDTH);
        let rows = (0..depth).map(|k| &x.data[k * x.row_stride + start..]);
        for (row, dst) in rows.zip(dst.chunks_exact_mut(WIDTH)) {
            match width {
                // A fixed-size copy, not a call to `memcpy`.
                WIDTH => dst.copy_from_slice(&row[..WIDTH]),
                _ => {
                    dst[..width].copy_from_slice(&row[..width]);
                    dst[width..].fill(0.0);
                }
            }
        }
    }
}

/// Part `part` of `0..len` split in `parts` as evenly as can be.
fn split(len: usize, parts: usize, part: usize) -> Range<usize> {
    len * part / parts..len * (part + 1) / parts
}

/// One tile: panel `panel` of `a` by tile `tile` of `x`, packed in `xs`, its bias added and
/// clamp applied, stored into `y` (rows `pixels` apart); fetches `a`'s values from `ahead`
/// on into the caches meanwhile.
///
/// # Safety
/// The CPU has AVX2 and FMA; `xs` holds `WIDTH·a.depth` values; `y` is valid for
/// writes of `a.rows` rows of `pixels` values, and this tile's part of it is accessed by
/// nothing else meanwhile.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn store_tile(
    a: &Panels,
    xs: &[f32],
    panel: usize,
    tile: usize,
    ahead: usize,
    pixels: usize,
    y: *mut f32,
    bias: Option<&[f32]>,
    clamp: Option<Clamp>,
) {
    let first_row = panel * PANEL;
    let lanes = lanes(a.rows - first_row);
    let weights = &a.values[first_row * a.depth..][..lanes * a.depth];
    let first_pixel = tile * WIDTH;
    let width = (pixels - first_pixel).min(WIDTH);
    // Each column's sums start from the bias, and the kernel clamps them.
    let rows = (a.rows - first_row).min(PANEL);
    let mut start = [0.0f32; PANEL];
    if let Some(bias) = bias {
        start[..rows].copy_from_slice(&bias[first_row..first_row + rows]);
    }
    let mut sums = [start; WIDTH];
    let ahead = a.values.as_ptr().wrapping_add(ahead);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract; `weights` and `xs` hold `depth` steps of their widths.
    unsafe {
        match (lanes, width) {
            (PANEL, 1) => avx2::tile::<2, 1>(weights, xs, ahead, clamp, &mut sums),
            (PANEL, 2) => avx2::tile::<2, 2>(weights, xs, ahead, clamp, &mut sums),
            (PANEL, 3) => avx2::tile::<2, 3>(weights, xs, ahead, clamp, &mut sums),
            (PANEL, 4) => avx2::tile::<2, 4>(weights, xs, ahead, clamp, &mut sums),
            (PANEL, 5) => avx2::tile::<2, 5>(weights, xs, ahead, clamp, &mut sums),
            (PANEL, _) => avx2::tile::<2, WIDTH>(weights, xs, ahead, clamp, &mut sums),
            (_, 1) => avx2::tile::<1, 1>(weights, xs, ahead, clamp, &mut sums),
            (_, 2) => avx2::tile::<1, 2>(weights, xs, ahead, clamp, &mut sums),
            (_, 3) => avx2::tile::<1, 3>(weights, xs, ahead, clamp, &mut sums),
            (_, 4) => avx2::tile::<1, 4>(weights, xs, ahead, clamp, &mut sums),
            (_, 5) => avx2::tile::<1, 5>(weights, xs, ahead, clamp, &mut sums),
            (_, _) => avx2::tile::<1, WIDTH>(weights, xs, ahead, clamp, &mut sums),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (weights, xs, ahead, clamp);
    for l in 0..rows {
        let r = first_row + l;
        for (j, column) in sums[..width].iter().enumerate() {
            // SAFETY: `r < a.rows` and `first_pixel + j < pixels`: inside `y`.
            unsafe { y.add(r * pixels + first_pixel + j).write(column[l]) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Clamp, PANEL, WIDTH};

    /// `sums[j][l] += Σ_k weights[k][l]·xs[k][j]` for `V` vectors of lanes `l` and `W`
    /// columns `j`, then clamped with `clamp`; prefetches a line from `ahead` on per step
    /// (an address, never read).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `weights` holds `depth·8V` values and `xs` `depth·WIDTH`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const V: usize, const W: usize>(
        weights: &[f32],
        xs: &[f32],
        mut ahead: *const f32,
        clamp: Option<Clamp>,
        sums: &mut [[f32; PANEL]; WIDTH],
    ) {
        let depth = weights.len() / (8 * V);
        let (mut w, mut x) = (weights.as_ptr(), xs.as_ptr());
        // SAFETY: the caller's bounds: `depth` steps of 8V weights and of WIDTH columns;
        // `sums` holds W columns of at least 8V lanes.
        unsafe {
            let mut acc: [[__m256; V]; W] = std::array::from_fn(|j| {
                std::array::from_fn(|v| _mm256_loadu_ps(sums[j].as_ptr().add(8 * v)))
            });
            for _ in 0..depth {
                let a: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(w.add(8 * v)));
                for (j, acc) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*x.add(j));
                    for (acc, a) in acc.iter_mut().zip(a) {
                        *acc = _mm256_fmadd_ps(a, b, *acc);
                    }
                }
                // A prefetch does not fault, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                ahead = ahead.wrapping_add(8 * V);
                w = w.add(8 * V);
                x = x.add(WIDTH);
            }
            let bounds = clamp.map(|c| (_mm256_set1_ps(c.lo), _mm256_set1_ps(c.hi)));
            for (sums, acc) in sums.iter_mut().zip(&acc) {
                for (v, &acc) in acc.iter().enumerate() {
                    // `max` gives its second operand for NaN: NaN becomes `lo`, as in
                    // `activate`.
                    let acc =
                        bounds.map_or(acc, |(lo, hi)| _mm256_min_ps(_mm256_max_ps(acc, lo), hi));
                    _mm256_storeu_ps(sums.as_mut_ptr().add(8 * v), acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::activate;

    #[test]
    fn products_equal_a_loop_with_bias_clamp_ragged_panels_and_tiles() {
        // Rows with a last panel of 16, of 8 or fewer, and of 9–15 lanes; pixels in whole
        // tiles, with a ragged last one, and fewer than a tile; split by panels and by
        // tiles (one panel on two threads); `x` read from a wider matrix.
        let value = |i: usize, scale: f32| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * scale;
        for [rows, depth, pixels] in [[32, 7, 12], [5, 300, 49], [29, 64, 3], [40, 33, 49]] {
            let a: Vec<f32> = (0..rows * depth).map(|i| value(i, 1.0)).collect();
            let stride = pixels + 3;
            let mut xs: Vec<f32> = (0..depth * stride).map(|i| value(i + 5, 2.0)).collect();
            xs[stride + 1] = f32::NAN;
            let bias: Vec<f32> = (0..rows).map(|i| value(i + 9, 0.5)).collect();
            let panels = Panels::pack(Mat::row_major(&a, rows, depth));
            let x = Mat { data: &xs, rows: depth, cols: pixels, row_stride: stride, col_stride: 1 };
            for threads in [1, 2] {
                for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: 0.0, hi: 6.0 })] {
                    for bias in [None, Some(bias.as_slice())] {
                        let mut y = vec![MaybeUninit::new(f32::INFINITY); rows * pixels];
                        if !available() {
                            assert!(product(&panels, x, &mut y, bias, clamp, threads).is_err());
                            return;
                        }
                        product(&panels, x, &mut y, bias, clamp, threads).unwrap();
                        for r in 0..rows {
                            for p in 0..pixels {
                                let sum: f64 = (0..depth)
                                    .map(|k| {
                                        f64::from(a[r * depth + k]) * f64::from(xs[k * stride + p])
                                    })
                                    .sum::<f64>()
                                    + bias.map_or(0.0, |b| f64::from(b[r]));
                                let want = activate(sum as f32, clamp);
                                // SAFETY: `product` returned Ok, having written every value.
                                #[allow(unsafe_code)]
                                let got = unsafe { y[r * pixels + p].assume_init() };
                                let close = (got - want).abs() <= 1e-4 * (1.0 + want.abs());
                                let nans = got.is_nan() && want.is_nan();
                                assert!(
                                    close || nans,
                                    "[{rows}, {depth}, {pixels}] ({r}, {p}): {got} against {want}"
                                );
                            }
                        }
                    }
                }
            }
            let mut short = vec![MaybeUninit::new(0.0); rows * pixels - 1];
            assert!(product(&panels, x, &mut short, None, None, 1).is_err());
            let wrong_bias = vec![0.0; rows + 1];
            let mut y = vec![MaybeUninit::new(0.0); rows * pixels];
            assert!(product(&panels, x, &mut y, Some(&wrong_bias), None, 1).is_err());
        }
    }

    #[test]
    fn transposed_panels_give_the_transposed_product() {
        // The input gradient's `wᵀ·g` from the row-major kernel's transposed view.
        let (filters, taps, pixels) = (19, 37, 10);
        let w: Vec<f32> = (0..filters * taps).map(|i| (i % 11) as f32 - 5.0).collect();
        let g: Vec<f32> = (0..filters * pixels).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
        let panels = Panels::pack(Mat::row_major(&w, filters, taps).t());
        let mut y = vec![f32::NAN; taps * pixels];
        if !available() {
            return;
        }
        product_into(&panels, Mat::row_major(&g, filters, pixels), &mut y, 2).unwrap();
        for t in 0..taps {
            for p in 0..pixels {
                let want: f32 = (0..filters).map(|f| w[f * taps + t] * g[f * pixels + p]).sum();
                assert_eq!(y[t * pixels + p], want, "({t}, {p})");
            }
        }
    }
}
