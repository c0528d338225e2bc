//! Max and average pooling, forward and backward, over any window, in f32 and f64; windows
//! that tile the map (the common 2×2 max pool) take tiled loops without per-window tap lists.
//!
//! The gradient of a 2×2 max pool (stride 2, no padding) in f32 runs four tiles at a time with
//! SSE2, which every x86-64 CPU has ([`max_2x2_backward`]).
//!
//! Why not plain Rust: the compiler turns the float compares that find each tile's maximum
//! into branches, and ReLU outputs tie at 0 so often that they mispredict (the README's
//! "Measured" has the figures).

use std::ops::Range;

use candle_core::{DType, Tensor};
use num_traits::Zero;
use rayon::prelude::*;

use super::{Float, Scratch, Window, dims4, with_float, with_slice};
use crate::error::{Error, Result};

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

fn divisor(win: &Window, pool: Pool, rows: &[usize], cols: &[usize]) -> usize {
    match pool {
        Pool::Avg { count_include_pad: true } => win.kernel[0] * win.kernel[1],
        _ => rows.len() * cols.len(),
    }
    .max(1)
}

/// Each output's divisor (row-major, the same on every plane): its window's count for an
/// average pool; none for a max pool, which does not divide.
fn divisors<T: Float>(win: &Window, pool: Pool, [rows, cols]: Taps) -> Vec<T> {
    match pool {
        Pool::Max => Vec::new(),
        Pool::Avg { .. } => rows
            .iter()
            .flat_map(|ry| cols.iter().map(move |cx| divisor(win, pool, ry, cx)))
            .map(|d| T::from_f64(d as f64))
            .collect(),
    }
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

/// Gradient of an average pool over tiles `[kh, kw]` (no padding, so every divisor is
/// `kh·kw`): each output's share written to its tile's cells a tile row at a time (`dx`
/// starts zeroed; cells outside every tile stay so). DenseNet's 2×2 transitions took 1 ms
/// in all through the per-window tap lists.
fn avg_pool_tiles_backward<T: Float>(
    grad: &[T],
    w: usize,
    [kh, kw]: [usize; 2],
    dx: &mut [T],
    ow: usize,
) {
    #[inline(always)]
    fn rows<T: Float>(grad: &[T], w: usize, [kh, kw]: [usize; 2], dx: &mut [T], ow: usize) {
        let share = T::one() / T::from_f64((kh * kw) as f64);
        for (oy, g_row) in grad.chunks_exact(ow.max(1)).enumerate() {
            for ky in 0..kh {
                let row = &mut dx[(oy * kh + ky) * w..][..ow * kw];
                for (cells, &g) in row.chunks_exact_mut(kw).zip(g_row) {
                    cells.fill(g * share);
                }
            }
        }
    }
    match kw {
        2 => rows(grad, w, [kh, 2], dx, ow),
        _ => rows(grad, w, [kh, kw], dx, ow),
    }
}

/// One plane pooled through the window's separable form: the input rows of each output
/// row's windows reduced into one line (whole rows at a time, which vectorises), then each
/// output reduced from its columns of that line. A 3×3, stride-2 pool reads each cell about
/// 2.25 times this way instead of 9 times through per-window tap lists. Padded cells are not
/// among the taps, so they never win a maximum. The columns whose windows lie inside the map
/// (`inside`) are reduced by [`reduce_inside`] without tap lists; the edges use the lists.
/// Compiled for AVX2 where the CPU has it, as the crate's baseline is SSE2.
fn pool_plane_separable<T: Float>(plane: Plane<T>, taps: Taps, out: Out<T>, pool: Pool) {
    #[inline(always)]
    fn by_pool<T: Float>(plane: Plane<T>, taps: Taps, out: Out<T>, pool: Pool) {
        match pool {
            // A select rather than a branch: ReLU outputs tie at 0 and would mispredict.
            Pool::Max => separable(plane, taps, out, |m, v| if v > m { v } else { m }, |m, _| m),
            Pool::Avg { .. } => separable(plane, taps, out, |s, v| s + v, |s, d| s / d),
        }
    }
    #[cfg(target_arch = "x86_64")]
    if super::direct::available() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Float>(plane: Plane<T>, taps: Taps, out: Out<T>, pool: Pool) {
            by_pool(plane, taps, out, pool)
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { avx2(plane, taps, out, pool) };
    }
    by_pool(plane, taps, out, pool)
}

/// Per output row and per output column, the input rows and columns its windows read.
type Taps<'a> = [&'a [Vec<usize>]; 2];

