//! Winograd F(2×2, 3×3) convolution in f32: 3×3 stride-1 convs (ResNet, VGG and DenseNet
//! are mostly made of them) with 16 multiplies per 2×2 output block where the direct kernel
//! and gemm take 36, the forward and the input gradient (the conv of the output gradient by
//! the flipped kernel).
//!
//! Each 4×4 input patch `d` (patches overlap by two) becomes `Bᵀ·d·B`, each 3×3 filter
//! `G·g·Gᵀ`; for each of the 16 positions the products summed over input channels are one
//! gemm (`[filters, channels]·[channels, tiles]`), and `Aᵀ·m·A` turns each tile's 16 sums
//! into its 2×2 outputs (Lavin & Gray, 2015). The transforms use only ±1 and ½, so results
//! stay within a few float roundings of the direct sum. Tiles go in blocks of whole tile
//! rows, each block's transforms and products in cache, blocks split over the threads.
//!
//! The passes are written over whole rows of tiles, so every loop is a long one over
//! contiguous slices: the input's rows are split into even and odd columns first (tile `t`
//! reads columns `2t..2t+4`: evens `t, t+1` and odds `t, t+1`), and the row-transformed
//! values into even and odd rows (tile row `r` reads rows `2r..2r+4`).

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::conv::for_each_item;
use super::matmul::{Mat, matmul};
use super::relu::{Clamp, activate};
use super::{Window, vectorised};
use crate::error::{Error, Result};

/// Transformed values per tile (4×4).
const TILE: usize = 16;
/// Tiles per block, about: a block's transformed input and products (`16·(channels +
/// filters)` values per tile) stay in the core's L2 for up to a few hundred channels.
const BLOCK_TILES: usize = 112;

/// A 3×3, stride-1 convolution of one image, ready to run: geometry and the transformed
/// kernel, built once per call and shared by every image of a batch.
pub(super) struct Winograd {
    /// Input channels, height and width of one image.
    source: [usize; 3],
    /// Output channels.
    filters: usize,
    /// Output `[oh, ow]`.
    out: [usize; 2],
    /// Zeros above and left of the input.
    pads: [usize; 2],
    /// Rows and columns of 2×2 output tiles (the last ones cut where `oh`, `ow` are odd).
    tiles: [usize; 2],
    /// `G·g·Gᵀ` for each filter `g`, `[filters][16][channels]`: position `ξ`'s matrix is
    /// rows `16·channels` apart.
    kernel: Vec<f32>,
}

impl Winograd {
    /// The forward conv of `[n, c, h, w]` by `ks` (`[o, c, 3, 3]`), or None where it is not
    /// a 3×3 stride-1 conv without groups and dilation, or too small for this to pay.
    pub(super) fn new(
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
    ) -> Option<Winograd> {
        if !plain_3x3(win, groups) || ks.len() != o * c * 9 {
            return None;
        }
        let [top, left, bottom, right] = win.pads;
        let out = [(h + top + bottom).checked_sub(2)?, (w + left + right).checked_sub(2)?];
        Winograd::plan([c, h, w], o, out, [top, left], || {
            transform_kernel(o, c, ks, |f, ch| (f * c + ch) * 9, false)
        })
    }

    /// The input gradient of that conv: the conv of the output gradient `[n, o, oh, ow]`,
    /// padded by two less the forward's padding on each side, by the kernel flipped with its
    /// channels swapped. None where [`Winograd::new`] would be, or a padding passes two.
    pub(super) fn transposed(
        [_, c, h, w]: [usize; 4],
        o: usize,
        win: &Window,
        groups: usize,
        ks: &[f32],
    ) -> Option<Winograd> {
        let [top, left, bottom, right] = win.pads;
        if !plain_3x3(win, groups)
            || ks.len() != o * c * 9
            || top.max(left).max(bottom).max(right) > 2
        {
            return None;
        }
        let [oh, ow] = win.out_size(h, w);
        Winograd::plan([o, oh, ow], c, [h, w], [2 - top, 2 - left], || {
            transform_kernel(c, o, ks, |ch, f| (f * c + ch) * 9, true)
        })
    }

