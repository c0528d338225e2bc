//! Winograd convolution in f32, F(2×2, 3×3) and F(4×4, 3×3): 3×3 stride-1 convs (ResNet,
//! VGG and DenseNet are mostly made of them) with 16 multiplies per 2×2 output block, or 36
//! per 4×4, where the direct kernel and gemm take 36 and 144; the forward and the input
//! gradient (the conv of the output gradient by the flipped kernel).
//!
//! Each `α×α` input patch `d` (`α = m + 2` for `m×m` outputs; patches overlap by two)
//! becomes `Bᵀ·d·B`, each 3×3 filter `G·g·Gᵀ`; for each of the `α²` positions the products
//! summed over input channels are one gemm (`[filters, channels]·[channels, tiles]`), and
//! `Aᵀ·M·A` turns each tile's sums into its outputs (Lavin & Gray, 2015). F(2×2) uses only
//! ±1 and ½, so its results stay within a few float roundings of the direct sum; F(4×4)'s
//! larger constants cost about a decimal digit more, so it runs where it saves the most, on
//! large maps. Tiles go in blocks of whole tile rows, each block's transforms and products
//! in cache.
//!
//! The passes run over all of a block's tiles at once, so every loop is a long one over
//! contiguous slices: the input's rows are split into their `m` column phases and `m` row
//! phases first (tile `t` reads columns `m·t..m·t + α`: every phase at `t`, the first two at
//! `t + 1`; rows the same way), each tile row with one extra tile slot that reads into the
//! next row and is never written out. The one-axis transforms are written out
//! ([`Transforms`]), each a single loop that keeps its terms in registers. Measured errors,
//! relative to the largest output of random 64-channel convs: 3·10⁻⁷ for F(2×2), 5·10⁻⁶
//! for F(4×4).

use std::array::from_fn;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use super::conv::each_image_into_new;
use super::matmul::{Mat, matmul};
use super::relu::{Clamp, activate};
use super::{Cached, Window, kept_or_made, vectorised, with_avx2_copy};
use crate::error::{Error, Result};
use crate::model::Derived;

/// Tiles per block, about: a block's transformed input and products (`α²·(channels +
/// filters)` values per tile) stay in the core's L2 for up to a few hundred channels.
const BLOCK_TILES: usize = 112;

/// One Winograd algorithm: `m×m` outputs per tile from `α×α` inputs, `α = m + 2`, and
/// its kernel transform `G` (its `Bᵀ` and `Aᵀ` are written out in [`Transforms`]).
pub(super) struct Variant {
    m: usize,
    alpha: usize,
    /// `G`, `α×3`.
    kernel: &'static [f32],
}

/// F(2×2, 3×3).
pub(super) const F2: Variant = Variant {
    m: 2,
    alpha: 4,
    #[rustfmt::skip]
    kernel: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
};

/// F(4×4, 3×3), at the points 0, ±1, ±2 and ∞.
pub(super) const F4: Variant = Variant {
    m: 4,
    alpha: 6,
    #[rustfmt::skip]
    kernel: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
};

impl Variant {
    /// Transformed values per tile.
    fn positions(&self) -> usize {
        self.alpha * self.alpha
    }
}

/// A 3×3, stride-1 convolution of one image, ready to run: geometry and the transformed
/// kernel, made for the call or kept by the model ([`KernelCache`]), shared by every image
/// of a batch.
pub(super) struct Winograd {
    /// Input channels, height and width of one image.
    source: [usize; 3],
    /// Output channels.
    filters: usize,
    /// Output `[oh, ow]`.
    out: [usize; 2],
    /// Zeros above and left of the input.
    pads: [usize; 2],
    /// The algorithm.
    variant: &'static Variant,
    /// Rows and columns of `m×m` output tiles (the last ones cut where the map ends).
    tiles: [usize; 2],
    /// `G·g·Gᵀ` for each filter `g`, `[filters][α²][channels]`: position `ξ`'s matrix is
    /// rows `α²·channels` apart.
    kernel: Arc<Vec<f32>>,
}

impl Winograd {
    /// The forward conv of `[n, c, h, w]` by `ks` (`[o, c, 3, 3]`), or None where it is not
    /// a 3×3 stride-1 conv without groups and dilation, or too small for this to pay.
    pub(super) fn new(
        dims: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
        cached: Option<Cached<'_>>,
    ) -> Option<Winograd> {
        Winograd::forward(dims, o, win, groups, ks, cached, choose)
    }

    /// The input gradient of that conv: the conv of the output gradient `[n, o, oh, ow]`,
    /// padded by two less the forward's padding on each side, by the kernel flipped with its
    /// channels swapped. None where [`Winograd::new`] would be, or a padding passes two.
    pub(super) fn transposed(
        dims: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
        cached: Option<Cached<'_>>,
    ) -> Option<Winograd> {
        Winograd::backward(dims, o, win, groups, ks, cached, choose)
    }

    /// [`Winograd::new`] with the algorithm `variant` picks for the output map, if any.
    fn forward(
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
        cached: Option<Cached<'_>>,
        variant: impl FnOnce(usize, usize, [usize; 2]) -> Option<&'static Variant>,
    ) -> Option<Winograd> {
        if !plain_3x3(win, groups) || ks.len() != o * c * 9 {
            return None;
        }
        let [top, left, bottom, right] = win.pads;
        let out = [(h + top + bottom).checked_sub(2)?, (w + left + right).checked_sub(2)?];
        let variant = variant(c, o, out)?;
        let kernel =
            kept_or_made(cached, Derived::Winograd { tile: variant.m, flipped: false }, || {
                transform_kernel(variant, o, c, ks, |f, ch| (f * c + ch) * 9, false)
            });
        Some(Winograd::with(variant, [c, h, w], o, out, [top, left], kernel))
    }

