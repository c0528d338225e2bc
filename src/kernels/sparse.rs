//! The input gradient of a stride-1 convolution in f32 when the output gradient is mostly
//! zeros, with AVX2 and FMA: only the non-zero gradients are spread over the input.
//!
//! Why: below a 2×2 max pool only one output in four gets a gradient (and the ReLU gate
//! clears more), so im2col + gemm multiplies zeros at least three times in four. Here each
//! output pixel has a bit mask of its non-zero channels, and for each kernel row those
//! channels' kernel values (32, 16 or 8 input channels by every column of the window) are summed in
//! registers, then added to the input gradient, held channels-last and padded so the
//! channels of one input pixel are consecutive and every window fits. Below the sample
//! model's pool this beats im2col + gemm (the README's "Measured" has the figures).

use std::ops::Range;

use rayon::prelude::*;

use super::{Window, direct, vectorised};
use crate::error::{Error, Result};

/// Most AVX vectors of input channels per register block (32 channels).
const MAX_VECTORS: usize = 4;
/// Widest window row: with [`MAX_VECTORS`], 12 accumulators.
const MAX_COLUMNS: usize = 3;
/// Most non-zero share of the gradient this path takes, for a conv whose dense input
/// gradient is at most [`SMALL_PRODUCT`] multiply-adds per image, and above it. This path
/// runs at 8–11 GFLOP-pairs/s on the 2-core AVX-512 box whatever the shape (each non-zero
/// gradient reads its filter's window at a stride, so the reads, not the FMAs, bound it),
/// while the dense path's rate grows with the product: 62 GMAC/s on the sample model's
/// 32 → 64 conv at 26×26 (10.6M MACs), 140–240 on vgg11_bn's (0.9–1.9G MACs). The break-even
/// share is the ratio of the rates: 0.16 on the sample model (density 0.09 there: 0.13 ms
/// against 0.19), 0.04–0.07 on vgg11_bn, where the old single limit of 0.3 took this path
/// at densities of 0.14–0.16 and ran 2.8–3.3× slower than the dense one (its saliency
/// 164–174 ms against 122–126).
const MAX_DENSITY: [f64; 2] = [0.15, 0.03];
/// Dense input-gradient multiply-adds per image up to which the first of [`MAX_DENSITY`]
/// holds.
const SMALL_PRODUCT: usize = 1 << 25;

/// The conv this path takes, with its kernel packed `[o][kh][kw][c]`.
pub(super) struct SparseGradient {
    /// Input `[c, h, w]` of one image.
    image: [usize; 3],
    /// Output `[o, oh, ow]` of one image.
    out: [usize; 3],
    window: [usize; 2],
    /// Padding `[top, left]`: the input gradient is cropped from the padded one.
    pads: [usize; 2],
    packed: Vec<f32>,
}

/// Whether at most `max_density` of `grad` is non-zero. Counted in AVX2 a block at a time
/// and given up on once the count passes the limit: a dense gradient (most of them) is
/// decided after a few blocks, and the whole count had been 3% of MobileNetV2's saliency.
fn mostly_zeros(grad: &[f32], max_density: f64) -> bool {
    let limit = (max_density * grad.len() as f64) as usize;
    let mut nonzero = 0;
    grad.chunks(1 << 12).all(|block| {
        // u32 lanes: eight counts to a vector (a usize count ran four to an SSE register).
        let count = vectorised(|| block.iter().map(|&g| u32::from(g != 0.0)).sum::<u32>());
        nonzero += count as usize;
        nonzero <= limit
    })
}

impl SparseGradient {
    /// The plan for the input gradient `grad` of a conv of `[n, c, h, w]` by `ks`
    /// (`[o, c, kh, kw]`), or None unless the window, the channels, the CPU and the share
    /// of zeros in `grad` suit it.
    pub(super) fn new(
        grad: &[f32],
        ks: &[f32],
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
    ) -> Option<SparseGradient> {
        let [kh, kw] = win.kernel;
        let [top, left, bottom, right] = win.pads;
        let fits = direct::available()
            && groups == 1
            && win.stride == [1, 1]
            && win.dilation == [1, 1]
            && c > 0
            && c.is_multiple_of(8)
            && (1..=MAX_COLUMNS).contains(&kw)
            && kh > 0
            && h + top + bottom >= kh
            && w + left + right >= kw
            && ks.len() == o * c * kh * kw;
        if !fits {
            return None;
        }
        let (oh, ow) = (h + top + bottom + 1 - kh, w + left + right + 1 - kw);
        let dense_macs = o * c * kh * kw * oh * ow;
        if !mostly_zeros(grad, MAX_DENSITY[usize::from(dense_macs > SMALL_PRODUCT)]) {
            return None;
        }
        let mut packed = Vec::with_capacity(ks.len());
        for filter in ks.chunks_exact(c * kh * kw) {
            for tap in 0..kh * kw {
                packed.extend((0..c).map(|ch| filter[ch * kh * kw + tap]));
            }
        }
        Some(SparseGradient {
            image: [c, h, w],
            out: [o, oh, ow],
            window: [kh, kw],
            pads: [top, left],
            packed,
        })
    }