    fn plan(
        source @ [c, ..]: [usize; 3],
        filters: usize,
        out @ [oh, ow]: [usize; 2],
        pads: [usize; 2],
        kernel: impl FnOnce() -> Vec<f32>,
    ) -> Option<Winograd> {
        // Small maps: a 7×7 map's 16 tiles hold 64 outputs for 49, gemm runs the products
        // poorly at so few tiles, and the kernel's transform (per call) is a large part.
        // Few channels: gemm runs a short sum poorly, and the transforms cost as much as the
        // products save.
        let worth = oh * ow >= MIN_PIXELS
            && c >= MIN_CHANNELS
            && filters >= MIN_FILTERS
            && c * filters >= MIN_CHANNELS * MIN_CHANNELS;
        worth.then(|| Winograd {
            source,
            filters,
            out,
            pads,
            tiles: [oh.div_ceil(2), ow.div_ceil(2)],
            kernel: kernel(),
        })
    }

    fn image_len(&self) -> usize {
        self.source.iter().product()
    }

    fn out_len(&self) -> usize {
        self.filters * self.out[0] * self.out[1]
    }

    /// Tile rows per block: about [`BLOCK_TILES`] tiles.
    fn block_rows(&self) -> usize {
        let [rows, cols] = self.tiles;
        (BLOCK_TILES / cols).clamp(1, rows)
    }

    /// Values of a block's transformed input and products.
    fn block_len(&self, rows: usize) -> usize {
        TILE * (self.source[0] + self.filters) * rows * self.tiles[1]
    }

    /// The per-channel working space of a block of `rows` tile rows: `2·rows + 2` input
    /// rows split into evens and odds (`tiles + 1` each), then the four row-transformed
    /// planes by row parity, `rows + 1` tile rows each; the output's eight
    /// column-transformed rows fit in the same space.
    fn work_len(&self, rows: usize) -> usize {
        let cols = self.tiles[1];
        let split = (2 * rows + 2) * 2 * (cols + 1);
        let rows_transformed = 4 * 2 * (rows + 1) * cols;
        split + rows_transformed.max(8 * rows * cols)
    }

    /// Whether an image on `threads` threads splits its blocks over them (each block then
    /// runs on one) rather than running its blocks one by one, each split over the threads.
    fn blocks_in_parallel(&self, threads: usize) -> bool {
        threads > 1 && self.tiles[0].div_ceil(self.block_rows()) >= 2 * threads
    }