    /// [`Winograd::transposed`] with the algorithm `variant` picks, if any.
    fn backward(
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
        cached: Option<Cached<'_>>,
        variant: impl FnOnce(usize, usize, [usize; 2]) -> Option<&'static Variant>,
    ) -> Option<Winograd> {
        let [top, left, bottom, right] = win.pads;
        if !plain_3x3(win, groups)
            || ks.len() != o * c * 9
            || top.max(left).max(bottom).max(right) > 2
        {
            return None;
        }
        let [oh, ow] = win.out_size(h, w);
        let variant = variant(o, c, [h, w])?;
        let kernel =
            kept_or_made(cached, Derived::Winograd { tile: variant.m, flipped: true }, || {
                transform_kernel(variant, c, o, ks, |ch, f| (f * c + ch) * 9, true)
            });
        Some(Winograd::with(variant, [o, oh, ow], c, [h, w], [2 - top, 2 - left], kernel))
    }

    /// The plan of `variant` for a conv of this geometry by the transformed `kernel`.
    fn with(
        variant: &'static Variant,
        source: [usize; 3],
        filters: usize,
        out @ [oh, ow]: [usize; 2],
        pads: [usize; 2],
        kernel: Arc<Vec<f32>>,
    ) -> Winograd {
        let tiles = [oh.div_ceil(variant.m), ow.div_ceil(variant.m)];
        Winograd { source, filters, out, pads, variant, tiles, kernel }
    }

    fn image_len(&self) -> usize {
        self.source.iter().product()
    }

    fn out_len(&self) -> usize {
        self.filters * self.out[0] * self.out[1]
    }

    /// The image's tile rows in blocks of about [`BLOCK_TILES`]` · 16 / α²` tiles (the
    /// same values in every variant), sized evenly and, where there are at least as many
    /// as `threads`, a multiple of it in number: dealt out in turn, each thread gets the
    /// same rows (2 threads on 14 rows in 5 blocks got 9 and 6).
    fn blocks(&self, threads: usize) -> Vec<Range<usize>> {
        let rows = self.tiles[0];
        let per_block = (BLOCK_TILES * 16 / self.variant.positions() / self.stride()).max(1);
        let mut count = rows.div_ceil(per_block);
        if count >= threads {
            count = count.next_multiple_of(threads).min(rows);
        }
        let (base, extra) = (rows / count, rows % count);
        let mut start = 0;
        (0..count)
            .map(|i| {
                let block = start..start + base + usize::from(i < extra);
                start = block.end;
                block
            })
            .collect()
    }

    /// Tile rows in the largest of [`Winograd::blocks`] (the first).
    fn block_rows(&self, threads: usize) -> usize {
        self.blocks(threads).first().map_or(1, |b| b.len())
    }

    /// Tile slots per tile row: one more than its tiles, so that every pass runs over all
    /// of a block's rows at once (the extra tile reads the next row and is never written
    /// out).
    fn stride(&self) -> usize {
        self.tiles[1] + 1
    }

    /// Values of a block's transformed input and products.
    fn block_len(&self, rows: usize) -> usize {
        self.variant.positions() * (self.source[0] + self.filters) * rows * self.stride()
    }

    /// Values of one (column phase, row phase) plane of a block's split input rows:
    /// `rows + 1` rows of slots and one more value, read by the last extra tile.
    fn split_plane(&self, rows: usize) -> usize {
        (rows + 1) * self.stride() + 1
    }

    /// The per-channel working space of a block of `rows` tile rows: its `m·rows + 2`
    /// input rows split by column and row phase (`m²` planes), then their `α` row
    /// transforms per row phase; for the output, the `m·α` column-transformed rows of tiles
    /// and the `m²` outputs of every tile.
    fn work_len(&self, rows: usize) -> usize {
        let Variant { m, alpha, .. } = *self.variant;
        let slots = rows * self.stride();
        let input = m * m * self.split_plane(rows) + alpha * m * (rows + 1) * self.stride();
        let output = m * alpha * slots + m * m * slots;
        input.max(output)
    }

    /// Whether an image on `threads` threads splits its blocks over them (each block then
    /// runs on one) rather than running its blocks one by one, each split over the threads.
    fn blocks_in_parallel(&self, threads: usize) -> bool {
        threads > 1 && self.blocks(threads).len() >= 2 * threads
    }

    /// Scratch values one image on `threads` threads needs (see [`Winograd::image`]).
    fn scratch_len(&self, threads: usize) -> usize {
        let rows = self.block_rows(threads);
        let (block, work) = (self.block_len(rows), self.work_len(rows));
        match self.blocks_in_parallel(threads) {
            true => threads * (block + work),
            false => block + threads * work,
        }
    }

