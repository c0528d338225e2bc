//! 1×1 convolutions (stride 1, no padding, one group) in f32 on x86-64 CPUs with AVX2 and
//! FMA: `y[r][p] = act(bias[r] + Σ_c w[r][c]·x[c][p])`, with the bias and the clamp applied
//! in registers as each tile is stored.
//!
//! Why not gemm: MobileNet's and EfficientNet's expansions have 16–40 input channels, so a
//! product does 16–40 FMAs per output value and is bound by writing its output; gemm then
//! leaves the bias and the activation to a second pass that reads and writes the whole map
//! again (mobilenet_v2's 1×1 convs ran at 25 GMAC/s on 2 threads, against 80 for gemm on
//! deep products). Here the image is read in place (tap `c` of pixel `p` is `x[c·hw + p]`),
//! the output written once, and the tile is the direct kernel's: 6 output channels × 16
//! pixels in 12 accumulators, the kernel packed channel-major per block of 6
//! ([`direct::pack`]), the image's pixels packed per task into panels of 16. With AVX-512F
//! a panel is one 512-bit vector and panels go in pairs, as in `direct`.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::conv::each_image_into_new;
use super::direct::{self, ROWS, TILE};
use super::relu::Clamp;
use super::{Scratch, SendPtr, Window, tiles_for_rows};
use crate::error::{Error, Result};

/// Input values of one task's pixel chunk: its channels × pixels stay in L2 while every
/// block of output channels reads them.
const CHUNK_VALUES: usize = 1 << 16;

/// A 1×1 convolution, ready to run on any batch.
#[derive(Clone)]
pub(super) struct Pixelwise {
    /// Input channels.
    channels: usize,
    /// Output channels.
    rows: usize,
    /// Pixels of one map.
    pixels: usize,
    /// Output channels in blocks of at most [`ROWS`].
    blocks: Vec<Range<usize>>,
    /// Per block: `[channels][block rows]`.
    packed: Vec<f32>,
    /// Tiles in pairs in 512-bit vectors, else one by one in AVX2; true only where the CPU
    /// has AVX-512F (the kernel's safety relies on it).
    wide: bool,
}

impl Pixelwise {
    /// The plan for a conv of `x` `[n, c, h, w]` by `ks` `[o, c, 1, 1]`; None unless the
    /// conv is a 1×1 one at stride 1 without padding or groups, one this kernel runs faster
    /// than gemm with its separate bias pass, and the CPU has the kernel.
    ///
    /// That is an expansion (at least twice as many outputs as inputs) from at most 64
    /// channels on a map of at least 28×28. Measured per conv, bias and ReLU, best of 20
    /// (2-core box, 1 thread / 2 threads, this kernel's time over gemm's): 16 → 96 at
    /// 112×112 0.78 / 0.77, 24 → 144 at 56×56 0.81 / 0.90, 64 → 256 at 56×56 0.92 / 0.95,
    /// 32 → 192 at 28×28 0.89 / 0.95. Elsewhere gemm won: with more inputs per output the
    /// bias pass matters less, and gemm's tiles run along the output channels, so maps of
    /// 7×7 or 14×14 do not waste a partial tile of pixels on every row (1.2–2.2× there).
    pub(super) fn new(
        x: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
    ) -> Option<Pixelwise> {
        let [_, c, h, w] = x;
        let plain = win.kernel == [1, 1] && win.stride == [1, 1] && win.pads == [0; 4];
        let expansion = c <= 64 && o >= 2 * c && h * w >= 28 * 28;
        if !plain || groups != 1 || !expansion {
            return None;
        }
        Pixelwise::of_rows(ks, o, c, h * w)
    }

    /// The plan for `y = w·x` per image, `w` `[rows, channels]` row-major, images
    /// `[channels, pixels]`; None unless the CPU has the kernel or if `w` has another size.
    pub(super) fn of_rows(
        w: &[f32],
        rows: usize,
        channels: usize,
        pixels: usize,
    ) -> Option<Pixelwise> {
        if !direct::available() || w.len() != rows * channels || rows * channels * pixels == 0 {
            return None;
        }
        let blocks = direct::blocks(rows, 1);
        let mut packed = Vec::with_capacity(w.len());
        direct::pack(w, channels, &blocks, &mut packed);
        Some(Pixelwise { channels, rows, pixels, blocks, packed, wide: direct::has_avx512() })
    }