    /// Scratch values one image on `threads` threads needs (see [`Winograd::image`]).
    fn scratch_len(&self, threads: usize) -> usize {
        let rows = self.block_rows();
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
        let n = xs.len() / self.image_len().max(1);
        if xs.len() != n * self.image_len() || bias.is_some_and(|b| b.len() != self.filters) {
            return Err(Error::Invalid(
                "Winograd conv given a batch or bias of the wrong size".into(),
            ));
        }
        let len = n * self.out_len();
        let mut out = Vec::with_capacity(len);
        // A batch runs one image per thread; a lone image gets them all.
        let threads = if n > 1 { 1 } else { rayon::current_num_threads() };
        for_each_item(
            &mut out.spare_capacity_mut()[..len],
            self.out_len(),
            xs,
            self.image_len(),
            self.scratch_len(threads),
            |img, y, scratch, threads| self.image(img, y, scratch, bias, clamp, threads),
        )?;
        #[allow(unsafe_code)]
        // SAFETY: `for_each_item` returned Ok having run every image, and each image's
        // blocks wrote every output row of every channel (see `image`).
        unsafe {
            out.set_len(len)
        };
        Ok(out)
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
        let rows = self.block_rows();
        let blocks: Vec<Range<usize>> =
            (0..self.tiles[0]).step_by(rows).map(|s| s..(s + rows).min(self.tiles[0])).collect();
        // Each block's output rows in every plane: together the blocks cover each plane.
        let lens: Vec<usize> =
            blocks.iter().map(|b| ((2 * b.end).min(oh) - 2 * b.start) * ow).collect();
        let parts = regroup(y.chunks_exact_mut(oh * ow), &lens);
        let jobs = blocks.into_iter().zip(parts);
        if !self.blocks_in_parallel(threads) {
            let (buffers, work) = scratch.split_at_mut(self.block_len(rows));
            return jobs.into_iter().try_for_each(|(block, planes)| {
                self.block(img, block, planes, buffers, work, bias, clamp, threads)
            });
        }
        // Dealt out in turn: the blocks are all alike but the last.
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
        let tiles = rows * self.tiles[1];
        let work_len = self.work_len(self.block_rows());
        let (transformed, products) = buffers.split_at_mut(TILE * c * tiles);
        let products = &mut products[..TILE * k * tiles];
        let first_row = 2 * block.start as isize - self.pads[0] as isize;
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
                            self.transform_input(plane, first_row, rows, work, &mut targets, ch);
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
                row_stride: TILE * c,
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
                            self.transform_output(products, f, tiles, work, plane, b, clamp);
                        }
                    },
                )
            },
        );
        Ok(())
    }

    /// `Bᵀ·d·B` of every tile of one channel `plane` in a block of `rows` tile rows whose
    /// first input row is `first_row`, into row `ch` of each position's `targets`.
    #[inline(always)]
    fn transform_input(
        &self,
        plane: &[f32],
        first_row: isize,
        rows: usize,
        work: &mut [f32],
        targets: &mut [&mut [f32]],
        ch: usize,
    ) {
        let [_, h, w] = self.source;
        let cols = self.tiles[1];
        let tiles = rows * cols;
        let (split, row_transformed) = work.split_at_mut((2 * rows + 2) * 2 * (cols + 1));
        // Padded input rows split into even and odd columns.
        let left = self.pads[1] as isize;
        for (r, halves) in split.chunks_exact_mut(2 * (cols + 1)).enumerate() {
            let y = first_row + r as isize;
            let (even, odd) = halves.split_at_mut(cols + 1);
            if !(0..h as isize).contains(&y) {
                even.fill(0.0);
                odd.fill(0.0);
                continue;
            }
            split_row(&plane[y as usize * w..][..w], left, even, odd);
        }
        // `d·B` along each row, into even- and odd-row planes per column position `j`.
        let plane_len = (rows + 1) * cols;
        for (r, halves) in split.chunks_exact(2 * (cols + 1)).enumerate() {
            let (even, odd) = halves.split_at(cols + 1);
            let (e0, e1, o0, o1) = (&even[..cols], &even[1..], &odd[..cols], &odd[1..]);
            let at = |j: usize| ((2 * j + r % 2) * plane_len + (r / 2) * cols)..;
            zip2(&mut row_transformed[at(0)][..cols], e0, e1, |a, b| a - b);
            zip2(&mut row_transformed[at(1)][..cols], o0, e1, |a, b| a + b);
            zip2(&mut row_transformed[at(2)][..cols], e1, o0, |a, b| a - b);
            zip2(&mut row_transformed[at(3)][..cols], o0, o1, |a, b| a - b);
        }
        // `Bᵀ·(d·B)` down each column: tile row `r` reads even rows `r, r+1`, odd `r, r+1`.
        for j in 0..4 {
            let even = &row_transformed[2 * j * plane_len..][..plane_len];
            let odd = &row_transformed[(2 * j + 1) * plane_len..][..plane_len];
            let (e0, e1, o0, o1) = (&even[..tiles], &even[cols..], &odd[..tiles], &odd[cols..]);
            zip2(stripe(targets[j], ch, tiles), e0, e1, |a, b| a - b);
            zip2(stripe(targets[4 + j], ch, tiles), o0, e1, |a, b| a + b);
            zip2(stripe(targets[8 + j], ch, tiles), e1, o0, |a, b| a - b);
            zip2(stripe(targets[12 + j], ch, tiles), o0, o1, |a, b| a - b);
        }
    }

    /// `Aᵀ·m·A` of every tile of output channel `f` in a block, with its bias and clamp,
    /// into its output rows `plane`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn transform_output(
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
        let m = |i: usize, j: usize| &products[((4 * i + j) * k + f) * tiles..][..tiles];
        // `Aᵀ·m` down each column: rows 0 and 1 of the output per column position `j`.
        for j in 0..4 {
            let (top, bottom) = work[2 * j * tiles..][..2 * tiles].split_at_mut(tiles);
            zip3(top, m(0, j), m(1, j), m(2, j), |a, b, c| a + b + c);
            zip3(bottom, m(1, j), m(2, j), m(3, j), |a, b, c| a - b - c);
        }
        let [_, ow] = self.out;
        let cols = self.tiles[1];
        let column =
            |j: usize, row: usize| &work[(2 * j + row % 2) * tiles + (row / 2) * cols..][..cols];
        // `(Aᵀ·m)·A` along each row, interleaved into the output's columns.
        for (row, out) in plane.chunks_exact_mut(ow).enumerate() {
            let (m0, m1, m2, m3) = (column(0, row), column(1, row), column(2, row), column(3, row));
            let mut pairs = out.chunks_exact_mut(2);
            for (t, pair) in (&mut pairs).enumerate() {
                pair[0].write(activate(m0[t] + m1[t] + m2[t] + bias, clamp));
                pair[1].write(activate(m1[t] - m2[t] - m3[t] + bias, clamp));
            }
            // An odd width's last column: the left half of the last tile.
            if let [last] = pairs.into_remainder() {
                let t = cols - 1;
                last.write(activate(m0[t] + m1[t] + m2[t] + bias, clamp));
            }
        }
    }
}