/// A plane of rows `w` wide.
#[derive(Clone, Copy)]
struct Plane<'a, T> {
    cells: &'a [T],
    w: usize,
}

/// A plane's outputs, their divisors (see [`divisors`]), the columns whose windows lie
/// inside the map, and the window across: `[kernel, stride, dilation]`.
struct Out<'a, T> {
    values: &'a mut [T],
    divisors: &'a [T],
    inside: Range<usize>,
    across: [usize; 3],
}

/// [`pool_plane_separable`] for one reduction: `fold` combines two cells, `finish` turns a
/// window's fold into its output given its divisor (never read for a max pool, which has
/// none).
#[inline(always)]
fn separable<T: Float>(
    Plane { cells, w }: Plane<T>,
    [rows, cols]: Taps,
    Out { values, divisors, inside, across }: Out<T>,
    fold: impl Fn(T, T) -> T + Copy,
    finish: impl Fn(T, T) -> T + Copy,
) {
    let ow = cols.len().max(1);
    let divisor = |oy: usize, ox: usize| divisors.get(oy * ow + ox).copied().unwrap_or(T::one());
    // A thread's buffers, not two allocations per plane: DenseNet's last pool has 1,024
    // planes of 14×14.
    let mut buffers = Scratch::<T>::take(2 * w);
    let (mut line, mut spare) = buffers.values().split_at_mut(w);
    let row = |iy: usize| &cells[iy * w..][..w];
    for (oy, (ry, out_row)) in rows.iter().zip(values.chunks_exact_mut(ow)).enumerate() {
        // Every row folds into a buffer it does not read: folding the line in place lets
        // LLVM turn a max into a masked store of the winners, which AMD microcodes.
        match ry.as_slice() {
            [] => {
                out_row.fill(T::zero());
                continue;
            }
            [only] => line.copy_from_slice(row(*only)),
            [first, second, rest @ ..] => {
                for ((l, &a), &b) in line.iter_mut().zip(row(*first)).zip(row(*second)) {
                    *l = fold(a, b);
                }
                for &iy in rest {
                    for ((s, &l), &v) in spare.iter_mut().zip(line.iter()).zip(row(iy)) {
                        *s = fold(l, v);
                    }
                    std::mem::swap(&mut line, &mut spare);
                }
            }
        }
        let edges = (0..inside.start).chain(inside.end..cols.len());
        for (o, cx) in edges.map(|ox| (ox, &cols[ox])) {
            let mut taps = cx.iter().map(|&ix| line[ix]);
            out_row[o] = match taps.next() {
                Some(first) => finish(taps.fold(first, fold), divisor(oy, o)),
                None => T::zero(),
            };
        }
        if let Some(cx) = cols.get(inside.start).filter(|_| !inside.is_empty()) {
            // The windows inside the map all hold as many cells.
            let d = divisor(oy, inside.start);
            reduce_inside(&line[cx[0]..], across, &mut out_row[inside.clone()], fold, |v| {
                finish(v, d)
            });
        }
    }
}

/// The columns `lo..hi` of outputs whose windows read only cells inside a map `w` wide.
fn inside_columns(win: &Window, w: usize, ow: usize) -> Range<usize> {
    let first = win.inside(1, 0, w, ow);
    let last = win.inside(1, win.kernel[1].saturating_sub(1), w, ow);
    let (lo, hi) = (first.0.max(last.0), first.1.min(last.1));
    lo..hi.max(lo)
}

