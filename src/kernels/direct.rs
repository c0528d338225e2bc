//! Direct convolution forward in f32 on x86-64 CPUs with AVX2 and FMA: the stride-1 windows
//! of nearly every conv in a digits CNN, and the strided ones of ImageNet models' stems and
//! downsamples; and the input gradient of stride-1 convs on large maps, which is the forward
//! of the output gradient by the flipped kernel (`conv::transposed_direct`).
//!
//! Why not im2col + gemm: at these sizes (a few hundred taps, a few hundred pixels) gemm
//! spends much of its time packing, and im2col writes the input out nine times. Here the
//! image is copied once into a zero-padded buffer whose rows are then read in place: output
//! pixel `p = oy·wp + ox` of a padded row width `wp` reads tap `(c, ki, kj)` at `p + offset`,
//! so 16 consecutive pixels read 16 consecutive inputs for every tap. Pixels with `ox ≥ ow`
//! wrap into the next row; they are computed and dropped (2 of 26 columns for a 3×3 window
//! on 24 outputs). A strided window reads the padded planes split by stride phase
//! ([`Phased`]), where the same holds with the phases' row width. A tile of 6 output channels × 16 pixels keeps its 12 accumulators in
//! registers and does 12 FMAs per 8 loads, with the kernel packed tap-major per block of 6.
//!
//! The kernel is chosen at run time: without AVX2 and FMA (or off x86-64) convolution goes
//! through im2col + gemm instead, so one binary runs on any x86-64 CPU; with AVX-512F a
//! tile is one 512-bit vector and tiles go in pairs, the same 12 accumulators doing twice
//! the work.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::conv::each_image_into_new;
use super::phased::Phased;
use super::relu::{Clamp, activate};
use super::{Window, tiles_for_rows, with_avx2_copy};
use crate::error::{Error, Result};

/// Output pixels per tile: two AVX vectors.
pub(super) const TILE: usize = 16;
/// Taps per pass over the tiles (see [`block`]).
const MAX_TAPS: usize = 320;
/// Output channels per tile: with the two input vectors and a broadcast weight, its 12
/// accumulators fill the 16 AVX registers without spilling.
pub(super) const ROWS: usize = 6;

/// Whether this CPU runs the direct kernel (std caches the detection).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX-512F: the kernels that have a 512-bit form then run it, twice the
/// work per instruction (ONNX Runtime's kernels use it where the CPU has it).
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A stride-1 convolution of one image, ready to run: geometry, tap offsets into the padded
/// buffer and the packed kernel, built once per call and shared by every image of a batch.
pub(super) struct DirectConv {
    /// Input channels, height and width of one unpadded image.
    source: [usize; 3],
    /// Each channel's padded, phase-split plane.
    phased: Phased,
    /// Values from one split plane to the next: [`Phased::len`] and a gap (see `new`).
    plane: usize,
    /// Output `[oh, ow]`.
    out: [usize; 2],
    groups: usize,
    /// Output channels per group.
    rows: usize,
    /// The group's output channels split into blocks of at most [`ROWS`].
    blocks: Vec<Range<usize>>,
    /// Offset of each tap within one group's padded planes, in the kernel's tap order.
    offsets: Vec<usize>,
    /// Per group, per block of up to [`ROWS`] output channels: `[taps][block rows]`.
    packed: Vec<f32>,
    /// Tiles per output channel, so `stride = tiles·TILE` values per wide row.
    tiles: usize,
    /// Length of the padded buffer, including the slack the last tile reads past the end.
    input_len: usize,
}

impl DirectConv {
    /// Whether [`DirectConv::new`] refuses `win` whatever the conv: a 1×1 window without
    /// padding is left to gemm, which reads the image as it lies (or subsampled, at a
    /// stride).
    pub(super) fn leaves_to_gemm(win: &Window) -> bool {
        win.kernel == [1, 1] && win.pads == [0; 4]
    }