    /// Runs the conv over a batch `xs` into a new output, adding `bias` per output channel
    /// and clamping when `clamp` is set.
    pub(super) fn run(
        &self,
        xs: &[f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
    ) -> Result<Vec<f32>> {
        if bias.is_some_and(|b| b.len() != self.filters) {
            return Err(Error::Invalid("Winograd conv given a bias of the wrong size".into()));
        }
        // A batch runs one image per thread; a lone image gets them all.
        let threads = match xs.len() > self.image_len() {
            true => 1,
            false => rayon::current_num_threads(),
        };
        // Each image's blocks write every output row of every channel (see `image`).
        each_image_into_new(
            xs,
            self.image_len(),
            self.out_len(),
            self.scratch_len(threads),
            |img, y, scratch, threads| self.image(img, y, scratch, bias, clamp, threads),
        )
    }

    /// One image: its tile rows in blocks, each block writing its rows of every output
    /// plane. Many blocks are dealt out to the threads; a few run one after the other, each
    /// split over the threads (small maps: a 14×14 map is one block).
    #[allow(clippy::too_many_arguments)]
    fn image(
        &self,
        img: &[f32],
        y: &mut [MaybeUninit<f32>],
        scratch: &mut [f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
        threads: usize,
    ) -> Result<()> {
        let [oh, ow] = self.out;
        let blocks = self.blocks(threads);
        let rows = blocks[0].len();
        // Each block's output rows in every plane: together the blocks cover each plane.
        let m = self.variant.m;
        let lens: Vec<usize> =
            blocks.iter().map(|b| ((m * b.end).min(oh) - m * b.start) * ow).collect();
        let parts = regroup(y.chunks_exact_mut(oh * ow), &lens);
        let jobs = blocks.into_iter().zip(parts);
        if !self.blocks_in_parallel(threads) {
            let (buffers, work) = scratch.split_at_mut(self.block_len(rows));
            return jobs.into_iter().try_for_each(|(block, planes)| {
                self.block(img, block, planes, buffers, work, bias, clamp, threads)
            });
        }
        // Dealt out in turn (see `blocks`).
        let mut dealt: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, job) in jobs.enumerate() {
            dealt[i % threads].push(job);
        }
        let per_thread = self.block_len(rows) + self.work_len(rows);
        scratch.par_chunks_exact_mut(per_thread).zip(dealt).try_for_each(|(scratch, jobs)| {
            let (buffers, work) = scratch.split_at_mut(self.block_len(rows));
            jobs.into_iter().try_for_each(|(block, planes)| {
                self.block(img, block, planes, buffers, work, bias, clamp, 1)
            })
        })
    }

    /// The tile rows `block` of one image into their output rows `planes` (one slice per
    /// output channel), with `buffers` for the transformed input and the products and one
    /// `work` space per thread; each pass split over `threads`.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        img: &[f32],
        block: Range<usize>,
        mut planes: Vec<&mut [MaybeUninit<f32>]>,
        buffers: &mut [f32],
        work: &mut [f32],
        bias: Option<&[f32]>,
        clamp: Option<Clamp>,
        threads: usize,
    ) -> Result<()> {
        let [c, h, w] = self.source;
        let k = self.filters;
        let rows = block.len();
        let tiles = rows * self.stride();
        // One working space per thread (see `scratch_len`).
        let work_len = work.len() / threads;
        let positions = self.variant.positions();
        let (transformed, products) = buffers.split_at_mut(positions * c * tiles);
        let products = &mut products[..positions * k * tiles];
        let first_row = (self.variant.m * block.start) as isize - self.pads[0] as isize;
        // Input transform, channels split over the threads: each thread's channels are a
        // run of rows in each position's matrix.
        let per_thread = c.div_ceil(threads);
        let lens: Vec<usize> =
            (0..c).step_by(per_thread).map(|s| (s + per_thread).min(c) - s).collect();
        let targets = regroup(
            transformed.chunks_exact_mut(c * tiles),
            &lens.iter().map(|l| l * tiles).collect::<Vec<_>>(),
        );
        let planes_in: Vec<&[f32]> = img.chunks_exact(h * w).collect();
        split_over(
            work,
            work_len,
            planes_in.chunks(per_thread).zip(targets),
            |work, (planes, mut targets)| {
                vectorised(
                    #[inline(always)]
                    || {
                        for (ch, plane) in planes.iter().enumerate() {
                            let targets = &mut targets;
                            match self.variant.m {
                                2 => self.transform_input::<4, 2, F2Transforms>(
                                    plane, first_row, rows, work, targets, ch,
                                ),
                                _ => self.transform_input::<6, 4, F4Transforms>(
                                    plane, first_row, rows, work, targets, ch,
                                ),
                            }
                        }
                    },
                )
            },
        );
        // The products, one position per job.
        let product = |(xi, out): (usize, &mut [f32])| {
            let a = Mat {
                data: &self.kernel[xi * c..],
                rows: k,
                cols: c,
                row_stride: positions * c,
                col_stride: 1,
            };
            let b = Mat::row_major(&transformed[xi * c * tiles..][..c * tiles], c, tiles);
            matmul(out, a, b, false, 1)
        };
        match threads > 1 {
            true => products.par_chunks_exact_mut(k * tiles).enumerate().try_for_each(product)?,
            false => products.chunks_exact_mut(k * tiles).enumerate().try_for_each(product)?,
        }
        // Output transform, filters split over the threads.
        let products = &*products;
        let per_thread = k.div_ceil(threads);
        split_over(
            work,
            work_len,
            planes.chunks_mut(per_thread).enumerate(),
            |work, (t, planes)| {
                vectorised(
                    #[inline(always)]
                    || {
                        for (i, plane) in planes.iter_mut().enumerate() {
                            let f = t * per_thread + i;
                            let b = bias.map_or(0.0, |b| b[f]);
                            match self.variant.m {
                                2 => self.transform_output::<4, 2, F2Transforms>(
                                    products, f, tiles, work, plane, b, clamp,
                                ),
                                _ => self.transform_output::<6, 4, F4Transforms>(
                                    products, f, tiles, work, plane, b, clamp,
                                ),
                            }
                        }
                    },
                )
            },
        );
        Ok(())
    }

    /// `Bᵀ·d·B` of every tile of one channel `plane` in a block of `rows` tile rows whose
    /// first input row is `first_row`, into row `ch` of each position's `targets`; `A` is
    /// the variant's `α`, `M` its `m`.
    #[inline(always)]
    fn transform_input<const A: usize, const M: usize, T: Transforms<A, M>>(
        &self,
        plane: &[f32],
        first_row: isize,
        rows: usize,
        work: &mut [f32],
        targets: &mut [&mut [f32]],
        ch: usize,
    ) {
        let [_, h, w] = self.source;
        let stride = self.stride();
        let tiles = rows * stride;
        let split_plane = self.split_plane(rows);
        let (split, row_transformed) = work.split_at_mut(M * M * split_plane);
        // Padded input rows split by column phase `p` and row phase `ρ` (row `m·r + ρ` of
        // the block is row `r` of plane `(p, ρ)`); rows past the image stay zero.
        split.fill(0.0);
        let left = self.pads[1] as isize;
        for r in 0..M * rows + 2 {
            let y = first_row + r as isize;
            if (0..h as isize).contains(&y) {
                let at = (r % M) * split_plane + (r / M) * stride;
                let phase = |p: usize| (p * M) * split_plane + at;
                split_row::<M>(&plane[y as usize * w..][..w], left, stride, split, phase);
            }
        }
        // `d·B` along the rows of each row phase, into planes `[ρ][j]`: tile `t`'s column
        // `k` is column phase `k % m` at `t + k / m`.
        let plane_len = (rows + 1) * stride;
        for rho in 0..M {
            let column =
                from_fn(|k| &split[((k % M) * M + rho) * split_plane + k / M..][..plane_len]);
            T::input(column, stripes(&mut row_transformed[rho * A * plane_len..], plane_len));
        }
        // `Bᵀ·(d·B)` down each column: tile row `r` reads row `k` of its patches from row
        // phase `k % m` at `r + k / m`.
        for j in 0..A {
            let row = from_fn(|k| {
                &row_transformed[((k % M) * A + j) * plane_len + (k / M) * stride..][..tiles]
            });
            let mut positions = &mut targets[j * A..][..A];
            let outs = from_fn(|_| {
                let (position, rest) = std::mem::take(&mut positions).split_at_mut(1);
                positions = rest;
                stripe(position[0], ch, tiles)
            });
            T::input(row, outs);
        }
    }