/// Output maps smaller than this stay with im2col + gemm (see [`Winograd::plan`]). Measured
/// at 2 threads, batch 1, median of 100: 256 → 256 channels at 14×14 took 1.7–2.1 ms here
/// against 1.6 by gemm.
const MIN_PIXELS: usize = 14 * 14 + 1;
/// Convs with fewer input channels than this, fewer filters than [`MIN_FILTERS`], or fewer
/// than this squared of both together stay with the direct kernel. Measured as above,
/// direct against Winograd: 32 → 128 at 28×28 0.47–0.50 ms against 0.56–0.60, the digits
/// network's 32 → 64 at 24×24 0.27 against 0.28–0.37 (and its input gradient, 64 → 32,
/// 265–300 µs against 287–293, criterion); 128 → 32 at 28×28 0.61–0.66 against 0.50–0.62,
/// 64 → 64 at 56×56 1.59 against 1.10.
const MIN_CHANNELS: usize = 64;
const MIN_FILTERS: usize = 32;

/// A 3×3 window, stride 1, no dilation, one group.
fn plain_3x3(win: &Window, groups: usize) -> bool {
    win.kernel == [3, 3] && win.stride == [1, 1] && win.dilation == [1, 1] && groups == 1
}

/// `G·g·Gᵀ` for each of `rows · cols` 3×3 filters `filter(row, col)` (flipped in both axes
/// when `flip`), laid out `[rows][16][cols]`.
fn transform_kernel(
    rows: usize,
    cols: usize,
    ks: &[f32],
    offset: impl Fn(usize, usize) -> usize + Sync,
    flip: bool,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * TILE * cols];
    // Per row: its filters tap-major, so each pass below is a loop over `cols`, then `G·g`.
    let buffers = || (vec![0.0; 9 * cols], vec![0.0; 12 * cols]);
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
                // `G·g`: four rows of three, from the filter's three rows.
                for j in 0..3 {
                    let tap = |i: usize| &taps[(3 * i + j) * cols..][..cols];
                    let (g0, g1, g2) = (tap(0), tap(1), tap(2));
                    stripe(half, j, cols).copy_from_slice(g0);
                    zip3(stripe(half, 3 + j, cols), g0, g1, g2, |a, b, c| 0.5 * (a + b + c));
                    zip3(stripe(half, 6 + j, cols), g0, g1, g2, |a, b, c| 0.5 * (a - b + c));
                    stripe(half, 9 + j, cols).copy_from_slice(g2);
                }
                // `(G·g)·Gᵀ`: each of those rows to four.
                for i in 0..4 {
                    let g = |j: usize| &half[(3 * i + j) * cols..][..cols];
                    let (g0, g1, g2) = (g(0), g(1), g(2));
                    stripe(out, 4 * i, cols).copy_from_slice(g0);
                    zip3(stripe(out, 4 * i + 1, cols), g0, g1, g2, |a, b, c| 0.5 * (a + b + c));
                    zip3(stripe(out, 4 * i + 2, cols), g0, g1, g2, |a, b, c| 0.5 * (a - b + c));
                    stripe(out, 4 * i + 3, cols).copy_from_slice(g2);
                }
            },
        );
    };
    if rows * cols >= 1 << 14 {
        out.par_chunks_exact_mut(TILE * cols).enumerate().for_each_init(buffers, row);
    } else {
        let mut buffers = buffers();
        out.chunks_exact_mut(TILE * cols).enumerate().for_each(|job| row(&mut buffers, job));
    }
    out
}

