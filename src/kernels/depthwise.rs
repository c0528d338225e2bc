//! Depthwise and small grouped convolutions in f32, forward and input gradient, computed
//! directly one group (of one image) at a time, for any window.
//!
//! Why not im2col + gemm: a depthwise conv's group is one channel, so gemm multiplies one row
//! by nine per group: all packing and call overhead, no arithmetic (1–3 GMAC/s against 40–79
//! for ordinary 3×3 convs). Here a group's input channels are copied once into padded planes
//! split by stride phase ([`Phased`]), where each tap of each output pixel sits at a fixed
//! offset, and every output channel is a sum over its taps of a weight times a contiguous run
//! of inputs, row by row straight into the output plane ([`correlate_rows`]): up to [`CHUNK`]
//! pixels at a time in registers, several rows at once where rows are short, with the bias
//! and the clamp applied as they are stored.
//!
//! At stride 1 the input gradient is the forward of the output gradient by the flipped
//! kernel ([`Window::transposed`]). At other strides it is the same sum the other way round:
//! each phase of the padded input's gradient gathers, from the output gradient laid out wide
//! with a frame of zeros before it, the taps that read that phase. The wide layout's dropped
//! columns hold zeros there, so the wrap-around adds nothing. Groups run in parallel over
//! the rayon pool (images × groups jobs), so a single image uses every thread.
//!
//! The sums run in AVX2 and FMA where the CPU has them (detected at run time, as for
//! `direct`), in plain Rust otherwise.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::phased::Phased;
use super::relu::{Clamp, activate};
use super::{Scratch, Window, direct, flipped};
use crate::error::{Error, Result};

/// Output pixels summed at once: eight AVX vectors of accumulators.
const CHUNK: usize = 64;
/// Most input channels per group this path takes (ResNeXt's groups of 4 fit). A guess, not a
/// measured crossover: larger groups stay with im2col + gemm, whose products grow with them.
const MAX_CHANNELS: usize = 16;
/// Most output channels per group (each reads the group's input once more); a guess too.
const MAX_FILTERS: usize = 16;

/// A grouped conv this path takes, for a batch `[n, c, h, w]` and a kernel
/// `[o, c/groups, kh, kw]`.
pub(super) struct GroupedConv {
    /// `[c, h, w]` of one image.
    image: [usize; 3],
    /// `[o, oh, ow]` of one image.
    out: [usize; 3],
    groups: usize,
    win: Window,
    phased: Phased,
    /// Offsets of a group's taps, in the kernel's order `[c/groups][kh][kw]`, within its
    /// split input planes, from a wide output pixel.
    offsets: Vec<usize>,
    /// For the input gradient, per input channel of a group and phase: the taps that read
    /// that phase, as (offset into the framed output gradient, index into the group's
    /// kernel).
    gathers: Vec<Vec<(usize, usize)>>,
    /// Zeros before each output gradient plane (see [`GroupedConv::backward_input`]).
    frame: usize,
}