    /// `Aᵀ·M·A` of every tile of output channel `f` in a block, with its bias and clamp,
    /// into its output rows `plane`; `A` is the variant's `α`, `M` its `m`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn transform_output<const A: usize, const M: usize, T: Transforms<A, M>>(
        &self,
        products: &[f32],
        f: usize,
        tiles: usize,
        work: &mut [f32],
        plane: &mut [MaybeUninit<f32>],
        bias: f32,
        clamp: Option<Clamp>,
    ) {
        let k = self.filters;
        let (columns, outputs) = work.split_at_mut(M * A * tiles);
        // `Aᵀ·M` down each column `j`: output row `a` of every tile, into `[j][a]`.
        for j in 0..A {
            let product = from_fn(|i| &products[((j * A + i) * k + f) * tiles..][..tiles]);
            T::output(product, stripes(&mut columns[j * M * tiles..], tiles));
        }
        // `(Aᵀ·M)·A` along each row `a`: output `(a, b)` of every tile, into `[a][b]`.
        for a in 0..M {
            let column = from_fn(|j| &columns[(j * M + a) * tiles..][..tiles]);
            T::output(column, stripes(&mut outputs[a * M * tiles..], tiles));
        }
        // Interleaved into the output's rows and columns.
        let [_, ow] = self.out;
        let (cols, stride) = (self.tiles[1], self.stride());
        for (row, out) in plane.chunks_exact_mut(ow).enumerate() {
            let (tile_row, a) = (row / M, row % M);
            let at: [&[f32]; M] =
                from_fn(|b| &outputs[(a * M + b) * tiles + tile_row * stride..][..cols]);
            let mut groups = out.chunks_exact_mut(M);
            for (t, group) in (&mut groups).enumerate() {
                for (value, at) in group.iter_mut().zip(&at) {
                    value.write(activate(at[t] + bias, clamp));
                }
            }
            // A last tile cut by the map's edge.
            let t = ow / M;
            for (value, at) in groups.into_remainder().iter_mut().zip(&at) {
                value.write(activate(at[t] + bias, clamp));
            }
        }
    }
}

/// Output maps smaller than this stay with im2col + gemm (see [`choose`]). At 14×14
/// it measured level with gemm at first (256 → 256 at 2 threads: 1.7–2.1 ms against 1.6),
/// and ahead once products split over threads by halves (`matmul::splits`): resnet50's
/// layer3 3×3 convs 1.39–1.55 ms against 1.53–1.79 (`convscope bench --layers`, two
/// alternating rounds), densenet121's 3×3 convs in all 16.9–17.3 against 17.3–18.6.
///
/// Smaller maps lose in a model even for the largest products: there the conv is bound by
/// reading its kernel, cold in the caches after the rest of the model ran, and F(2×2)'s 16
/// transformed kernels are 1.8× the 3×3 one. resnet50's 512 → 512 convs at 7×7 in a model
/// (`bench --layers`, three alternating rounds) took 1.40–1.52 ms by F(2×2) against
/// 0.99–1.08 by gemm, their input gradients 1.51–1.61 against 1.20–1.29; the same conv
/// called over and over, its kernel hot, had measured F(2×2) ahead (1.81 against 1.86).
const MIN_PIXELS: usize = 14 * 14;
/// Output maps of at least this many pixels take F(4×4, 3×3).
const MIN_PIXELS_F4: usize = 28 * 28;
/// Convs with fewer input channels than this, fewer filters than [`MIN_FILTERS`], or fewer
/// than this squared of both together stay with the direct kernel. Measured as above,
/// direct against Winograd: 32 → 128 at 28×28 0.47–0.50 ms against 0.56–0.60, the digits
/// network's 32 → 64 at 24×24 0.27 against 0.28–0.37 (and its input gradient, 64 → 32,
/// 265–300 µs against 287–293, criterion); 128 → 32 at 28×28 0.61–0.66 against 0.50–0.62,
/// 64 → 64 at 56×56 1.59 against 1.10.
const MIN_CHANNELS: usize = 64;
const MIN_FILTERS: usize = 32;
/// Maps under [`MIN_PIXELS_F4`] take F(2×2) only with at least this many filters: with
/// fewer, each position's product is too small for gemm to run well. densenet121's 24
/// 128 → 32 convs at 14×14 took 4.09–4.35 ms in all by F(2×2) against 3.53–3.68 by
/// im2col + gemm (`bench --layers`, two alternating rounds); resnet50's 256 → 256 ones
/// stay with F(2×2), which beat gemm there.
const MIN_FILTERS_F2: usize = 64;

/// The algorithm for a conv of `channels` → `filters` onto an `[oh, ow]` map, or None
/// where the direct kernel or gemm runs it faster: small maps (see [`MIN_PIXELS`]), and
/// few channels, where gemm runs a short sum poorly and the transforms cost as much as the
/// products save.
fn choose(channels: usize, filters: usize, [oh, ow]: [usize; 2]) -> Option<&'static Variant> {
    let variant = if oh * ow >= MIN_PIXELS_F4 { &F4 } else { &F2 };
    let min_filters = if variant.m == F2.m { MIN_FILTERS_F2 } else { MIN_FILTERS };
    let worth = oh * ow >= MIN_PIXELS
        && channels >= MIN_CHANNELS
        && filters >= min_filters
        && channels * filters >= MIN_CHANNELS * MIN_CHANNELS;
    worth.then_some(variant)
}