    /// The plan for a conv of `x` `[n, c, h, w]` by `ks`, a kernel `[o, c/groups, kh, kw]`;
    /// None unless the CPU has the kernel.
    pub(super) fn new(
        x: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
    ) -> Option<DirectConv> {
        let [_, c, h, w] = x;
        let [kh, kw] = win.kernel;
        let [top, left, bottom, right] = win.pads;
        let [hp, wp] = [h + top + bottom, w + left + right];
        let reach = [(kh - 1) * win.dilation[0], (kw - 1) * win.dilation[1]];
        if !available()
            || DirectConv::leaves_to_gemm(win)
            || c * h * w * kh * kw == 0
            || win.stride.contains(&0)
            || groups == 0
            || !c.is_multiple_of(groups)
            || !o.is_multiple_of(groups)
            || ks.len() != o * c / groups * kh * kw
            || hp <= reach[0]
            || wp <= reach[1]
        {
            return None;
        }
        let out = win.out_size(h, w);
        let phased = Phased::new([h, w], win);
        // Planes an odd number of cache lines apart: at a multiple of 4 KB (a 32×32 padded
        // map) every channel's rows fall into the same L1 sets (3% on a 64 → 64 conv there).
        let plane = (phased.len().div_ceil(16) | 1) * 16;
        let (channels, rows) = (c / groups, o / groups);
        let offsets: Vec<usize> = (0..channels)
            .flat_map(|ch| {
                (0..kh)
                    .flat_map(move |ki| (0..kw).map(move |kj| ch * plane + phased.offset(ki, kj)))
            })
            .collect();
        let taps = offsets.len();
        // A batch runs image by image on one thread each; a single image, block by block over
        // the pool.
        let threads = if x[0] == 1 { rayon::current_num_threads() } else { 1 };
        let blocks = blocks(rows, threads);
        let mut packed = Vec::with_capacity(o * taps);
        for group in ks.chunks_exact(rows * taps) {
            pack(group, taps, &blocks, &mut packed);
        }
        let tiles = (out[0] * phased.width()).div_ceil(TILE);
        let last_read = (groups - 1) * channels * plane + tiles * TILE + offsets.iter().max()?;
        Some(DirectConv {
            source: [c, h, w],
            phased,
            out,
            groups,
            rows,
            blocks,
            offsets,
            packed,
            tiles,
            plane,
            input_len: last_read.max(c * plane),
        })
    }

    fn image_len(&self) -> usize {
        self.source.iter().product()
    }

    fn out_len(&self) -> usize {
        self.groups * self.rows * self.out[0] * self.out[1]
    }

    /// Scratch values one image needs: the padded input and the wide output rows.
    fn scratch_len(&self) -> usize {
        self.input_len + self.groups * self.rows * self.tiles * TILE
    }