impl GroupedConv {
    /// The plan, or None unless the conv has groups of at most [`MAX_CHANNELS`] inputs and
    /// [`MAX_FILTERS`] outputs and its window fits the input.
    pub(super) fn new(
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        kernel_len: usize,
    ) -> Option<GroupedConv> {
        let [kh, kw] = win.kernel;
        let [top, left, bottom, right] = win.pads;
        let span = |a: usize| (win.kernel[a] - 1) * win.dilation[a] + 1;
        let fits = groups > 1
            && c.is_multiple_of(groups)
            && o.is_multiple_of(groups)
            && c / groups <= MAX_CHANNELS
            && o / groups <= MAX_FILTERS
            && h * w * kh * kw > 0
            && win.stride.iter().chain(&win.dilation).all(|&s| s > 0)
            && h + top + bottom >= span(0)
            && w + left + right >= span(1)
            && kernel_len == o * (c / groups) * kh * kw;
        if !fits {
            return None;
        }
        let [oh, ow] = win.out_size(h, w);
        let phased = Phased::new([h, w], win);
        let (channels, filters) = (c / groups, o / groups);
        let taps = channels * kh * kw;
        let offsets = (0..channels)
            .flat_map(|ch| {
                (0..kh).flat_map(move |ki| {
                    (0..kw).map(move |kj| ch * phased.len() + phased.offset(ki, kj))
                })
            })
            .collect();
        let frame = (0..kh).flat_map(|ki| (0..kw).map(move |kj| phased.tap(ki, kj).1)).max()?;
        let framed = frame + phased.phase_len();
        let mut gathers = vec![Vec::new(); channels * phased.phases()];
        for f in 0..filters {
            for ch in 0..channels {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let (phase, within) = phased.tap(ki, kj);
                        let weight = f * taps + (ch * kh + ki) * kw + kj;
                        let offset = f * framed + frame - within;
                        gathers[ch * phased.phases() + phase].push((offset, weight));
                    }
                }
            }
        }
        Some(GroupedConv {
            image: [c, h, w],
            out: [o, oh, ow],
            groups,
            win: *win,
            phased,
            offsets,
            gathers,
            frame,
        })
    }

    /// Input and output channels of one group.
    fn group(&self) -> (usize, usize) {
        (self.image[0] / self.groups, self.out[0] / self.groups)
    }

    /// Values of one image's group of inputs and of outputs.
    fn group_lens(&self) -> (usize, usize) {
        let (channels, filters) = self.group();
        let [_, h, w] = self.image;
        let [_, oh, ow] = self.out;
        (channels * h * w, filters * oh * ow)
    }

    /// Runs `job([part, group], input part, output part, scratch)` for every image's every
    /// group over the rayon pool: group `g` of image `i` is part `i·groups + g` of each.
    /// The scratch is zeroed when a thread takes it, not between jobs.
    fn for_each_group<O: Send>(
        &self,
        input: &[f32],
        in_len: usize,
        output: &mut [O],
        out_len: usize,
        scratch: usize,
        job: impl Fn([usize; 2], &[f32], &mut [O], &mut [f32]) -> Result<()> + Sync,
    ) -> Result<()> {
        output
            .par_chunks_exact_mut(out_len)
            .zip(input.par_chunks_exact(in_len))
            .enumerate()
            .try_for_each_init(
                || {
                    let mut buffer = Scratch::take(scratch);
                    buffer.values().fill(0.0);
                    buffer
                },
                |buffer, (part, (out, inp))| {
                    // Most calls are one image: no division.
                    let group = if part < self.groups { part } else { part % self.groups };
                    job([part, group], inp, out, buffer.values())
                },
            )
    }

    /// The conv of a batch `xs` by the kernel `ks`, adding `bias` per output channel and
    /// clamping when `clamp` is set.
    pub(super) fn forward(
        &self,
        xs: &[f32],
        ks: &[f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) -> Result<Vec<f32>> {
        let (in_len, out_len) = self.group_lens();
        let (channels, filters) = self.group();
        let parts = xs.len() / in_len;
        if xs.len() != parts * in_len
            || ks.len() != self.out[0] * self.offsets.len()
            || bias.is_some_and(|b| b.len() != self.out[0])
        {
            return Err(Error::Invalid(
                "grouped conv given a batch or bias of the wrong size".into(),
            ));
        }
        let [_, h, w] = self.image;
        let [_, oh, ow] = self.out;
        let (width, taps) = (self.phased.width(), self.offsets.len());
        let planes = channels * self.phased.len();
        // The last row's last vector reads up to 7 values past its row (past the planes).
        let reach =
            (oh - 1) * width + ow.next_multiple_of(8) + self.offsets.iter().max().unwrap_or(&0);
        // Not zeroed first: `correlate_rows` writes every output value.
        let len = parts * out_len;
        let mut out = Vec::with_capacity(len);
        self.for_each_group(
            xs,
            in_len,
            &mut out.spare_capacity_mut()[..len],
            out_len,
            planes.max(reach),
            |[part, g], x, y, scratch| {
                // Unpadded planes at stride 1 (occlusion's crops) are their own split
                // planes: read in place where the last row's overreach stays in the batch.
                let rest = &xs[part * in_len..];
                let input = if self.phased.is_plain() && rest.len() >= reach {
                    rest
                } else {
                    // Indexed rather than chunked: a depthwise conv on 7×7 maps has little
                    // work per group, and each `chunks_exact` divides.
                    let plane = self.phased.len();
                    for ch in 0..channels {
                        // `scratch` came zeroed, and each plane's padding stays so.
                        let src = &x[ch * h * w..][..h * w];
                        self.phased.pack_inside(src, &mut scratch[ch * plane..][..plane]);
                    }
                    scratch
                };
                for f in 0..filters {
                    let filter = g * filters + f;
                    let bias = bias.map_or(0.0, |b| b[filter]);
                    let kernel = &ks[filter * taps..(filter + 1) * taps];
                    let y = &mut y[f * oh * ow..][..oh * ow];
                    correlate_rows(input, &self.offsets, kernel, [oh, ow, width], bias, clamp, y)?;
                }
                Ok(())
            },
        )?;
        #[allow(unsafe_code)]
        // SAFETY: the groups' parts cover the `len` values, and each part's planes were
        // written whole by `correlate_rows`, as the job returned no error.
        unsafe {
            out.set_len(len)
        };
        Ok(out)
    }

    /// The input gradient of a batch from its output gradient `gs` and the kernel `ks`.
    ///
    /// At stride 1 that is the forward conv of `gs` by the flipped kernel
    /// ([`Window::transposed`]), written row by row straight into the gradient: 1.5–2×
    /// faster than the gathers, which sum into padded phase planes and then copy them out.
    pub(super) fn backward_input(&self, gs: &[f32], ks: &[f32]) -> Result<Vec<f32>> {
        let (in_len, out_len) = self.group_lens();
        let filters = self.group().1;
        let parts = gs.len() / out_len;
        if gs.len() != parts * out_len || ks.len() != self.out[0] * self.offsets.len() {
            return Err(Error::Invalid("grouped conv gradient of the wrong size".into()));
        }
        let [c, h, w] = self.image;
        let [o, oh, ow] = self.out;
        let transposed = self
            .win
            .transposed()
            .and_then(|full| GroupedConv::new([parts, o, oh, ow], c, &full, self.groups, ks.len()));
        if let Some(plan) = transposed {
            let [kh, kw] = self.win.kernel;
            return plan.forward(gs, &flipped(ks, self.groups, c, kh * kw), None, None);
        }
        let width = self.phased.width();
        let phase_len = self.phased.phase_len();
        let taps = self.offsets.len();
        // Each filter's gradient, wide, after `frame` zeros: a phase's gather reads it from
        // `frame − within` on, up to a chunk past the next one's start (or the end's slack).
        let framed = self.frame + phase_len;
        let grads_len = filters * framed + CHUNK;
        let mut dx = vec![0.0; parts * in_len];
        let scratch = grads_len + self.phased.len();
        self.for_each_group(gs, out_len, &mut dx, in_len, scratch, |[_, g], grad, dx, scratch| {
            let (grads, split) = scratch.split_at_mut(grads_len);
            grads.fill(0.0);
            for (framed, src) in grads.chunks_exact_mut(framed).zip(grad.chunks_exact(oh * ow)) {
                for (dst, src) in
                    framed[self.frame..].chunks_exact_mut(width).zip(src.chunks_exact(ow))
                {
                    dst[..ow].copy_from_slice(src);
                }
            }
            let kernel = &ks[g * filters * taps..(g + 1) * filters * taps];
            let mut offsets = Vec::new();
            let mut weights = Vec::new();
            for (ch, dx) in dx.chunks_exact_mut(h * w).enumerate() {
                let gathers = &self.gathers[ch * self.phased.phases()..][..self.phased.phases()];
                for (gather, phase) in gathers.iter().zip(split.chunks_exact_mut(phase_len)) {
                    offsets.clear();
                    weights.clear();
                    offsets.extend(gather.iter().map(|&(offset, _)| offset));
                    weights.extend(gather.iter().map(|&(_, weight)| kernel[weight]));
                    correlate(grads, &offsets, &weights, phase)?;
                }
                self.phased.unpack(split, dx);
            }
            Ok(())
        })?;
        Ok(dx)
    }
}