/// A 3×3 window, stride 1, no dilation, one group.
fn plain_3x3(win: &Window, groups: usize) -> bool {
    win.kernel == [3, 3] && win.stride == [1, 1] && win.dilation == [1, 1] && groups == 1
}

/// `G·g·Gᵀ` for each of `rows · cols` 3×3 filters at `offset(row, col)` in `ks` (flipped
/// in both axes when `flip`), laid out `[rows][α²][cols]`.
fn transform_kernel(
    variant: &Variant,
    rows: usize,
    cols: usize,
    ks: &[f32],
    offset: impl Fn(usize, usize) -> usize + Sync,
    flip: bool,
) -> Vec<f32> {
    let Variant { alpha, kernel: g, .. } = *variant;
    let positions = variant.positions();
    let mut out = vec![0.0; rows * positions * cols];
    // Per row: its filters tap-major, so each pass below is a loop over `cols`, then `G·g`.
    let buffers = || (vec![0.0; 9 * cols], vec![0.0; 3 * alpha * cols]);
    let row = |(taps, half): &mut (Vec<f32>, Vec<f32>), (r, out): (usize, &mut [f32])| {
        let order: [usize; 9] = std::array::from_fn(|tap| if flip { 8 - tap } else { tap });
        for col in 0..cols {
            let filter = &ks[offset(r, col)..][..9];
            for (tap, &from) in order.iter().enumerate() {
                taps[tap * cols + col] = filter[from];
            }
        }
        vectorised(
            #[inline(always)]
            || {
                // `G·g`: `α` rows of three, from the filter's three rows.
                for j in 0..3 {
                    let tap = |k: usize| &taps[(3 * k + j) * cols..][..cols];
                    for i in 0..alpha {
                        combine(stripe(half, 3 * i + j, cols), &g[3 * i..][..3], tap);
                    }
                }
                // `(G·g)·Gᵀ`: each of those rows to `α`.
                for i in 0..alpha {
                    let column = |k: usize| &half[(3 * i + k) * cols..][..cols];
                    for j in 0..alpha {
                        combine(stripe(out, j * alpha + i, cols), &g[3 * j..][..3], column);
                    }
                }
            },
        );
    };
    if rows * cols >= 1 << 14 {
        out.par_chunks_exact_mut(positions * cols).enumerate().for_each_init(buffers, row);
    } else {
        let mut buffers = buffers();
        out.chunks_exact_mut(positions * cols).enumerate().for_each(|job| row(&mut buffers, job));
    }
    out
}

/// One input row, `left` zeros before it and zeros after, split into its `m` column
/// phases: phase `p` holds columns `m·t + p` for `t < len` at `split[phase(p)..]`, whose
/// values are zero already.
#[inline(always)]
fn split_row<const M: usize>(
    src: &[f32],
    left: isize,
    len: usize,
    split: &mut [f32],
    phase: impl Fn(usize) -> usize,
) {
    let m = M;
    // Groups `t` whose columns `m·t - left .. m·t + m - left` all lie in the row; the
    // groups at the edges take what lies in the row of theirs.
    let first = (left as usize).div_ceil(m);
    let end = ((src.len() as isize + left) / m as isize).clamp(first as isize, len as isize);
    let end = end as usize;
    for t in (0..first).chain(end..len) {
        for p in 0..m {
            let x = (m * t + p) as isize - left;
            if (0..src.len() as isize).contains(&x) {
                split[phase(p) + t] = src[x as usize];
            }
        }
    }
    // The phases' runs lie in `split` in order, apart: carved out one after another.
    let mut rest = split;
    let mut taken = 0;
    let mut phases: [&mut [f32]; M] = from_fn(|p| {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(phase(p) - taken);
        let (run, tail) = tail.split_at_mut(len);
        (rest, taken) = (tail, phase(p) + len);
        &mut run[first..end]
    });
    let groups = src[m * first - left as usize..].chunks_exact(m);
    for (t, group) in groups.take(end - first).enumerate() {
        for (run, &v) in phases.iter_mut().zip(group) {
            run[t] = v;
        }
    }
}

/// Splits each of `chunks` into runs of `lens` values and gathers the `i`th run of every
/// chunk into list `i`: one job's part of each of several planes.
fn regroup<'a, T>(
    chunks: impl Iterator<Item = &'a mut [T]>,
    lens: &[usize],
) -> Vec<Vec<&'a mut [T]>> {
    let mut lists: Vec<Vec<&mut [T]>> = lens.iter().map(|_| Vec::new()).collect();
    for chunk in chunks {
        let mut rest = chunk;
        for (list, &len) in lists.iter_mut().zip(lens) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            list.push(head);
            rest = tail;
        }
    }
    lists
}

/// Runs `f` on each job with its own `len` values of `work`, in parallel where there is
/// more than one job (at most one per run of `work`).
fn split_over<J: Send>(
    work: &mut [f32],
    len: usize,
    jobs: impl Iterator<Item = J>,
    f: impl Fn(&mut [f32], J) + Sync,
) {
    let jobs: Vec<J> = jobs.collect();
    if jobs.len() > 1 {
        work.par_chunks_exact_mut(len).zip(jobs).for_each(|(work, job)| f(work, job));
    } else if let Some(job) = jobs.into_iter().next() {
        f(&mut work[..len], job);
    }
}

/// The `index`th run of `len` values of `values`.
#[inline(always)]
fn stripe(values: &mut [f32], index: usize, len: usize) -> &mut [f32] {
    &mut values[index * len..][..len]
}