    pub(super) fn image_len(&self) -> usize {
        self.image.iter().product()
    }

    pub(super) fn out_len(&self) -> usize {
        self.out.iter().product()
    }

    /// Scratch values one image needs: the padded input gradient, channels-last.
    pub(super) fn scratch_len(&self) -> usize {
        let [c, ..] = self.image;
        let [_, oh, ow] = self.out;
        let [kh, kw] = self.window;
        (oh + kh - 1) * (ow + kw - 1) * c
    }

    /// The input gradient `dx` (`[c, h, w]`) of one image from its output gradient `grad`
    /// (`[o, oh, ow]`), using `scratch` of [`SparseGradient::scratch_len`] values. With
    /// `threads > 1` the output rows split into bands, one per thread, each spread into a
    /// padded gradient of its own (bands' windows overlap), which are summed as they are
    /// cropped: on one thread a lone image left the other core idle, and the gemm path,
    /// on both, was as fast.
    pub(super) fn image(
        &self,
        grad: &[f32],
        dx: &mut [f32],
        scratch: &mut [f32],
        threads: usize,
    ) -> Result<()> {
        let [o, oh, ow] = self.out;
        if grad.len() != self.out_len() || dx.len() != self.image_len() {
            return Err(Error::Invalid("sparse conv gradient of the wrong size".into()));
        }
        let padded = scratch
            .get_mut(..self.scratch_len())
            .ok_or_else(|| Error::Invalid("sparse conv gradient scratch too short".into()))?;
        let plane = oh * ow;
        // Per output pixel, a bit per channel whose gradient is not zero: built plane by
        // plane in passes that vectorise, read bit by bit by the kernel (gathering the
        // channels with a test per channel cost as much as the products).
        let words = o.div_ceil(64);
        let mut masks = vec![0u64; plane * words];
        for (filter, g_plane) in grad.chunks_exact(plane).enumerate() {
            let bit = 1u64 << (filter % 64);
            let set = |mask: &mut u64, &g: &f32| *mask |= if g != 0.0 { bit } else { 0 };
            if words == 1 {
                masks.iter_mut().zip(g_plane).for_each(|(mask, g)| set(mask, g));
            } else {
                let masks = masks[filter / 64..].iter_mut().step_by(words);
                masks.zip(g_plane).for_each(|(mask, g)| set(mask, g));
            }
        }
        let bands = threads.clamp(1, oh.max(1));
        if bands == 1 {
            padded.fill(0.0);
            self.spread_rows(0..oh, &masks, grad, padded)?;
            self.crop(&[padded], dx);
            return Ok(());
        }
        let rows = oh.div_ceil(bands);
        let own = (0..bands)
            .into_par_iter()
            .map(|band| {
                // Fresh zeros: no fill needed before spreading.
                let mut padded = vec![0.0; self.scratch_len()];
                let first = (band * rows).min(oh);
                self.spread_rows(first..((band + 1) * rows).min(oh), &masks, grad, &mut padded)?;
                Ok(padded)
            })
            .collect::<Result<Vec<_>>>()?;
        let sources: Vec<&[f32]> = own.iter().map(Vec::as_slice).collect();
        self.crop(&sources, dx);
        Ok(())
    }

    /// Adds the non-zero gradients of output rows `rows` into `padded`.
    fn spread_rows(
        &self,
        rows: Range<usize>,
        masks: &[u64],
        grad: &[f32],
        padded: &mut [f32],
    ) -> Result<()> {
        let [c, ..] = self.image;
        let [o, oh, ow] = self.out;
        let [kh, kw] = self.window;
        let wp = ow + kw - 1;
        let words = o.div_ceil(64);
        let pixels = rows.start * ow..rows.end * ow;
        let band = &masks[pixels.start * words..pixels.end * words];
        for (pixel, nonzero) in pixels.zip(band.chunks_exact(words)) {
            if nonzero.iter().all(|&m| m == 0) {
                continue;
            }
            let at = (pixel / ow * wp + pixel % ow) * c;
            spread(&self.packed, [kh, kw, c, wp], nonzero, &grad[pixel..], oh * ow, padded, at)?;
        }
        Ok(())
    }

    /// Channels-last and padded → planar and cropped: `dx` gets the sum of `sources`.
    fn crop(&self, sources: &[&[f32]], dx: &mut [f32]) {
        let [c, h, w] = self.image;
        let [_, _, ow] = self.out;
        let wp = ow + self.window[1] - 1;
        let [top, left] = self.pads;
        for (ch, plane) in dx.chunks_exact_mut(h * w).enumerate() {
            for (yy, row) in plane.chunks_exact_mut(w).enumerate() {
                let start = ((yy + top) * wp + left) * c + ch;
                for (x, d) in row.iter_mut().enumerate() {
                    *d = sources.iter().map(|s| s[start + x * c]).sum();
                }
            }
        }
    }
}