/// `out[p] = Σ_t weights[t] · src[p + offsets[t]]` for every `p` in `out`; `src` must reach
/// a chunk past: `out.len()` rounded up to [`CHUNK`] plus the largest offset.
pub(super) fn correlate(
    src: &[f32],
    offsets: &[usize],
    weights: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let reach = out.len().next_multiple_of(CHUNK) + offsets.iter().max().unwrap_or(&0);
    if offsets.len() != weights.len() || src.len() < reach {
        return Err(Error::Invalid("direct grouped conv out of bounds".into()));
    }
    #[cfg(target_arch = "x86_64")]
    if direct::available() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA, and `reach` bounds every load (see
        // `avx2::correlate`).
        unsafe {
            avx2::correlate(src, offsets, weights, out)
        };
        return Ok(());
    }
    correlate_plain(src, offsets, weights, out);
    Ok(())
}

/// [`correlate`] after its checks, for any CPU.
fn correlate_plain(src: &[f32], offsets: &[usize], weights: &[f32], out: &mut [f32]) {
    for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
        let mut acc = [0.0f32; CHUNK];
        for (&offset, &weight) in offsets.iter().zip(weights) {
            let start = i * CHUNK + offset;
            let Some(x) = src.get(start..start + CHUNK) else { continue };
            for (a, &x) in acc.iter_mut().zip(x) {
                *a += x * weight;
            }
        }
        chunk.copy_from_slice(&acc[..chunk.len()]);
    }
}