    /// Runs the conv over a batch `xs` of `[channels, pixels]` images, adding `bias` per
    /// output channel and clamping when `clamp` is set.
    pub(super) fn run(
        &self,
        xs: &[f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) -> Result<Vec<f32>> {
        if bias.is_some_and(|b| b.len() != self.rows) {
            return Err(Error::Invalid("1×1 conv given a bias of the wrong size".into()));
        }
        let (image_len, out_len) = (self.channels * self.pixels, self.rows * self.pixels);
        each_image_into_new(xs, image_len, out_len, 0, |img, y, _, threads| {
            self.image(img, y, bias, clamp, threads)
        })
    }

    /// One image into `y`: tasks of (a run of row blocks, a chunk of pixels), over the pool
    /// when `threads` > 1; together they write every value of `y`.
    fn image(
        &self,
        img: &[f32],
        y: &mut [MaybeUninit<f32>],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
        threads: usize,
    ) -> Result<()> {
        let (channels, pixels) = (self.channels, self.pixels);
        if img.len() != channels * pixels || y.len() != self.rows * pixels {
            return Err(Error::Invalid("1×1 conv given an image of the wrong size".into()));
        }
        let chunk = (CHUNK_VALUES / channels).max(TILE) / TILE * TILE;
        let chunks = pixels.div_ceil(chunk);
        // Enough tasks to share the pool when the map is small (7×7 maps have one chunk):
        // the row blocks split into runs as well.
        let runs =
            if threads > 1 { (4 * threads).div_ceil(chunks).min(self.blocks.len()) } else { 1 };
        let per_run = self.blocks.len().div_ceil(runs);
        let out = SendPtr(y.as_mut_ptr().cast::<f32>());
        let task = |t: usize| {
            let (run, c) = (t / chunks, t % chunks);
            let span = c * chunk..((c + 1) * chunk).min(pixels);
            let mut panels = Scratch::take(span.len().div_ceil(TILE) * TILE * channels);
            let panels = panels.values();
            pack_panels(img, pixels, span.clone(), panels);
            for block in self.blocks.iter().skip(run * per_run).take(per_run) {
                let weights = &self.packed[block.start * channels..block.end * channels];
                let bias = bias.map(|b| &b[block.clone()]);
                let first = block.start * pixels + span.start;
                #[allow(unsafe_code)]
                // SAFETY: `image` checked the size of `y`, so this block's rows of `span`
                // lie in it; they are this task's own (runs of blocks and chunks of pixels
                // do not overlap).
                unsafe {
                    tiles(
                        self.wide,
                        weights,
                        block.len(),
                        panels,
                        out.get().add(first),
                        pixels,
                        span.len(),
                        bias,
                        clamp,
                    )
                };
            }
        };
        let tasks = runs * chunks;
        if threads > 1 && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
        Ok(())
    }
}

/// The pixels `span` of `img` `[channels, pixels]` as panels of [`TILE`] pixels, each
/// `[channels][TILE]` and the last padded with zeros: the kernel then reads one stream
/// instead of a row per channel (which ran 1.2–2× slower on deep convs and small maps).
fn pack_panels(img: &[f32], pixels: usize, span: Range<usize>, panels: &mut [f32]) {
    let channels = img.len() / pixels;
    for (t, panel) in panels.chunks_exact_mut(TILE * channels).enumerate() {
        let start = span.start + t * TILE;
        let len = (span.end - start).min(TILE);
        for (row, dst) in img.chunks_exact(pixels).zip(panel.chunks_exact_mut(TILE)) {
            dst[..len].copy_from_slice(&row[start..start + len]);
            dst[len..].fill(0.0);
        }
    }
}

/// `rows` output channels × `count` pixels at `out` (rows `stride` apart) from the
/// block's `weights` `[channels][rows]` and the packed `panels`, by the kernel for that
/// many rows, in 512-bit vectors with `wide`.
///
/// # Safety
/// The CPU has AVX2 and FMA, and AVX-512F with `wide`; `rows` ≤ [`ROWS`]; `panels` holds
/// `count.div_ceil(TILE)` panels of `weights.len() / rows` channels; `out` is valid for writes of `rows` rows of
/// `count` values, and nothing else accesses them meanwhile.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn tiles(
    wide: bool,
    weights: &[f32],
    rows: usize,
    panels: &[f32],
    out: *mut f32,
    stride: usize,
    count: usize,
    bias: Option<&[f32]>,
    clamp: Option<Clamp>,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        let args = (weights, panels, out, stride, count, bias, clamp);
        tiles_for_rows!(wide, rows, args)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (wide, weights, rows, panels, out, stride, count, bias, clamp);
}