/// One input row, `left` zeros before it and zeros after, split into its even (`2t`) and
/// odd (`2t + 1`) columns.
#[inline(always)]
fn split_row(src: &[f32], left: isize, even: &mut [f32], odd: &mut [f32]) {
    let at = |x: isize| if (0..src.len() as isize).contains(&x) { src[x as usize] } else { 0.0 };
    // Pairs `t` whose columns `2t - left`, `2t + 1 - left` both lie in the row.
    let first = (left as usize).div_ceil(2);
    let end = ((src.len() as isize + left) / 2).clamp(first as isize, even.len() as isize) as usize;
    for t in (0..first).chain(end..even.len()) {
        let x = 2 * t as isize - left;
        even[t] = at(x);
        odd[t] = at(x + 1);
    }
    let start = 2 * first - left as usize;
    let pairs = src[start..].chunks_exact(2);
    for ((e, o), pair) in even[first..end].iter_mut().zip(&mut odd[first..end]).zip(pairs) {
        *e = pair[0];
        *o = pair[1];
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

/// `out[i] = f(a[i], b[i])`.
#[inline(always)]
fn zip2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn zip3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = f(a, b, c);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::testing::window;
    use crate::kernels::{conv2d, conv2d_backward_input};
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
            let plan = Winograd::new([n, c, h, w], o, &win, 1, &ks).expect("taken");
            let conv = |clamp| {
                values(&conv2d(&f64s(&x), &f64s(&k), Some(&f64s(&b)), &win, 1, clamp).unwrap())
            };
            // Relative to the unclamped sums: a clamp to ±0.5 does not make them smaller.
            let scale = largest(&conv(None));
            for clamp in [None, Some(Clamp::RELU), Some(Clamp { lo: -0.5, hi: 0.5 })] {
                let ours = plan.run(&xs, Some(&b.to_vec1::<f32>().unwrap()), clamp).unwrap();
                let error = relative_error(&ours, &conv(clamp), scale);
                assert!(error < 1e-5, "{n} {c}→{o} {h}×{w} {pads:?} {clamp:?}: {error}");
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
            let plan = Winograd::transposed(dims, o, &win, 1, &ks).expect("taken");
            let ours = plan.run(&gs, None, None).unwrap();
            let reference =
                values(&conv2d_backward_input(&f64s(&g), &f64s(&k), dims, &win, 1).unwrap());
            let error = relative_error(&ours, &reference, largest(&reference));
            assert!(error < 1e-5, "{n} {c}→{o} {h}×{w} {pads:?}: {error}");
        }
    }

    #[test]
    fn winograd_takes_only_plain_3x3_convs_on_large_maps() {
        let k = vec![0.5f32; 64 * 64 * 9];
        let same = window(3, 1, [1; 4]);
        assert!(Winograd::new([1, 64, 28, 28], 64, &same, 1, &k).is_some());
        assert!(Winograd::transposed([1, 64, 28, 28], 64, &same, 1, &k).is_some());
        // The forward of 128 → 32, not its input gradient (a conv of 32 channels); not
        // 64 → 32 either way.
        let k = vec![0.5f32; 128 * 64 * 9];
        assert!(Winograd::new([1, 128, 28, 28], 32, &same, 1, &k[..32 * 128 * 9]).is_some());
        assert!(Winograd::transposed([1, 128, 28, 28], 32, &same, 1, &k[..32 * 128 * 9]).is_none());
        assert!(Winograd::new([1, 64, 28, 28], 32, &same, 1, &k[..32 * 64 * 9]).is_none());
        assert!(Winograd::transposed([1, 32, 28, 28], 64, &same, 1, &k[..32 * 64 * 9]).is_none());
        let strided = window(3, 2, [1; 4]);
        let dilated = Window { dilation: [2, 2], ..same };
        let wide = window(3, 1, [3, 1, 1, 1]);
        for (dims, o, win, groups, k) in [
            ([1, 64, 28, 28], 64, strided, 1, &k[..]),
            ([1, 64, 28, 28], 64, dilated, 1, &k),
            ([1, 64, 28, 28], 64, same, 2, &k[..32 * 64 * 9]),
            ([1, 64, 7, 7], 64, same, 1, &k),
            ([1, 64, 14, 14], 64, same, 1, &k),
            ([1, 16, 28, 28], 64, same, 1, &k[..16 * 64 * 9]),
            ([1, 64, 28, 28], 16, same, 1, &k[..16 * 64 * 9]),
            ([1, 64, 28, 28], 64, window(5, 1, [2; 4]), 1, &vec![0.5; 64 * 64 * 25]),
        ] {
            assert!(Winograd::new(dims, o, &win, groups, k).is_none(), "{dims:?} {win:?}");
            assert!(Winograd::transposed(dims, o, &win, groups, k).is_none(), "{dims:?} {win:?}");
        }
        assert!(Winograd::transposed([1, 64, 28, 28], 64, &wide, 1, &k).is_none());
    }
}