/// A group's output channel written straight into its plane `out` (`oh` rows of `ow`, read
/// from rows of `width`): `out[oy·ow + ox]` is
/// `bias + Σ_t weights[t] · src[oy·width + ox + offsets[t]]`, clamped when `clamp` is set (as
/// [`activate`] does: NaN to the low bound). Row by row, so no wide rows are written and
/// cropped. `src` must reach the last row's last vector: `(oh − 1)·width` plus `ow` rounded
/// up to 8, plus the largest offset.
fn correlate_rows(
    src: &[f32],
    offsets: &[usize],
    weights: &[f32],
    [oh, ow, width]: [usize; 3],
    bias: f32,
    clamp: Option<Clamp>,
    out: &mut [MaybeUninit<f32>],
) -> Result<()> {
    let reach =
        oh.saturating_sub(1) * width + ow.next_multiple_of(8) + offsets.iter().max().unwrap_or(&0);
    if ow == 0
        || ow > width
        || oh * ow != out.len()
        || offsets.len() != weights.len()
        || src.len() < reach
    {
        return Err(Error::Invalid("direct grouped conv out of bounds".into()));
    }
    #[cfg(target_arch = "x86_64")]
    if ow > 8 && direct::has_avx512() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX-512F, and `reach` bounds every load (see
        // `avx512::correlate_rows`).
        unsafe {
            avx512::correlate_rows(src, offsets, weights, [oh, ow, width], bias, clamp, out)
        };
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if direct::available() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA, and `reach` bounds every load (see
        // `avx2::correlate_rows`).
        unsafe {
            avx2::correlate_rows(src, offsets, weights, [oh, ow, width], bias, clamp, out)
        };
        return Ok(());
    }
    correlate_rows_plain(src, offsets, weights, [ow, width], bias, clamp, out);
    Ok(())
}

/// [`correlate_rows`] after its checks, for any CPU.
fn correlate_rows_plain(
    src: &[f32],
    offsets: &[usize],
    weights: &[f32],
    [ow, width]: [usize; 2],
    bias: f32,
    clamp: Option<Clamp>,
    out: &mut [MaybeUninit<f32>],
) {
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        for (ox, y) in row.iter_mut().enumerate() {
            let start = oy * width + ox;
            let sum =
                offsets.iter().zip(weights).fold(0.0, |acc, (&o, &w)| acc + src[start + o] * w);
            y.write(activate(sum + bias, clamp));
        }
    }
}

/// What a vector kernel's chunk applies to each sum (of vectors `T`) before storing it.
#[cfg(target_arch = "x86_64")]
struct Ends<T> {
    bias: T,
    /// `(lo, hi)`: `max` with `lo` first, which turns NaN into `lo`.
    clamp: Option<(T, T)>,
}