/// What the tile kernels take: a block's weights, the packed panels, the output, its row
/// stride and pixel count, the bias and the clamp.
type Tiles<'a> = (&'a [f32], &'a [f32], *mut f32, usize, usize, Option<&'a [f32]>, Option<Clamp>);

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::TILE;

    /// The tiles of `count` pixels for `R` output channels: sums over every channel, then
    /// bias and clamp, stored; the last tile is masked to the pixels left.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `weights` holds `R·channels` values, `panels`
    /// `count.div_ceil(TILE)·channels·TILE`; `out` is valid for `R` rows of `count` values,
    /// `stride` apart.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tiles<const R: usize>(
        (weights, panels, out, stride, count, bias, clamp): super::Tiles<'_>,
    ) {
        let channels = weights.len() / R;
        let mut add = [_mm256_setzero_ps(); R];
        if let Some(bias) = bias {
            for (a, b) in add.iter_mut().zip(bias) {
                *a = _mm256_set1_ps(*b);
            }
        }
        let bounds = clamp.map(|c| (_mm256_set1_ps(c.lo), _mm256_set1_ps(c.hi)));
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // SAFETY: the caller's bounds cover every access; a masked lane is not accessed.
        unsafe {
            for (t, panel) in panels.chunks_exact(channels * TILE).enumerate() {
                let p = t * TILE;
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                let mut x = panel.as_ptr();
                let mut w = weights.as_ptr();
                for _ in 0..channels {
                    let (x0, x1) = (_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*w.add(r));
                        acc[0] = _mm256_fmadd_ps(w, x0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(w, x1, acc[1]);
                    }
                    x = x.add(TILE);
                    w = w.add(R);
                }
                let left = (count - p).min(TILE) as i32;
                // Lane i of the two vectors is pixel p + i (and p + 8 + i): kept below `left`.
                let masks = [
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes),
                    _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), lanes),
                ];
                for (r, acc) in acc.iter().enumerate() {
                    let mut v = [_mm256_add_ps(acc[0], add[r]), _mm256_add_ps(acc[1], add[r])];
                    if let Some((lo, hi)) = bounds {
                        // `max` gives its second operand for NaN: NaN becomes `lo`, as in
                        // `activate`.
                        v = v.map(|v| _mm256_min_ps(_mm256_max_ps(v, lo), hi));
                    }
                    let y = out.add(r * stride + p);
                    if left == TILE as i32 {
                        _mm256_storeu_ps(y, v[0]);
                        _mm256_storeu_ps(y.add(8), v[1]);
                    } else {
                        _mm256_maskstore_ps(y, masks[0], v[0]);
                        _mm256_maskstore_ps(y.add(8), masks[1], v[1]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::TILE;

    /// [`super::avx2::tiles`] in 512-bit vectors: a tile is one vector, and tiles go in
    /// pairs (12 accumulators for 6 rows, 12 FMAs per 8 loads), an odd last one alone; the
    /// last tile's store is masked to the pixels left.
    ///
    /// # Safety
    /// As for [`super::avx2::tiles`], with AVX-512F for AVX2 and FMA.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tiles<const R: usize>(args: super::Tiles<'_>) {
        let (weights, panels, ..) = args;
        let tiles = panels.len() / (weights.len() / R * TILE).max(1);
        // SAFETY: the caller's contract; each call covers tiles below `tiles`.
        unsafe {
            for first in (0..tiles & !1).step_by(2) {
                span::<R, 2>(&args, first);
            }
            if tiles % 2 == 1 {
                span::<R, 1>(&args, tiles - 1);
            }
        }
    }

    /// Tiles `first..first + T`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn span<const R: usize, const T: usize>(
        &(weights, panels, out, stride, count, bias, clamp): &super::Tiles<'_>,
        first: usize,
    ) {
        let channels = weights.len() / R;
        let add: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(bias.map_or(0.0, |b| b[r])));
        let bounds = clamp.map(|c| (_mm512_set1_ps(c.lo), _mm512_set1_ps(c.hi)));
        // SAFETY: the caller's bounds cover every access; a masked lane is not accessed.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            let mut x: [*const f32; T] =
                std::array::from_fn(|t| panels.as_ptr().add((first + t) * channels * TILE));
            let mut w = weights.as_ptr();
            for _ in 0..channels {
                let xs: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(x[t]));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*w.add(r));
                    for (acc, &x) in acc.iter_mut().zip(&xs) {
                        *acc = _mm512_fmadd_ps(w, x, *acc);
                    }
                }
                x = x.map(|x| x.add(TILE));
                w = w.add(R);
            }
            for (r, acc) in acc.iter().enumerate() {
                for (t, &acc) in acc.iter().enumerate() {
                    let p = (first + t) * TILE;
                    let mut v = _mm512_add_ps(acc, add[r]);
                    if let Some((lo, hi)) = bounds {
                        // `max` gives its second operand for NaN: NaN becomes `lo`, as in
                        // `activate`.
                        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                    }
                    let y = out.add(r * stride + p);
                    match count - p {
                        left if left >= TILE => _mm512_storeu_ps(y, v),
                        left => _mm512_mask_storeu_ps(y, ((1u32 << left) - 1) as __mmask16, v),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `act(bias + w·x)` per image, in f64.
    fn reference(
        w: &[f32],
        xs: &[f32],
        [rows, channels, pixels]: [usize; 3],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) -> Vec<f32> {
        let mut out = Vec::new();
        for img in xs.chunks_exact(channels * pixels) {
            for r in 0..rows {
                for p in 0..pixels {
                    let sum: f64 = (0..channels)
                        .map(|c| f64::from(w[r * channels + c]) * f64::from(img[c * pixels + p]))
                        .sum::<f64>()
                        + bias.map_or(0.0, |b| f64::from(b[r]));
                    out.push(crate::kernels::activate(sum as f32, clamp));
                }
            }
        }
        out
    }

    #[test]
    fn pixelwise_convs_equal_a_loop_with_bias_clamp_and_ragged_tiles() {
        // Rows not a multiple of 6, pixels not a multiple of 16, and (for 40 channels) two
        // chunks of pixels, the second partial; batches of one (tasks over the pool) and 3.
        for [rows, channels, pixels] in [[13, 5, 37], [6, 1, 16], [7, 40, 1703], [96, 16, 200]] {
            let value = |i: usize, scale: f32| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * scale;
            let w: Vec<f32> = (0..rows * channels).map(|i| value(i, 1.0)).collect();
            let bias: Vec<f32> = (0..rows).map(|i| value(i + 3, 0.5)).collect();
            let Some(plan) = Pixelwise::of_rows(&w, rows, channels, pixels) else {
                assert!(!direct::available(), "the CPU has AVX2 and FMA, but no plan");
                return;
            };
            // Both the AVX2 and the 512-bit kernels where the CPU has AVX-512F.
            let plans = [false, true]
                .into_iter()
                .filter(|&wide| !wide || direct::has_avx512())
                .map(|wide| Pixelwise { wide, ..plan.clone() });
            for (plan, images) in plans.flat_map(|p| [(p.clone(), 1), (p, 3)]) {
                let mut xs: Vec<f32> =
                    (0..images * channels * pixels).map(|i| value(i + 11, 2.0)).collect();
                xs[pixels - 1] = f32::NAN;
                for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: 0.0, hi: 6.0 })] {
                    for bias in [None, Some(bias.as_slice())] {
                        let got = plan.run(&xs, bias, clamp).unwrap();
                        let want = reference(&w, &xs, [rows, channels, pixels], bias, clamp);
                        assert_eq!(got.len(), want.len());
                        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                            let close = (g - e).abs() <= 1e-4 * (1.0 + e.abs());
                            let wide = plan.wide;
                            let what = format!("{i} (wide {wide})");
                            assert!(close || (g.is_nan() && e.is_nan()), "{what}: {g} against {e}");
                        }
                    }
                }
            }
            let short = plan.run(&vec![0.0; channels * pixels - 1], None, None);
            assert!(short.is_err(), "a batch that is not whole images is an error");
            assert!(plan.run(&vec![0.0; channels * pixels], Some(&[0.0]), None).is_err());
        }
    }
}