    /// Runs the conv over a batch `xs` into `out`, adding `bias` per output channel and
    /// clamping when `clamp` is set.
    pub(super) fn run(
        &self,
        xs: &[f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) -> Result<Vec<f32>> {
        if bias.is_some_and(|b| b.len() != self.groups * self.rows) {
            return Err(Error::Invalid("direct conv given a bias of the wrong size".into()));
        }
        // Each image's blocks cover its channels, and `crop` every pixel of theirs.
        each_image_into_new(
            xs,
            self.image_len(),
            self.out_len(),
            self.scratch_len(),
            |img, y, scratch, threads| {
                let (input, wide) = scratch.split_at_mut(self.input_len);
                self.pad(img, input);
                self.image(input, wide, y, bias, clamp, threads)
            },
        )
    }

    /// Copies `img` into `input`, padded with zeros and split by phase, with zeros in the
    /// gaps and the slack after it.
    fn pad(&self, img: &[f32], input: &mut [f32]) {
        let [_, h, w] = self.source;
        let (planes, slack) = input.split_at_mut(self.source[0] * self.plane);
        slack.fill(0.0);
        for (plane, src) in planes.chunks_exact_mut(self.plane).zip(img.chunks_exact(h * w)) {
            let (split, gap) = plane.split_at_mut(self.phased.len());
            self.phased.pack(src, split);
            gap.fill(0.0);
        }
    }

    /// The conv of one padded image: blocks of output channels, split over `threads`, each
    /// into its wide rows and then, cropped, biased and clamped, into `y`.
    fn image(
        &self,
        input: &[f32],
        wide: &mut [f32],
        y: &mut [MaybeUninit<f32>],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
        threads: usize,
    ) -> Result<()> {
        let stride = self.tiles * TILE;
        let plane = self.out[0] * self.out[1];
        let taps = self.offsets.len();
        // Each job: (group, first row, its wide rows, its output planes, its packed kernel).
        let mut jobs = Vec::with_capacity(self.groups * self.blocks.len());
        let (mut wide, mut y, mut packed) = (wide, y, self.packed.as_slice());
        for g in 0..self.groups {
            for block in &self.blocks {
                let rows = block.len();
                let (w, w_rest) = std::mem::take(&mut wide).split_at_mut(rows * stride);
                let (o, o_rest) = std::mem::take(&mut y).split_at_mut(rows * plane);
                let (k, k_rest) = packed.split_at(rows * taps);
                jobs.push((g, g * self.rows + block.start, w, o, k));
                (wide, y, packed) = (w_rest, o_rest, k_rest);
            }
        }
        let group_len = (self.source[0] / self.groups) * self.plane;
        let run = |(g, channel, w, o, k): (
            usize,
            usize,
            &mut [f32],
            &mut [MaybeUninit<f32>],
            &[f32],
        )|
         -> Result<()> {
            block(has_avx512(), k, &input[g * group_len..], &self.offsets, self.tiles, w, stride)?;
            self.crop(w, o, channel, bias, clamp);
            Ok(())
        };
        if threads > 1 && jobs.len() > 1 {
            jobs.into_par_iter().try_for_each(run)
        } else {
            jobs.into_iter().try_for_each(run)
        }
    }

    /// Wide rows (phase width, trailing tiles) → `[rows, oh, ow]` output planes starting at
    /// output channel `channel`, with bias and clamp.
    fn crop(
        &self,
        wide: &[f32],
        out: &mut [MaybeUninit<f32>],
        channel: usize,
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) {
        let [oh, ow] = self.out;
        let (wp, stride) = (self.phased.width(), self.tiles * TILE);
        for (row, (plane, src)) in
            out.chunks_exact_mut(oh * ow).zip(wide.chunks_exact(stride)).enumerate()
        {
            let b = bias.map_or(0.0, |b| b[channel + row]);
            crop_plane(src, wp, plane, ow, b, clamp)
        }
    }
}

with_avx2_copy! {
    /// Writes the first `ow` values of each of `wide`'s rows of `width` into the rows of
    /// `plane`, adding `bias` and clamping.
    fn crop_plane(
        wide: &[f32],
        width: usize,
        plane: &mut [MaybeUninit<f32>],
        ow: usize,
        bias: f32,
        clamp: Option<Clamp>,
    ) {
        for (dst, src) in plane.chunks_exact_mut(ow).zip(wide.chunks(width)) {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(activate(s + bias, clamp));
            }
        }
    }
}

/// Appends row-major `weights` `[rows, taps]` to `packed` as the tile kernel reads them:
/// block by block, each `[taps][block rows]`.
pub(super) fn pack(weights: &[f32], taps: usize, blocks: &[Range<usize>], packed: &mut Vec<f32>) {
    for block in blocks {
        let rows: Vec<&[f32]> = block.clone().map(|row| &weights[row * taps..][..taps]).collect();
        for tap in 0..taps {
            packed.extend(rows.iter().map(|row| row[tap]));
        }
    }
}

/// `rows` split into blocks of at most [`ROWS`], as even as can be and, when there are
/// several, as many as a multiple of `threads`, so a single image's blocks share the pool
/// evenly (64 channels on 2 threads: 12 blocks of 5 or 6 rather than 10 of 6 and one of 4).
pub(super) fn blocks(rows: usize, threads: usize) -> Vec<Range<usize>> {
    let mut count = rows.div_ceil(ROWS);
    if count > 1 {
        count = count.next_multiple_of(threads.max(1)).min(rows);
    }
    let (base, extra) = (rows / count.max(1), rows % count.max(1));
    let mut start = 0;
    (0..count)
        .map(|i| {
            let len = base + usize::from(i < extra);
            start += len;
            start - len..start
        })
        .collect()
}