/// `out[i]` = `finish` of `line[i·stride + k·dilation]` for k < kernel, folded by `fold`
/// in order: the windows of the outputs whose taps all lie in the map, the first one
/// starting at `line[0]`. The common windows get their sizes as constants, so the loop
/// vectorises.
#[inline(always)]
fn reduce_inside<T: Float>(
    line: &[T],
    [kernel, stride, dilation]: [usize; 3],
    out: &mut [T],
    fold: impl Fn(T, T) -> T + Copy,
    finish: impl Fn(T) -> T + Copy,
) {
    match (kernel, stride, dilation) {
        (2, 2, 1) => reduce_fixed::<T, 2, 2>(line, out, fold, finish),
        (3, 2, 1) => reduce_fixed::<T, 3, 2>(line, out, fold, finish),
        (3, 1, 1) => reduce_fixed::<T, 3, 1>(line, out, fold, finish),
        (kw, sw, dw) => {
            for (i, o) in out.iter_mut().enumerate() {
                let taps = (1..kw).map(|k| line[i * sw + k * dw]);
                *o = finish(taps.fold(line[i * sw], fold));
            }
        }
    }
}

/// [`reduce_inside`] for a window of `K` columns at stride `S`, no dilation. `line` is read
/// as groups of `S` (a window's tap `k` is cell `k % S` of group `i + k / S`), so a strided
/// window becomes fixed offsets, which LLVM vectorises.
#[inline(always)]
fn reduce_fixed<T: Float, const K: usize, const S: usize>(
    line: &[T],
    out: &mut [T],
    fold: impl Fn(T, T) -> T,
    finish: impl Fn(T) -> T,
) {
    let reduce = |taps: &dyn Fn(usize) -> T| finish((1..K).fold(taps(0), |a, k| fold(a, taps(k))));
    let (groups, _) = line.as_chunks::<S>();
    let span = (K - 1) / S + 1;
    let mut done = 0;
    for (o, groups) in out.iter_mut().zip(groups.windows(span)) {
        *o = reduce(&|k| groups[k / S][k % S]);
        done += 1;
    }
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        *o = reduce(&|k| line[i * S + k]);
    }
}