/// Calls `$kernel::<R, V>$args` for a block of `R` rows of `V` vectors: the pairs that fill
/// a chunk of eight vectors (`R·V ≤ 8`), as the AVX2 and 512-bit kernels block their rows,
/// each compiled with its accumulators in registers.
#[cfg(target_arch = "x86_64")]
macro_rules! for_block {
    ($rows:expr, $vectors:expr, $kernel:ident $args:tt) => {
        for_block!(@ $rows, $vectors, $kernel $args, (1, 1), (2, 1), (3, 1), (4, 1), (5, 1),
            (6, 1), (7, 1), (8, 1), (1, 2), (2, 2), (3, 2), (4, 2), (1, 3), (2, 3), (1, 4),
            (2, 4), (1, 5), (1, 6), (1, 7), (1, 8))
    };
    (@ $rows:expr, $vectors:expr, $kernel:ident $args:tt, $(($r:literal, $v:literal)),*) => {
        match ($rows, $vectors) {
            $(($r, $v) => $kernel::<$r, $v> $args,)*
            (rows, vectors) => unreachable!("a block of {rows} rows of {vectors} vectors"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{CHUNK, Clamp, Ends};

    /// AVX vectors per chunk.
    const VECTORS: usize = CHUNK / 8;

    /// [`correlate`](super::correlate) in AVX2 and FMA, a chunk's sums in registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `weights` is as long as `offsets`; `src` holds at least
    /// `out.len()` rounded up to [`CHUNK`] plus `max(offsets)` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn correlate(
        src: &[f32],
        offsets: &[usize],
        weights: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: the caller's bounds cover every load; stores stay inside `out` (a partial
        // last chunk goes through `tail`).
        unsafe {
            for start in (0..out.len()).step_by(CHUNK) {
                let mut acc = [_mm256_setzero_ps(); VECTORS];
                for (&offset, &weight) in offsets.iter().zip(weights) {
                    let x = src.as_ptr().add(start + offset);
                    let w = _mm256_set1_ps(weight);
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(8 * v)), *acc);
                    }
                }
                let len = (out.len() - start).min(CHUNK);
                if len == CHUNK {
                    for (v, acc) in acc.iter().enumerate() {
                        _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * v), *acc);
                    }
                } else {
                    let mut tail = [0.0f32; CHUNK];
                    for (v, acc) in acc.iter().enumerate() {
                        _mm256_storeu_ps(tail.as_mut_ptr().add(8 * v), *acc);
                    }
                    out[start..].copy_from_slice(&tail[..len]);
                }
            }
        }
    }

    /// [`correlate_rows`](super::correlate_rows) in AVX2 and FMA: each row in chunks of up
    /// to [`CHUNK`] pixels, summed in registers and stored in whole vectors (see
    /// [`chunk`]).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `weights` is as long as `offsets`; `out` is whole rows of
    /// `ow ≤ width`; `src` holds `(rows − 1)·width + ow` rounded up to 8, plus
    /// `max(offsets)` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn correlate_rows(
        src: &[f32],
        offsets: &[usize],
        weights: &[f32],
        [rows, ow, width]: [usize; 3],
        bias: f32,
        clamp: Option<Clamp>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let ends = Ends {
            bias: _mm256_set1_ps(bias),
            clamp: clamp.map(|c| (_mm256_set1_ps(c.lo), _mm256_set1_ps(c.hi))),
        };
        let y = out.as_mut_ptr().cast::<f32>();
        // Rows narrower than a chunk go several to a chunk, so the registers hold that many
        // independent sums: one vector's nine FMAs in a row wait on each other. (A table
        // worked out at compile time: `VECTORS / vectors` here would divide per call.)
        const ROWS_PER_CHUNK: [usize; VECTORS] = {
            let mut rows = [1; VECTORS];
            let mut vectors = 1;
            while vectors <= VECTORS {
                rows[vectors - 1] = VECTORS / vectors;
                vectors += 1;
            }
            rows
        };
        let per_block = ROWS_PER_CHUNK.get(ow.div_ceil(8).wrapping_sub(1)).copied().unwrap_or(1);
        // SAFETY: a chunk of `len` pixels from `start` reads `len` rounded up to 8 values
        // from each tap's offset on each of its rows, within the caller's bound, and writes
        // no further than `room` allows.
        unsafe {
            for top in (0..rows).step_by(per_block) {
                let block = per_block.min(rows - top);
                let (x, y) = (src.as_ptr().add(top * width), y.add(top * ow));
                for start in (0..ow).step_by(CHUNK) {
                    let len = (ow - start).min(CHUNK);
                    let at = Rows {
                        x: x.add(start),
                        width,
                        y: y.add(start),
                        ow,
                        len,
                        room: out.len() - top * ow - start,
                    };
                    for_block!(block, len.div_ceil(8), chunk(&at, offsets, weights, &ends))
                }
            }
        }
    }

    /// Where a [`chunk`] reads and writes: its first row's pixels at `x` and `y`, its next
    /// rows `width` and `ow` further on; `len` pixels per row, and `room` values from `y`
    /// to the end of the output.
    struct Rows {
        x: *const f32,
        width: usize,
        y: *mut f32,
        ow: usize,
        len: usize,
        room: usize,
    }

    /// `R` rows of `V` vectors, each row's `len` pixels as [`Rows`] says. A row's last
    /// vector is stored whole where the output has room, its values past the row landing on
    /// later rows, which are written after it: AMD's masked stores are slow (microcoded), so
    /// only a vector at the output's very end takes one.
    ///
    /// # Safety
    /// As for [`correlate_rows`]: `x + r·width + offsets[t]` holds `8·V` values for every
    /// row and tap; `y + r·ow` takes `len` values on every row.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk<const R: usize, const V: usize>(
        at: &Rows,
        offsets: &[usize],
        weights: &[f32],
        ends: &Ends<__m256>,
    ) {
        // SAFETY: the caller's bounds.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for (&offset, &weight) in offsets.iter().zip(weights) {
                let w = _mm256_set1_ps(weight);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = at.x.add(r * at.width + offset);
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.add(8 * v)), *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let y = at.y.add(r * at.ow);
                let len = at.len.next_multiple_of(8).min(at.room - r * at.ow);
                for (v, acc) in acc.iter().enumerate() {
                    let mut value = _mm256_add_ps(*acc, ends.bias);
                    if let Some((lo, hi)) = ends.clamp {
                        value = _mm256_min_ps(_mm256_max_ps(value, lo), hi);
                    }
                    let lanes = len - 8 * v;
                    if lanes >= 8 {
                        _mm256_storeu_ps(y.add(8 * v), value);
                    } else {
                        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), lane);
                        _mm256_maskstore_ps(y.add(8 * v), mask, value);
                    }
                }
            }
        }
    }
}