/// `out[r][p] = Σ_t packed[t][r] · input[p + offsets[t]]` for the block's rows `r` and every
/// pixel `p` of `tiles` tiles, rows `stride` apart in `out`; in 512-bit vectors with `wide`
/// (an error unless the CPU has AVX-512F).
fn block(
    wide: bool,
    packed: &[f32],
    input: &[f32],
    offsets: &[usize],
    tiles: usize,
    out: &mut [f32],
    stride: usize,
) -> Result<()> {
    let rows = packed.len() / offsets.len().max(1);
    let last_read = tiles * TILE + offsets.iter().max().copied().unwrap_or(0);
    // The bounds the kernel's unchecked loads and stores rely on.
    let fits = available()
        && (1..=ROWS).contains(&rows)
        && packed.len() == rows * offsets.len()
        && input.len() >= last_read
        && stride >= tiles * TILE
        && out.len() >= (rows - 1) * stride + tiles * TILE
        && (!wide || has_avx512());
    if !fits {
        return Err(Error::Invalid("direct conv block out of bounds".into()));
    }
    // Taps in chunks, each over every tile before the next adds to the tiles' sums: a
    // chunk's packed kernel and the input rows its tiles read stay in L1 (all 576 taps of
    // a 64-channel 3×3 window at once do not, and ran 30% slower).
    let chunk = offsets.len().div_ceil(offsets.len().div_ceil(MAX_TAPS));
    for (i, (offsets, packed)) in offsets.chunks(chunk).zip(packed.chunks(chunk * rows)).enumerate()
    {
        let add = i > 0;
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `fits` checked that the CPU has AVX2 and FMA (and AVX-512F with `wide`) and
        // bounds every access the kernel makes (see `avx2::tiles`); a chunk's offsets and
        // weights are a part of them.
        unsafe {
            let args = (packed, input, offsets, tiles, &mut *out, stride, add);
            tiles_for_rows!(wide, rows, args)
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::*;

    use super::TILE;

    /// The tiles of one block of `R` output channels, added to `out` with `add`, else
    /// stored.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `packed` holds `R·offsets.len()` values; `input` holds at
    /// least `tiles·TILE + max(offsets)` values; `out` holds `(R−1)·stride + tiles·TILE`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tiles<const R: usize>(
        (packed, input, offsets, tiles, out, stride, add): super::Tiles<'_>,
    ) {
        // SAFETY: the caller's bounds cover every pointer offset and access below.
        unsafe {
            for tile in 0..tiles {
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                if add {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let y = out.as_ptr().add(r * stride + tile * TILE);
                        *acc = [_mm256_loadu_ps(y), _mm256_loadu_ps(y.add(8))];
                    }
                }
                let base = input.as_ptr().add(tile * TILE);
                let mut weights = packed.as_ptr();
                for &offset in offsets {
                    let x = base.add(offset);
                    let (x0, x1) = (_mm256_loadu_ps(x), _mm256_loadu_ps(x.add(8)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = _mm256_broadcast_ss(&*weights.add(r));
                        acc[0] = _mm256_fmadd_ps(w, x0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(w, x1, acc[1]);
                    }
                    weights = weights.add(R);
                }
                for (r, acc) in acc.iter().enumerate() {
                    let y = out.as_mut_ptr().add(r * stride + tile * TILE);
                    _mm256_storeu_ps(y, acc[0]);
                    _mm256_storeu_ps(y.add(8), acc[1]);
                }
            }
        }
    }
}

/// What the tile kernels take: the packed kernel, the padded input, the taps' offsets, the
/// number of tiles, the output and its row stride, and whether to add to it.
type Tiles<'a> = (&'a [f32], &'a [f32], &'a [usize], usize, &'a mut [f32], usize, bool);

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::TILE;

    /// [`super::avx2::tiles`] in 512-bit vectors: a tile is one vector, and tiles go in
    /// pairs (12 accumulators for 6 rows, 12 FMAs per 8 loads as there), an odd last one
    /// alone.
    ///
    /// # Safety
    /// As for [`super::avx2::tiles`], with AVX-512F for AVX2 and FMA.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tiles<const R: usize>(mut args: super::Tiles<'_>) {
        let tiles = args.3;
        // SAFETY: the caller's contract; each call covers tiles below `tiles`.
        unsafe {
            for first in (0..tiles & !1).step_by(2) {
                span::<R, 2>(&mut args, first);
            }
            if tiles % 2 == 1 {
                span::<R, 1>(&mut args, tiles - 1);
            }
        }
    }

    /// Tiles `first..first + T`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn span<const R: usize, const T: usize>(
        (packed, input, offsets, _, out, stride, add): &mut super::Tiles<'_>,
        first: usize,
    ) {
        let (stride, add) = (*stride, *add);
        // SAFETY: inside the bounds `tiles` was given.
        unsafe {
            let start = first * TILE;
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            if add {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let y = out.as_ptr().add(r * stride + start);
                    *acc = std::array::from_fn(|t| _mm512_loadu_ps(y.add(t * TILE)));
                }
            }
            let base = input.as_ptr().add(start);
            let mut weights = packed.as_ptr();
            for &offset in offsets.iter() {
                let x = base.add(offset);
                let xs: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(x.add(t * TILE)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*weights.add(r));
                    for (acc, &x) in acc.iter_mut().zip(&xs) {
                        *acc = _mm512_fmadd_ps(w, x, *acc);
                    }
                }
                weights = weights.add(R);
            }
            let out = out.as_mut_ptr();
            for (r, acc) in acc.iter().enumerate() {
                for (t, &acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * stride + start + t * TILE), acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TILE, available, block, blocks, has_avx512};

    #[test]
    fn both_kernels_sum_every_tap_into_every_tile_and_row() {
        if !available() {
            return;
        }
        let value = |i: usize| (i * 7919 % 1000) as f32 / 500.0 - 1.0;
        // Taps past a chunk of 320 (two passes, the second adding); odd and even tile counts
        // (the 512-bit kernel's pairs and its last tile alone).
        let offsets: Vec<usize> = (0..333).map(|t| (t * 37) % 101).collect();
        for (rows, tiles) in [(1, 1), (3, 2), (5, 3), (6, 4), (6, 5)] {
            let packed: Vec<f32> = (0..rows * offsets.len()).map(|i| value(i + 3)).collect();
            let input: Vec<f32> = (0..tiles * TILE + 101).map(|i| value(i + 11)).collect();
            let stride = tiles * TILE + 5;
            for wide in [false, true].into_iter().filter(|&w| !w || has_avx512()) {
                let mut out = vec![f32::NAN; rows * stride];
                block(wide, &packed, &input, &offsets, tiles, &mut out, stride).unwrap();
                for r in 0..rows {
                    for p in 0..tiles * TILE {
                        let want: f64 = offsets
                            .iter()
                            .enumerate()
                            .map(|(t, &o)| {
                                f64::from(packed[t * rows + r]) * f64::from(input[p + o])
                            })
                            .sum();
                        let got = out[r * stride + p];
                        let what = format!("rows {rows}, tiles {tiles}, wide {wide}: ({r}, {p})");
                        assert!(
                            (f64::from(got) - want).abs() < 1e-3,
                            "{what}: {got} against {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn direct_blocks_cover_the_rows_evenly() {
        let sizes =
            |rows, threads| blocks(rows, threads).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(sizes(64, 2), [6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 5, 5]);
        assert_eq!(sizes(4, 2), [4]);
        assert_eq!(sizes(7, 2), [4, 3]);
        assert_eq!(sizes(7, 8), [1; 7]);
        let blocks = blocks(100, 3);
        assert_eq!(blocks.len() % 3, 0);
        assert!(blocks.windows(2).all(|p| p[0].end == p[1].start));
        assert_eq!((blocks[0].start, blocks[blocks.len() - 1].end), (0, 100));
    }
}