/// Pooling forward on `[n, c, h, w]`.
pub fn pool2d(x: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let [n, c, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    let (rows, cols) = (window_taps(win, 0, h, oh), window_taps(win, 1, w, ow));
    let tiles = tiles(win).filter(|_| pool == Pool::Max);
    let inside = inside_columns(win, w, ow);
    let across = [win.kernel[1], win.stride[1], win.dilation[1]];
    with_float!(x.dtype(), T => with_slice::<T, _>(x, |src| {
        let mut out = vec![T::zero(); n * c * oh * ow];
        let divisors = divisors::<T>(win, pool, [&rows, &cols]);
        for_each_plane(src, h * w, &mut out, oh * ow, |cells, values| {
            if let Some([kh, kw]) = tiles {
                return max_pool_tiles(cells, w, [kh, kw], values, ow);
            }
            let out = Out { values, divisors: &divisors, inside: inside.clone(), across };
            pool_plane_separable(Plane { cells, w }, [&rows, &cols], out, pool);
        });
        Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
    }))
}

/// The max pool's gradient for one plane, added into `dx`: each output's gradient goes to
/// its window's first maximum in row-major order. Separable like the forward: per output
/// row, each input column's maximum over the window's rows and the first row holding it
/// (whole rows at a time), then per output the best column, the earlier row winning ties
/// (the earliest cell of the maximum in row-major order), then the earlier column.
fn max_backward_separable<T: Float>(
    plane: &[T],
    grad: &[T],
    w: usize,
    [rows, cols]: Taps,
    (inside, across): (Range<usize>, [usize; 3]),
    dx: &mut [T],
) {
    let (mut best, mut spare) = (vec![T::zero(); w], vec![T::zero(); w]);
    // Per column, which of the window's rows holds its maximum first: u32 like the f32
    // lanes it is selected beside, so the loop vectorises.
    let (mut first_row, mut spare_rows) = (vec![0u32; w], vec![0u32; w]);
    for (ry, g_row) in rows.iter().zip(grad.chunks_exact(cols.len().max(1))) {
        let Some(&top) = ry.first() else { continue };
        best.copy_from_slice(&plane[top * w..][..w]);
        first_row.fill(0);
        for (k, &iy) in (1..).zip(&ry[1..]) {
            // Into other buffers, as in `separable`: no conditional stores.
            let row = &plane[iy * w..][..w];
            let olds = best.iter().zip(&first_row).zip(row);
            for ((s, r), ((&b, &f), &v)) in spare.iter_mut().zip(&mut spare_rows).zip(olds) {
                let wins = v > b;
                *s = if wins { v } else { b };
                *r = if wins { k } else { f };
            }
            std::mem::swap(&mut best, &mut spare);
            std::mem::swap(&mut first_row, &mut spare_rows);
        }
        // `|` and `&`, not `||` and `&&`: a select, not branches that random-looking
        // activations mispredict.
        let pick = |at: usize, ix: usize| {
            let (v, b) = (best[ix], best[at]);
            let wins = (v > b) | ((v == b) & (first_row[ix] < first_row[at]));
            if wins { ix } else { at }
        };
        let mut place = |at: usize, go: T| dx[ry[first_row[at] as usize] * w + at] += go;
        for ox in (0..inside.start).chain(inside.end..cols.len()) {
            let Some((&left, rest)) = cols[ox].split_first() else { continue };
            place(rest.iter().fold(left, |at, &ix| pick(at, ix)), g_row[ox]);
        }
        if let Some(&left) = cols.get(inside.start).and_then(|cx| cx.first()) {
            first_max_inside(left, across, &g_row[inside.clone()], pick, &mut place);
        }
    }
}

/// For each output whose window lies inside the map, the window's first maximum (by
/// `pick`, from its first column `left + i·stride`) and its gradient go to `place`. The
/// common windows get their sizes as constants, so the taps are unrolled rather than read
/// from per-window lists (resnet50's max pool's gradient took four times its forward).
#[inline(always)]
fn first_max_inside<T: Float>(
    left: usize,
    [kernel, stride, dilation]: [usize; 3],
    grads: &[T],
    pick: impl Fn(usize, usize) -> usize,
    place: &mut impl FnMut(usize, T),
) {
    #[inline(always)]
    fn fixed<T: Float, const K: usize, const S: usize>(
        left: usize,
        grads: &[T],
        pick: impl Fn(usize, usize) -> usize,
        place: &mut impl FnMut(usize, T),
    ) {
        for (i, &go) in grads.iter().enumerate() {
            let first = left + i * S;
            place((1..K).fold(first, |at, k| pick(at, first + k)), go);
        }
    }
    match (kernel, stride, dilation) {
        (3, 2, 1) => fixed::<T, 3, 2>(left, grads, pick, place),
        (2, 2, 1) => fixed::<T, 2, 2>(left, grads, pick, place),
        (3, 1, 1) => fixed::<T, 3, 1>(left, grads, pick, place),
        _ => {
            for (i, &go) in grads.iter().enumerate() {
                let first = left + i * stride;
                place((1..kernel).fold(first, |at, k| pick(at, first + k * dilation)), go);
            }
        }
    }
}

/// The average pool's gradient for one plane, added into `dx`: per output row, each
/// output's gradient over its divisor (`divisors`, one per output of the plane) spread over
/// its window's columns into one line, then that line added to each of the window's rows
/// (whole rows at a time).
fn avg_backward_separable<T: Float>(
    grad: &[T],
    w: usize,
    [rows, cols]: Taps,
    divisors: &[T],
    dx: &mut [T],
) {
    let ow = cols.len().max(1);
    let mut line = vec![T::zero(); w];
    let mut shares = vec![T::zero(); ow];
    for ((ry, g_row), d_row) in
        rows.iter().zip(grad.chunks_exact(ow)).zip(divisors.chunks_exact(ow))
    {
        for ((s, &g), &d) in shares.iter_mut().zip(g_row).zip(d_row) {
            *s = g / d;
        }
        line.fill(T::zero());
        for (cx, &share) in cols.iter().zip(&shares) {
            for &ix in cx {
                line[ix] += share;
            }
        }
        for &iy in ry {
            dx[iy * w..][..w].iter_mut().zip(&line).for_each(|(d, &l)| *d += l);
        }
    }
}

/// Gradient of [`pool2d`] with respect to its input `x`, given the output gradient.
pub fn pool2d_backward(x: &Tensor, grad: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let dims @ [_, _, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    let (rows, cols) = (window_taps(win, 0, h, oh), window_taps(win, 1, w, ow));
    let inside = (inside_columns(win, w, ow), [win.kernel[1], win.stride[1], win.dilation[1]]);
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
            let tiles = tiles(win);
            let divisors = divisors::<T>(win, pool, [&rows, &cols]);
            for_each_plane(&planes, 1, &mut dx, h * w, |item, dx| {
                let Some(&(plane, g)) = item.first() else { return };
                match (tiles, pool) {
                    (Some(tile), Pool::Max) => return max_pool_tiles_backward(plane, g, w, tile, dx, ow),
                    (Some(tile), Pool::Avg { .. }) => return avg_pool_tiles_backward(g, w, tile, dx, ow),
                    (None, _) => {}
                }
                match pool {
                    Pool::Max => max_backward_separable(plane, g, w, [&rows, &cols], inside.clone(), dx),
                    Pool::Avg { .. } => avg_backward_separable(g, w, [&rows, &cols], &divisors, dx),
                }
            });
            Ok(Tensor::from_vec(dx, dims.to_vec(), x.device())?)
        })
    }))
}