/// `padded[at + (ki·wp + kj)·c + j] += Σ_f grad[f·plane] · packed[f][ki][kj][j]` over the
/// channels `f` whose bit is set in `nonzero`: one output pixel's non-zero gradients spread
/// over its window of the padded input gradient (`wp` wide), for every row `ki` and column
/// `kj` of the window and input channel `j`.
fn spread(
    packed: &[f32],
    [kh, kw, c, wp]: [usize; 4],
    nonzero: &[u64],
    grad: &[f32],
    plane: usize,
    padded: &mut [f32],
    at: usize,
) -> Result<()> {
    let filter_len = kh * kw * c;
    let filters = packed.len() / filter_len.max(1);
    // One past the highest channel with its bit set.
    let end = nonzero
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| **m != 0)
        .map_or(0, |(word, &m)| word * 64 + 64 - m.leading_zeros() as usize);
    // Channels in blocks of 32, 16 or 8: the widest that divides them.
    let vectors = [MAX_VECTORS, 2, 1].into_iter().find(|v| c.is_multiple_of(8 * v)).unwrap_or(0);
    let fits = direct::available()
        && (1..=MAX_COLUMNS).contains(&kw)
        && vectors > 0
        && end <= filters
        && (end == 0 || (end - 1) * plane < grad.len())
        && at + ((kh - 1) * wp + kw - 1) * c + c <= padded.len();
    if !fits {
        return Err(Error::Invalid("sparse conv gradient out of bounds".into()));
    }
    for ki in 0..kh {
        for block in (0..c).step_by(8 * vectors) {
            let offset = ki * kw * c + block;
            let padded = &mut padded[at + ki * wp * c + block..];
            let w = [filter_len, offset, c];
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: `fits` checked the CPU features; that every channel with its bit set
            // has a filter in `packed` (reads end at its `offset + (kw−1)·c + 8·vectors ≤
            // filter_len`) and a gradient `grad[f·plane]`; and that `padded` holds the
            // window's last row (writes end at `(kw−1)·c + 8·vectors`).
            unsafe {
                use avx2::spread as run;
                match (kw, vectors) {
                    (1, 1) => run::<1, 1>(packed, w, nonzero, grad, plane, padded),
                    (1, 2) => run::<1, 2>(packed, w, nonzero, grad, plane, padded),
                    (1, _) => run::<1, MAX_VECTORS>(packed, w, nonzero, grad, plane, padded),
                    (2, 1) => run::<2, 1>(packed, w, nonzero, grad, plane, padded),
                    (2, 2) => run::<2, 2>(packed, w, nonzero, grad, plane, padded),
                    (2, _) => run::<2, MAX_VECTORS>(packed, w, nonzero, grad, plane, padded),
                    (_, 1) => run::<MAX_COLUMNS, 1>(packed, w, nonzero, grad, plane, padded),
                    (_, 2) => run::<MAX_COLUMNS, 2>(packed, w, nonzero, grad, plane, padded),
                    _ => run::<MAX_COLUMNS, MAX_VECTORS>(packed, w, nonzero, grad, plane, padded),
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::spread`]'s products for a window `KW` wide and one block of `8·V` channels:
    /// weights from `packed` filter `f` at `f·filter_len + offset`, columns `c` apart, into
    /// `padded` from its start.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; every channel `f` with its bit set in `nonzero` has
    /// `grad[f·plane]` and `offset + (KW−1)·c + 8·V` values of `packed` from its filter's
    /// start; `padded` holds `(KW−1)·c + 8·V` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn spread<const KW: usize, const V: usize>(
        packed: &[f32],
        [filter_len, offset, c]: [usize; 3],
        nonzero: &[u64],
        grad: &[f32],
        plane: usize,
        padded: &mut [f32],
    ) {
        // SAFETY: the caller's bounds cover every access.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; KW];
            for (word, &bits) in nonzero.iter().enumerate() {
                let mut bits = bits;
                while bits != 0 {
                    let filter = word * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let g = _mm256_broadcast_ss(&*grad.as_ptr().add(filter * plane));
                    let w = packed.as_ptr().add(filter * filter_len + offset);
                    for (kj, acc) in acc.iter_mut().enumerate() {
                        for (v, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(g, _mm256_loadu_ps(w.add(kj * c + v * 8)), *acc);
                        }
                    }
                }
            }
            for (kj, acc) in acc.iter().enumerate() {
                for (v, acc) in acc.iter().enumerate() {
                    let p = padded.as_mut_ptr().add(kj * c + v * 8);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), *acc));
                }
            }
        }
    }
}