/// [`correlate_rows`] in 512-bit vectors, for rows of more than 8 pixels (narrower ones
/// would fill half a vector or less, and stay with AVX2).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Clamp, Ends};

    /// Output pixels summed at once: eight vectors of accumulators, as in AVX2.
    const CHUNK: usize = 128;
    /// Vectors per chunk.
    const VECTORS: usize = CHUNK / 16;

    /// [`correlate_rows`](super::correlate_rows) in 512-bit vectors, several short rows to
    /// a chunk (see `avx2::correlate_rows`). A row's last vector is loaded and stored
    /// through a mask of its pixels, so nothing is read or written past a row: AVX-512's
    /// masked loads do not fault on the lanes they leave out, and its masked stores are
    /// cheap, unlike AVX2's on AMD.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `weights` is as long as `offsets`; `out` is whole rows of
    /// `ow ≤ width`; `src` holds `(rows − 1)·width + ow + max(offsets)` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn correlate_rows(
        src: &[f32],
        offsets: &[usize],
        weights: &[f32],
        [rows, ow, width]: [usize; 3],
        bias: f32,
        clamp: Option<Clamp>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let ends = Ends {
            bias: _mm512_set1_ps(bias),
            clamp: clamp.map(|c| (_mm512_set1_ps(c.lo), _mm512_set1_ps(c.hi))),
        };
        let y = out.as_mut_ptr().cast::<f32>();
        let per_block = match ow.div_ceil(16) {
            vectors @ 1..=VECTORS => VECTORS / vectors,
            _ => 1,
        };
        // SAFETY: a chunk of `len` pixels from `start` reads `len` values on each of its
        // rows from each tap's offset, and writes `len` on each: within the caller's bounds.
        unsafe {
            for top in (0..rows).step_by(per_block) {
                let block = per_block.min(rows - top);
                let (x, y) = (src.as_ptr().add(top * width), y.add(top * ow));
                for start in (0..ow).step_by(CHUNK) {
                    let len = (ow - start).min(CHUNK);
                    let at = Rows { x: x.add(start), width, y: y.add(start), ow, len };
                    for_block!(block, len.div_ceil(16), chunk(&at, offsets, weights, &ends))
                }
            }
        }
    }

    /// Where a [`chunk`] reads and writes: its first row's pixels at `x` and `y`, its next
    /// rows `width` and `ow` further on; `len` pixels per row.
    struct Rows {
        x: *const f32,
        width: usize,
        y: *mut f32,
        ow: usize,
        len: usize,
    }

    /// `R` rows of `V` vectors, each row's `len` pixels as [`Rows`] says, the last vector
    /// through a mask.
    ///
    /// # Safety
    /// As for [`correlate_rows`]: `x + r·width + offsets[t]` holds `len` values for every
    /// row and tap, `16·(V − 1) < len ≤ 16·V`; `y + r·ow` takes `len` values on every row.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn chunk<const R: usize, const V: usize>(
        at: &Rows,
        offsets: &[usize],
        weights: &[f32],
        ends: &Ends<__m512>,
    ) {
        let last = V - 1;
        let tail = u16::MAX >> (16 * V - at.len);
        // SAFETY: the caller's bounds; the last vector's loads and stores leave out the
        // lanes past `len`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for (&offset, &weight) in offsets.iter().zip(weights) {
                let w = _mm512_set1_ps(weight);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = at.x.add(r * at.width + offset);
                    for (v, acc) in acc[..last].iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.add(16 * v)), *acc);
                    }
                    let values = _mm512_maskz_loadu_ps(tail, x.add(16 * last));
                    acc[last] = _mm512_fmadd_ps(w, values, acc[last]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let y = at.y.add(r * at.ow);
                for (v, acc) in acc.iter().enumerate() {
                    let mut value = _mm512_add_ps(*acc, ends.bias);
                    if let Some((lo, hi)) = ends.clamp {
                        value = _mm512_min_ps(_mm512_max_ps(value, lo), hi);
                    }
                    if v < last {
                        _mm512_storeu_ps(y.add(16 * v), value);
                    } else {
                        _mm512_mask_storeu_ps(y.add(16 * v), tail, value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::testing::max_diff;
    use crate::kernels::{conv2d, conv2d_backward_input};
    use crate::model::Pads;

    #[test]
    fn grouped_conv_and_its_gradient_match_the_f64_gemm_path() {
        let dev = Device::Cpu;
        // (n, c, o, [h, w], kernel, stride, dilation, pads, groups): depthwise at stride 1, 2
        // and 3, multipliers 2 and 3, groups of 2 channels (groups = c/2), dilation,
        // asymmetric pads, 1×1 windows, odd sizes, maps over several chunks, batches.
        type Case =
            (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], Pads, usize);
        let cases: [Case; 15] = [
            (1, 8, 8, [9, 11], [3, 3], [1, 1], [1, 1], [1; 4], 8),
            (2, 6, 6, [10, 7], [3, 3], [2, 2], [1, 1], [1; 4], 6),
            (1, 5, 10, [13, 9], [5, 5], [2, 1], [1, 1], [2, 1, 0, 2], 5),
            (2, 8, 4, [8, 8], [3, 3], [1, 1], [2, 2], [2; 4], 4),
            (1, 12, 12, [7, 7], [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 6),
            (1, 4, 8, [5, 6], [1, 1], [2, 2], [1, 1], [0; 4], 4),
            (1, 3, 9, [20, 70], [3, 7], [3, 2], [2, 1], [1, 3, 2, 0], 3),
            (3, 16, 16, [4, 4], [3, 3], [1, 1], [1, 1], [1; 4], 16),
            (1, 32, 32, [33, 33], [3, 3], [2, 2], [1, 1], [1; 4], 32),
            (2, 32, 16, [6, 5], [2, 3], [1, 2], [1, 1], [0, 2, 1, 0], 2),
            // Stride 1, whose gradient is a forward conv by the flipped kernel: groups of 2
            // channels and 4 filters, a 3×5 window, uneven pads; then a pad past the
            // window's reach, where the gradient takes the gathers.
            (2, 6, 12, [9, 10], [3, 5], [1, 1], [1, 1], [0, 3, 2, 1], 3),
            (1, 4, 4, [6, 6], [3, 3], [1, 1], [1, 1], [3, 0, 0, 1], 4),
            // Rows longer than a chunk, the second chunk's last vector partial.
            (2, 3, 3, [5, 75], [3, 3], [1, 1], [1, 1], [1; 4], 3),
            // Unpadded at stride 1, read in place but for the batch's last group (whose
            // last row's vectors would read past the batch); groups of 2 channels, dilated.
            (2, 8, 8, [9, 12], [3, 3], [1, 1], [1, 1], [0; 4], 8),
            (3, 6, 12, [7, 20], [3, 3], [1, 1], [2, 1], [0; 4], 3),
        ];
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        for (n, c, o, [h, w], kernel, stride, dilation, pads, groups) in cases {
            let win = Window { kernel, stride, dilation, pads };
            let dims = [n, c, h, w];
            let label = format!("{dims:?} {win:?} groups {groups}");
            let k_dims = (o, c / groups, kernel[0], kernel[1]);
            let plan = GroupedConv::new(
                dims,
                o,
                &win,
                groups,
                k_dims.0 * k_dims.1 * kernel[0] * kernel[1],
            );
            assert!(plan.is_some(), "{label}");
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., k_dims, &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: -0.5, hi: 0.5 })] {
                let ours = conv2d(&x, &k, Some(&b), &win, groups, clamp).unwrap();
                let theirs = conv2d(&f64s(&x), &f64s(&k), Some(&f64s(&b)), &win, groups, clamp);
                assert!(max_diff(&ours, &f32s(&theirs.unwrap())) < 1e-4, "forward {label}");
            }
            let [oh, ow] = win.out_size(h, w);
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let ours = conv2d_backward_input(&g, &k, dims, &win, groups).unwrap();
            let theirs = conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &win, groups).unwrap();
            assert!(max_diff(&ours, &f32s(&theirs)) < 1e-4, "gradient {label}");
        }
    }

    #[test]
    fn large_groups_and_ungrouped_convs_are_left_to_gemm() {
        let win = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [1; 4] };
        assert!(GroupedConv::new([1, 64, 8, 8], 64, &win, 1, 64 * 64 * 9).is_none());
        assert!(GroupedConv::new([1, 64, 8, 8], 64, &win, 2, 64 * 32 * 9).is_none());
        assert!(GroupedConv::new([1, 64, 8, 8], 64, &win, 4, 64 * 16 * 9).is_some());
        // A window larger than the padded input.
        assert!(GroupedConv::new([1, 4, 2, 2], 4, &win.clone(), 4, 4 * 9).is_some());
        let big = Window { kernel: [5, 5], ..win };
        assert!(GroupedConv::new([1, 4, 2, 2], 4, &big, 4, 4 * 25).is_none());
    }

    #[test]
    fn the_baseline_sums_match_the_dispatched_ones() {
        // On an AVX2 machine `correlate` runs the AVX2 kernel; the plain one must agree.
        let src: Vec<f32> = (0..400).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let offsets = [0, 3, 17, 40, 41, 99];
        let weights = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5];
        for len in [1, 63, 64, 65, 200] {
            let mut dispatched = vec![0.0; len];
            correlate(&src, &offsets, &weights, &mut dispatched).unwrap();
            let mut baseline = vec![0.0; len];
            correlate_plain(&src, &offsets, &weights, &mut baseline);
            let by_hand: Vec<f32> = (0..len)
                .map(|p| offsets.iter().zip(&weights).map(|(&o, &w)| w * src[p + o]).sum())
                .collect();
            assert_eq!(baseline, by_hand, "{len}");
            assert_eq!(dispatched, by_hand, "{len}");
        }
        // Past the end of `src`: an error, not a read out of bounds.
        assert!(correlate(&src, &offsets, &weights, &mut vec![0.0; 320]).is_err());
    }

    #[test]
    fn every_kernel_for_rows_sums_as_by_hand() {
        // The plain sums and each vector kernel the CPU has, against sums by hand (to
        // rounding: the kernels sum in FMAs). Rows of 1–9 pixels (several rows a chunk;
        // AVX2 spills past short rows), 16 and 17 (a 512-bit vector and one lane more),
        // 33, 64 and 70 (AVX2's whole chunk and a partial second one), 112, 128 (a whole
        // 512-bit chunk) and 150 (a partial second one).
        const WIDTH: usize = 160;
        let src: Vec<f32> = (0..3000).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let offsets =
            [0, 1, 2, WIDTH, WIDTH + 1, WIDTH + 2, 2 * WIDTH, 2 * WIDTH + 1, 2 * WIDTH + 2];
        let weights = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 1.0, -0.5, 0.125];
        let clamps = [None, Some(Clamp::RELU), Some(Clamp { lo: -2.0, hi: 3.0 })];
        let sizes = [[3, 1], [7, 7], [5, 9], [4, 16], [3, 17], [2, 33], [2, 64], [9, 70]]
            .into_iter()
            .chain([[3, 112], [2, 128], [2, 150]]);
        for ([oh, ow], clamp) in sizes.zip(clamps.into_iter().cycle()) {
            let shape = [oh, ow, WIDTH];
            let mut sums = Vec::new();
            let mut kernel = |name, run: &dyn Fn(&mut [MaybeUninit<f32>])| {
                let mut out = vec![MaybeUninit::new(f32::NAN); oh * ow];
                run(&mut out);
                sums.push((name, out));
            };
            kernel("dispatched", &|out| {
                correlate_rows(&src, &offsets, &weights, shape, 0.5, clamp, out).unwrap()
            });
            kernel("plain", &|out| {
                correlate_rows_plain(&src, &offsets, &weights, [ow, WIDTH], 0.5, clamp, out)
            });
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            {
                // SAFETY: each runs only where the CPU has it; `src` reaches 16 values past
                // the last row's last pixel plus the largest offset.
                if direct::available() {
                    kernel("avx2", &|out| unsafe {
                        avx2::correlate_rows(&src, &offsets, &weights, shape, 0.5, clamp, out)
                    });
                }
                if direct::has_avx512() {
                    kernel("avx512", &|out| unsafe {
                        avx512::correlate_rows(&src, &offsets, &weights, shape, 0.5, clamp, out)
                    });
                }
            }
            for (name, out) in &sums {
                for (p, value) in out.iter().enumerate() {
                    #[allow(unsafe_code)]
                    // SAFETY: each kernel wrote every value over the NaNs it was given.
                    let value = unsafe { value.assume_init() };
                    let (oy, ox) = (p / ow, p % ow);
                    let at = |o: usize| src[oy * WIDTH + ox + o];
                    let sum: f32 = offsets.iter().zip(&weights).map(|(&o, &w)| w * at(o)).sum();
                    let by_hand = activate(sum + 0.5, clamp);
                    assert!(
                        (value - by_hand).abs() < 1e-4,
                        "{name} {oh}×{ow} at {p}: {value} {by_hand}"
                    );
                }
            }
        }
        // Past the end of `src`, or rows wider than their source rows: errors.
        let mut out = vec![MaybeUninit::new(0.0); 30 * 70];
        let too_far = [30, 70, WIDTH];
        assert!(correlate_rows(&src, &offsets, &weights, too_far, 0.0, None, &mut out).is_err());
        let too_wide = [2, WIDTH + 10, WIDTH];
        let out = &mut out[..2 * (WIDTH + 10)];
        assert!(correlate_rows(&src, &offsets, &weights, too_wide, 0.0, None, out).is_err());
    }
}