/// Writes the gradient of one plane (rows of `w`) into `dx`: each tile's gradient in `grad`
/// (rows of `ow`) goes to the tile's first maximum in row-major order, its other cells get
/// 0; cells outside every tile are left as they are. False (nothing written) off x86-64 or
/// when the sizes do not fit.
pub(super) fn max_2x2_backward(
    plane: &[f32],
    grad: &[f32],
    w: usize,
    dx: &mut [f32],
    ow: usize,
) -> bool {
    let oh = grad.len() / ow.max(1);
    let fits = cfg!(target_arch = "x86_64")
        && ow * 2 <= w
        && grad.len() == oh * ow
        && plane.len() >= 2 * oh * w
        && dx.len() == plane.len();
    if !fits {
        return false;
    }
    for ((rows, dx_rows), g_row) in
        plane.chunks_exact(2 * w).zip(dx.chunks_exact_mut(2 * w)).zip(grad.chunks_exact(ow))
    {
        let (top, bottom) = rows.split_at(w);
        let (dx_top, dx_bottom) = dx_rows.split_at_mut(w);
        let (top, bottom) = (&top[..2 * ow], &bottom[..2 * ow]);
        let (dx_top, dx_bottom) = (&mut dx_top[..2 * ow], &mut dx_bottom[..2 * ow]);
        let (top_quads, top_rest) = top.as_chunks::<8>();
        let (bottom_quads, bottom_rest) = bottom.as_chunks::<8>();
        let (dx_top_quads, dx_top_rest) = dx_top.as_chunks_mut::<8>();
        let (dx_bottom_quads, dx_bottom_rest) = dx_bottom.as_chunks_mut::<8>();
        let (g_quads, g_rest) = g_row.as_chunks::<4>();
        #[cfg(target_arch = "x86_64")]
        for ((((t, b), g), dt), db) in top_quads
            .iter()
            .zip(bottom_quads)
            .zip(g_quads)
            .zip(dx_top_quads.iter_mut())
            .zip(dx_bottom_quads.iter_mut())
        {
            sse2::four_tiles(t, b, g, dt, db);
        }
        let rest = top_rest.chunks_exact(2).zip(bottom_rest.chunks_exact(2)).zip(g_rest);
        let dx_rest = dx_top_rest.chunks_exact_mut(2).zip(dx_bottom_rest.chunks_exact_mut(2));
        for (((t, b), &g), (dt, db)) in rest.zip(dx_rest) {
            let cells = [t[0], t[1], b[0], b[1]];
            let at = tile_first_max(cells);
            let pick = |cell: usize| if cell == at { g } else { 0.0 };
            [dt[0], dt[1], db[0], db[1]] = [pick(0), pick(1), pick(2), pick(3)];
        }
    }
    true
}