/// `R` runs of `len` values of `values`, one after the other.
#[inline(always)]
fn stripes<const R: usize>(values: &mut [f32], len: usize) -> [&mut [f32]; R] {
    let mut rest = values;
    from_fn(|_| {
        let (run, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        run
    })
}

/// A variant's input and output transforms along one axis, over runs of values: `Bᵀ·d`
/// from `α` runs `d` into `α` runs, `Aᵀ·m` from `α` runs into `m`. Written out with their
/// common terms shared, each in one loop over the values (the runs as separate arguments,
/// so the compiler knows they do not overlap and vectorises): a pass over memory per
/// coefficient cost F(4×4) more than its products saved.
trait Transforms<const A: usize, const M: usize> {
    fn input(d: [&[f32]; A], out: [&mut [f32]; A]);
    fn output(m: [&[f32]; A], out: [&mut [f32]; M]);
}

/// F(2×2, 3×3)'s transforms.
struct F2Transforms;
/// F(4×4, 3×3)'s transforms.
struct F4Transforms;

impl Transforms<4, 2> for F2Transforms {
    #[inline(always)]
    fn input([d0, d1, d2, d3]: [&[f32]; 4], [o0, o1, o2, o3]: [&mut [f32]; 4]) {
        input_f2(d0, d1, d2, d3, o0, o1, o2, o3)
    }
    #[inline(always)]
    fn output([m0, m1, m2, m3]: [&[f32]; 4], [y0, y1]: [&mut [f32]; 2]) {
        output_f2(m0, m1, m2, m3, y0, y1)
    }
}

impl Transforms<6, 4> for F4Transforms {
    #[inline(always)]
    fn input([d0, d1, d2, d3, d4, d5]: [&[f32]; 6], out: [&mut [f32]; 6]) {
        let [o0, o1, o2, o3, o4, o5] = out;
        input_f4(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)
    }
    #[inline(always)]
    fn output([m0, m1, m2, m3, m4, m5]: [&[f32]; 6], [y0, y1, y2, y3]: [&mut [f32]; 4]) {
        output_f4(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)
    }
}

with_avx2_copy! {
    #[allow(clippy::too_many_arguments)]
    fn input_f2(
        d0: &[f32], d1: &[f32], d2: &[f32], d3: &[f32],
        o0: &mut [f32], o1: &mut [f32], o2: &mut [f32], o3: &mut [f32],
    ) {
        let n = o0.len();
        let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
        let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
        for t in 0..n {
            o0[t] = d0[t] - d2[t];
            o1[t] = d1[t] + d2[t];
            o2[t] = d2[t] - d1[t];
            o3[t] = d1[t] - d3[t];
        }
    }
}

with_avx2_copy! {
    #[allow(clippy::too_many_arguments)]
    fn output_f2(m0: &[f32], m1: &[f32], m2: &[f32], m3: &[f32], y0: &mut [f32], y1: &mut [f32]) {
        let n = y0.len();
        let (m0, m1, m2, m3, y1) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &mut y1[..n]);
        for t in 0..n {
            y0[t] = m0[t] + m1[t] + m2[t];
            y1[t] = m1[t] - m2[t] - m3[t];
        }
    }
}

with_avx2_copy! {
    #[allow(clippy::too_many_arguments)]
    fn input_f4(
        d0: &[f32], d1: &[f32], d2: &[f32], d3: &[f32], d4: &[f32], d5: &[f32],
        o0: &mut [f32], o1: &mut [f32], o2: &mut [f32], o3: &mut [f32], o4: &mut [f32],
        o5: &mut [f32],
    ) {
        let n = o0.len();
        let (d0, d1, d2, d3, d4, d5) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n], &d4[..n], &d5[..n]);
        let (o1, o2, o3, o4, o5) = (&mut o1[..n], &mut o2[..n], &mut o3[..n], &mut o4[..n], &mut o5[..n]);
        for t in 0..n {
            let (a, b) = (d4[t] - 4.0 * d2[t], d3[t] - 4.0 * d1[t]);
            let (c, e) = (d4[t] - d2[t], 2.0 * (d3[t] - d1[t]));
            o0[t] = 4.0 * d0[t] - 5.0 * d2[t] + d4[t];
            o1[t] = a + b;
            o2[t] = a - b;
            o3[t] = c + e;
            o4[t] = c - e;
            o5[t] = 4.0 * d1[t] - 5.0 * d3[t] + d5[t];
        }
    }
}

with_avx2_copy! {
    #[allow(clippy::too_many_arguments)]
    fn output_f4(
        m0: &[f32], m1: &[f32], m2: &[f32], m3: &[f32], m4: &[f32], m5: &[f32],
        y0: &mut [f32], y1: &mut [f32], y2: &mut [f32], y3: &mut [f32],
    ) {
        let n = y0.len();
        let (m0, m1, m2, m3, m4, m5) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &m4[..n], &m5[..n]);
        let (y1, y2, y3) = (&mut y1[..n], &mut y2[..n], &mut y3[..n]);
        for t in 0..n {
            let (p, q) = (m1[t] + m2[t], m1[t] - m2[t]);
            let (r, s) = (m3[t] + m4[t], m3[t] - m4[t]);
            y0[t] = m0[t] + p + r;
            y1[t] = q + 2.0 * s;
            y2[t] = p + 4.0 * r;
            y3[t] = q + 8.0 * s + m5[t];
        }
    }
}