/// The index of a tile's first maximum in row-major order, as the forward chooses it: a
/// cell wins only over a strictly smaller one.
fn tile_first_max([a, b, c, d]: [f32; 4]) -> usize {
    let (upper, upper_at) = if b > a { (b, 1) } else { (a, 0) };
    let (lower, lower_at) = if d > c { (d, 3) } else { (c, 2) };
    if lower > upper { lower_at } else { upper_at }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::*;

    /// [`super::tile_first_max`] for four adjacent tiles: their top and bottom rows `t` and `b`,
    /// their gradients `g`, written to `dt` and `db`.
    pub(super) fn four_tiles(
        t: &[f32; 8],
        b: &[f32; 8],
        g: &[f32; 4],
        dt: &mut [f32; 8],
        db: &mut [f32; 8],
    ) {
        // SAFETY: SSE2 is part of x86-64; every load and store is within the arrays.
        unsafe {
            let load = |p: *const f32| _mm_loadu_ps(p);
            let (t0, t1) = (load(t.as_ptr()), load(t.as_ptr().add(4)));
            let (b0, b1) = (load(b.as_ptr()), load(b.as_ptr().add(4)));
            // Left and right cells of the four tiles.
            let (tl, tr) =
                (_mm_shuffle_ps::<0b10_00_10_00>(t0, t1), _mm_shuffle_ps::<0b11_01_11_01>(t0, t1));
            let (bl, br) =
                (_mm_shuffle_ps::<0b10_00_10_00>(b0, b1), _mm_shuffle_ps::<0b11_01_11_01>(b0, b1));
            // maxps(x, y) is `x > y ? x : y`, the forward's order.
            let (upper, upper_right) = (_mm_max_ps(tr, tl), _mm_cmpgt_ps(tr, tl));
            let (lower, lower_right) = (_mm_max_ps(br, bl), _mm_cmpgt_ps(br, bl));
            let below = _mm_cmpgt_ps(lower, upper);
            let grads = _mm_loadu_ps(g.as_ptr());
            let above = _mm_andnot_ps(below, grads);
            let under = _mm_and_ps(below, grads);
            let top_left = _mm_andnot_ps(upper_right, above);
            let top_right = _mm_and_ps(upper_right, above);
            let bottom_left = _mm_andnot_ps(lower_right, under);
            let bottom_right = _mm_and_ps(lower_right, under);
            _mm_storeu_ps(dt.as_mut_ptr(), _mm_unpacklo_ps(top_left, top_right));
            _mm_storeu_ps(dt.as_mut_ptr().add(4), _mm_unpackhi_ps(top_left, top_right));
            _mm_storeu_ps(db.as_mut_ptr(), _mm_unpacklo_ps(bottom_left, bottom_right));
            _mm_storeu_ps(db.as_mut_ptr().add(4), _mm_unpackhi_ps(bottom_left, bottom_right));
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::kernels::testing::window;

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

    #[test]
    fn overlapping_padded_and_dilated_pools_and_their_gradients_match_a_loop_over_each_window() {
        // ResNet's 3×3 stride-2 max pool with one pixel of padding, an asymmetric pad, a
        // dilated window, DenseNet's 2×2 stride-2 average, and averages with and without
        // the padding counted, on odd sizes. The wide maps run the windows inside the map
        // through the fixed-size loops, over whole vectors and a tail. Inputs in steps of
        // 0.5 tie often, so the max pool's gradient must find each window's first maximum
        // in row-major order.
        let windows = [
            window(3, 2, [1, 1, 1, 1]),
            window(3, 1, [0, 2, 1, 0]),
            window(2, 2, [0; 4]),
            window(3, 2, [0; 4]),
            Window { kernel: [2, 3], stride: [1, 2], dilation: [2, 2], pads: [1, 0, 0, 2] },
            // Stride 3 across, with and without padding.
            Window { kernel: [3, 3], stride: [2, 3], dilation: [1, 1], pads: [1, 2, 1, 2] },
            Window { kernel: [1, 4], stride: [1, 3], dilation: [1, 1], pads: [0; 4] },
        ];
        let pools = [
            Pool::Max,
            Pool::Avg { count_include_pad: true },
            Pool::Avg { count_include_pad: false },
        ];
        for ((h, w), win) in
            [(9, 11), (5, 42), (4, 53)].into_iter().flat_map(|hw| windows.map(|w| (hw, w)))
        {
            let win = &win;
            let dev = Device::Cpu;
            let x = (Tensor::randn(0f32, 2., (2, 3, h, w), &dev).unwrap().round().unwrap() / 2.)
                .unwrap();
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let [oh, ow] = win.out_size(h, w);
            let g = Tensor::randn(0f32, 1., (2, 3, oh, ow), &dev).unwrap();
            let gs = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for pool in pools {
                let mut expected = Vec::new();
                let mut expected_dx = vec![0f32; xs.len()];
                let mut gs = gs.iter();
                for (p, plane) in xs.chunks_exact(h * w).enumerate() {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            // (index in the batch, value) of each cell inside the map.
                            let mut cells = Vec::new();
                            for ky in 0..win.kernel[0] {
                                for kx in 0..win.kernel[1] {
                                    let iy = (oy * win.stride[0] + ky * win.dilation[0]) as isize
                                        - win.pads[0] as isize;
                                    let ix = (ox * win.stride[1] + kx * win.dilation[1]) as isize
                                        - win.pads[1] as isize;
                                    if (0..h as isize).contains(&iy)
                                        && (0..w as isize).contains(&ix)
                                    {
                                        let at = iy as usize * w + ix as usize;
                                        cells.push((p * h * w + at, plane[at]));
                                    }
                                }
                            }
                            let go = *gs.next().unwrap();
                            expected.push(match pool {
                                Pool::Max => {
                                    let first = cells
                                        .iter()
                                        .copied()
                                        .reduce(|a, b| if b.1 > a.1 { b } else { a })
                                        .unwrap();
                                    expected_dx[first.0] += go;
                                    first.1
                                }
                                Pool::Avg { count_include_pad } => {
                                    let count = if count_include_pad {
                                        win.kernel[0] * win.kernel[1]
                                    } else {
                                        cells.len()
                                    };
                                    for &(at, _) in &cells {
                                        expected_dx[at] += go / count as f32;
                                    }
                                    cells.iter().map(|c| c.1).sum::<f32>() / count as f32
                                }
                            });
                        }
                    }
                }
                let ours = pool2d(&x, win, pool).unwrap().flatten_all().unwrap();
                for (a, b) in ours.to_vec1::<f32>().unwrap().iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-6, "{win:?} {pool:?}: {a} against {b}");
                }
                let dx = pool2d_backward(&x, &g, win, pool).unwrap().flatten_all().unwrap();
                for (a, b) in dx.to_vec1::<f32>().unwrap().iter().zip(&expected_dx) {
                    assert!((a - b).abs() < 1e-5, "{win:?} {pool:?} gradient: {a} against {b}");
                }
            }
        }
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