/// `out = Σ coefs[k]·term(k)`, skipping zero coefficients: one pass over `out` per term.
#[inline(always)]
fn combine<'a>(out: &mut [f32], coefs: &[f32], term: impl Fn(usize) -> &'a [f32]) {
    let mut first = true;
    for (k, &c) in coefs.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        let values = term(k);
        match (first, c) {
            (true, 1.0) => out.copy_from_slice(&values[..out.len()]),
            (true, _) => out.iter_mut().zip(values).for_each(|(o, &v)| *o = c * v),
            (false, 1.0) => out.iter_mut().zip(values).for_each(|(o, &v)| *o += v),
            (false, -1.0) => out.iter_mut().zip(values).for_each(|(o, &v)| *o -= v),
            (false, _) => out.iter_mut().zip(values).for_each(|(o, &v)| *o += c * v),
        }
        first = false;
    }
    if first {
        out.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::testing::window;
    use crate::kernels::{
        conv2d, conv2d_backward_input, conv2d_backward_input_with_cache, conv2d_with_cache,
    };
    use crate::model::KernelCache;
    use crate::model::Pads;

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// Largest magnitude.
    fn largest(values: &[f64]) -> f64 {
        values.iter().fold(0f64, |m, v| m.max(v.abs()))
    }

    /// Largest difference from `reference` relative to `scale`.
    fn relative_error(ours: &[f32], reference: &[f64], scale: f64) -> f64 {
        assert_eq!(ours.len(), reference.len());
        let diff = ours.iter().zip(reference).fold(0f64, |m, (&a, b)| m.max((a as f64 - b).abs()));
        diff / scale
    }

    fn f64s(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    // (n, c, o, [h, w], pads [top, left, bottom, right]): odd and even output sides (a
    // last tile cut in half), asymmetric and two-wide pads, batches, one and several
    // blocks of tile rows, channel counts off the SIMD width.
    type Case = (usize, usize, usize, [usize; 2], Pads);
    const CASES: [Case; 6] = [
        (1, 64, 64, [15, 14], [1; 4]),
        (2, 64, 72, [17, 23], [0; 4]),
        (1, 72, 64, [15, 16], [1, 0, 2, 1]),
        (1, 64, 65, [30, 9], [2; 4]),
        (3, 67, 64, [16, 15], [0, 1, 1, 2]),
        (1, 64, 64, [56, 56], [1; 4]),
    ];

    /// `Bᵀ` and `Aᵀ` of F(2×2) and F(4×4), row-major, as Lavin & Gray give them.
    #[rustfmt::skip]
    const F2_INPUT: [f32; 16] = [1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,];
    #[rustfmt::skip]
    const F2_OUTPUT: [f32; 8] = [1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,];
    #[rustfmt::skip]
    const F4_INPUT: [f32; 36] = [4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,];
    #[rustfmt::skip]
    const F4_OUTPUT: [f32; 24] = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,];

    /// `matrix · runs` (rows of `A` coefficients) over runs of `n` values.
    fn by_matrix<const A: usize>(matrix: &[f32], runs: &[Vec<f32>; A], n: usize) -> Vec<Vec<f32>> {
        matrix
            .chunks_exact(A)
            .map(|row| (0..n).map(|t| row.iter().zip(runs).map(|(c, r)| c * r[t]).sum()).collect())
            .collect()
    }

    fn check<const A: usize, const M: usize, T: Transforms<A, M>>(input: &[f32], output: &[f32]) {
        let n = 21;
        let runs: [Vec<f32>; A] =
            from_fn(|k| (0..n).map(|t| ((k * 31 + t * 7) % 13) as f32 - 6.0).collect());
        let mut d: [Vec<f32>; A] = from_fn(|_| vec![0.0; n]);
        T::input(from_fn(|k| runs[k].as_slice()), d.each_mut().map(|v| v.as_mut_slice()));
        assert_eq!(d.to_vec(), by_matrix(input, &runs, n), "Bᵀ, α = {A}");
        let mut y: [Vec<f32>; M] = from_fn(|_| vec![0.0; n]);
        T::output(from_fn(|k| runs[k].as_slice()), y.each_mut().map(|v| v.as_mut_slice()));
        assert_eq!(y.to_vec(), by_matrix(output, &runs, n), "Aᵀ, α = {A}");
    }

    #[test]
    fn the_written_out_transforms_are_the_papers_matrices() {
        check::<4, 2, F2Transforms>(&F2_INPUT, &F2_OUTPUT);
        check::<6, 4, F4Transforms>(&F4_INPUT, &F4_OUTPUT);
    }

    #[test]
    fn winograd_forward_matches_the_f64_conv() {
        let dev = Device::Cpu;
        for (n, c, o, [h, w], pads) in CASES {
            let win = window(3, 1, pads);
            let x = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let conv = |clamp| {
                values(&conv2d(&f64s(&x), &f64s(&k), Some(&f64s(&b)), &win, 1, clamp).unwrap())
            };
            // Relative to the unclamped sums: a clamp to ±0.5 does not make them smaller.
            let scale = largest(&conv(None));
            for (variant, tolerance) in [(&F2, 1e-5), (&F4, 2e-5)] {
                let pick = |_, _, _| Some(variant);
                let plan = Winograd::forward([n, c, h, w], o, &win, 1, &ks, None, pick).unwrap();
                for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: -0.5, hi: 0.5 })] {
                    let ours = plan.run(&xs, Some(&b.to_vec1::<f32>().unwrap()), clamp).unwrap();
                    let error = relative_error(&ours, &conv(clamp), scale);
                    let label = format!("F({}) {n} {c}→{o} {h}×{w} {pads:?} {clamp:?}", variant.m);
                    assert!(error < tolerance, "{label}: {error}");
                }
            }
        }
    }

    #[test]
    fn winograd_input_gradient_matches_the_f64_gemm_path() {
        let dev = Device::Cpu;
        for (n, c, o, [h, w], pads) in CASES {
            let win = window(3, 1, pads);
            let [oh, ow] = win.out_size(h, w);
            let k = Tensor::randn(0f32, 1., (o, c, 3, 3), &dev).unwrap();
            let g = Tensor::randn(0f32, 1., (n, o, oh, ow), &dev).unwrap();
            let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gs = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let dims = [n, c, h, w];
            let reference =
                values(&conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &win, 1).unwrap());
            for (variant, tolerance) in [(&F2, 1e-5), (&F4, 2e-5)] {
                let pick = |_, _, _| Some(variant);
                let plan = Winograd::backward(dims, o, &win, 1, &ks, None, pick).unwrap();
                let ours = plan.run(&gs, None, None).unwrap();
                let error = relative_error(&ours, &reference, largest(&reference));
                let label = format!("F({}) {n} {c}→{o} {h}×{w} {pads:?}", variant.m);
                assert!(error < tolerance, "{label}: {error}");
            }
        }
    }

    #[test]
    fn a_cache_transforms_each_kernel_once_per_direction_and_variant() {
        let dev = Device::Cpu;
        let win = window(3, 1, [1; 4]);
        let k = Tensor::randn(0f32, 1., (64, 64, 3, 3), &dev).unwrap();
        let cache = KernelCache::default();
        let kept = KernelCache::len;
        // Forward and input gradient on 28×28 (F(4×4)) and 14×14 (F(2×2)) maps: the same
        // values as without the cache, the second call from it, one kernel per pair.
        for (side, entries) in [(28, 2), (14, 4)] {
            let x = Tensor::randn(0f32, 1., (1, 64, side, side), &dev).unwrap();
            let forward = |cache| {
                values(&f64s(&conv2d_with_cache(&x, &k, None, &win, 1, None, cache).unwrap()))
            };
            let backward = |cache| {
                let dims = [1, 64, side, side];
                values(&f64s(
                    &conv2d_backward_input_with_cache(&x, &k, dims, &win, 1, cache).unwrap(),
                ))
            };
            let (cold_forward, cold_backward) = (forward(None), backward(None));
            for _ in 0..2 {
                assert_eq!(forward(Some(&cache)), cold_forward, "{side}×{side}");
                assert_eq!(backward(Some(&cache)), cold_backward, "{side}×{side}");
            }
            assert_eq!(kept(&cache), entries, "{side}×{side}");
        }
        // Kept by tensor: a copy of the same values is another kernel.
        let copy = k.copy().unwrap();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            vec![1.0]
        };
        let first = cache.get(copy.id(), Derived::Winograd { tile: F2.m, flipped: false }, make);
        let again = cache.get(copy.id(), Derived::Winograd { tile: F2.m, flipped: false }, make);
        assert!(Arc::ptr_eq(&first, &again) && made.get() == 1);
        assert_eq!(kept(&cache), 5);
        assert_eq!(kept(&cache.clone()), 0, "a clone starts empty");
    }

    #[test]
    fn maps_under_14x14_stay_with_gemm_even_for_large_kept_kernels() {
        let dev = Device::Cpu;
        let same = window(3, 1, [1; 4]);
        let cache = KernelCache::default();
        let k = Tensor::randn(0f32, 1., (256, 256, 3, 3), &dev).unwrap();
        let ks = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let cached = || Some(Cached { cache: &cache, kernel: k.id() });
        assert!(Winograd::new([1, 256, 7, 7], 256, &same, 1, &ks, cached()).is_none());
        assert!(Winograd::transposed([1, 256, 7, 7], 256, &same, 1, &ks, cached()).is_none());
        assert!(Winograd::new([1, 256, 14, 14], 256, &same, 1, &ks, cached()).is_some());
        assert!(Winograd::transposed([1, 256, 14, 14], 256, &same, 1, &ks, cached()).is_some());
        // What runs there instead, with the model's cache: the f64 gemm path's values.
        let x = Tensor::randn(0f32, 1., (2, 256, 7, 7), &dev).unwrap();
        let g = Tensor::randn(0f32, 1., (2, 256, 7, 7), &dev).unwrap();
        let dims = [2, 256, 7, 7];
        let pairs = [
            (
                conv2d_with_cache(&x, &k, None, &same, 1, None, Some(&cache)).unwrap(),
                conv2d(&f64s(&x), &f64s(&k), None, &same, 1, None).unwrap(),
            ),
            (
                conv2d_backward_input_with_cache(&g, &k, dims, &same, 1, Some(&cache)).unwrap(),
                conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &same, 1).unwrap(),
            ),
        ];
        for (ours, exact) in pairs {
            let worst = values(&f64s(&ours))
                .iter()
                .zip(values(&exact))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-3, "{worst}");
        }
    }

    #[test]
    fn winograd_takes_only_plain_3x3_convs_on_large_maps() {
        let k = vec![0.5f32; 64 * 64 * 9];
        let same = window(3, 1, [1; 4]);
        assert!(Winograd::new([1, 64, 28, 28], 64, &same, 1, &k, None).is_some());
        assert!(Winograd::transposed([1, 64, 28, 28], 64, &same, 1, &k, None).is_some());
        // The forward of 128 → 32, not its input gradient (a conv of 32 channels); not
        // 64 → 32 either way.
        let k = vec![0.5f32; 128 * 64 * 9];
        assert!(Winograd::new([1, 128, 28, 28], 32, &same, 1, &k[..32 * 128 * 9], None).is_some());
        assert!(
            Winograd::transposed([1, 128, 28, 28], 32, &same, 1, &k[..32 * 128 * 9], None)
                .is_none()
        );
        assert!(Winograd::new([1, 64, 28, 28], 32, &same, 1, &k[..32 * 64 * 9], None).is_none());
        // At 14×14 (F(2×2)) 64 → 64, not 128 → 32 (below, with the other refusals).
        assert!(Winograd::new([1, 64, 14, 14], 64, &same, 1, &k[..64 * 64 * 9], None).is_some());
        assert!(
            Winograd::transposed([1, 32, 28, 28], 64, &same, 1, &k[..32 * 64 * 9], None).is_none()
        );
        let strided = window(3, 2, [1; 4]);
        let dilated = Window { dilation: [2, 2], ..same };
        let wide = window(3, 1, [3, 1, 1, 1]);
        for (dims, o, win, groups, k) in [
            ([1, 64, 28, 28], 64, strided, 1, &k[..]),
            ([1, 64, 28, 28], 64, dilated, 1, &k),
            ([1, 64, 28, 28], 64, same, 2, &k[..32 * 64 * 9]),
            ([1, 64, 7, 7], 64, same, 1, &k[..64 * 64 * 9]),
            ([1, 128, 14, 14], 32, same, 1, &k[..32 * 128 * 9]),
            ([1, 16, 28, 28], 64, same, 1, &k[..16 * 64 * 9]),
            ([1, 64, 28, 28], 16, same, 1, &k[..16 * 64 * 9]),
            ([1, 64, 28, 28], 64, window(5, 1, [2; 4]), 1, &vec![0.5; 64 * 64 * 25]),
        ] {
            assert!(Winograd::new(dims, o, &win, groups, k, None).is_none(), "{dims:?} {win:?}");
            assert!(
                Winograd::transposed(dims, o, &win, groups, k, None).is_none(),
                "{dims:?} {win:?}"
            );
        }
        assert!(Winograd::transposed([1, 64, 28, 28], 64, &wide, 1, &k, None).is_none());
    }
}
