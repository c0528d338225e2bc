//! Max and average pooling, forward and backward, over any window, in f32 and f64; windows
//! that tile the map (the common 2×2 max pool) take tiled loops without per-window tap lists.
//!
//! The gradient of a 2×2 max pool (stride 2, no padding) in f32 runs four tiles at a time with
//! SSE2, which every x86-64 CPU has ([`max_2x2_backward`]).
//!
//! Why not plain Rust: the compiler turns the float compares that find each tile's maximum
//! into branches, and ReLU outputs tie at 0 so often that they mispredict (the README's
//! "Measured" has the figures).

use candle_core::{DType, Tensor, WithDType};
use num_traits::Zero;
use rayon::prelude::*;

use super::{Float, Window, dims4, with_float, with_slice};
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

/// One plane pooled through the window's separable form: the input rows of each output
/// row's windows reduced into one line (whole rows at a time, which vectorises), then each
/// output reduced from its columns of that line. A 3×3, stride-2 pool reads each cell about
/// 2.25 times this way instead of 9 times through per-window tap lists. Padded cells are not
/// among the taps, so they never win a maximum.
fn pool_plane_separable<T: Float>(
    plane: &[T],
    w: usize,
    [rows, cols]: [&[Vec<usize>]; 2],
    win: &Window,
    pool: Pool,
    out: &mut [T],
) {
    let max = pool == Pool::Max;
    let mut line = vec![T::zero(); w];
    for (ry, out_row) in rows.iter().zip(out.chunks_exact_mut(cols.len().max(1))) {
        let Some((&first, rest)) = ry.split_first() else {
            out_row.fill(T::zero());
            continue;
        };
        line.copy_from_slice(&plane[first * w..][..w]);
        for &iy in rest {
            let row = &plane[iy * w..][..w];
            if max {
                // A select rather than a branch: ReLU outputs tie at 0 and would mispredict.
                line.iter_mut().zip(row).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
            } else {
                line.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
        }
        for (o, cx) in out_row.iter_mut().zip(cols) {
            let mut taps = cx.iter().map(|&ix| line[ix]);
            let Some(first) = taps.next() else {
                *o = T::zero();
                continue;
            };
            *o = if max {
                taps.fold(first, |m, v| if v > m { v } else { m })
            } else {
                taps.fold(first, |s, v| s + v) / T::from_f64(divisor(win, pool, ry, cx) as f64)
            };
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
            pool_plane_separable(plane, w, [&rows, &cols], win, pool, out);
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
    fn overlapping_padded_and_dilated_pools_match_a_loop_over_each_window() {
        // ResNet's 3×3 stride-2 max pool with one pixel of padding, an asymmetric pad, a
        // dilated window and averages with and without the padding counted, on odd sizes.
        let (h, w) = (9, 11);
        let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let windows = [
            window(3, 2, [1, 1, 1, 1]),
            window(3, 1, [0, 2, 1, 0]),
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
        for win in &windows {
            for pool in pools {
                let [oh, ow] = win.out_size(h, w);
                let mut expected = Vec::new();
                for plane in xs.chunks_exact(h * w) {
                    for oy in 0..oh {
                        for ox in 0..ow {
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
                                        cells.push(plane[iy as usize * w + ix as usize]);
                                    }
                                }
                            }
                            expected.push(match pool {
                                Pool::Max => cells.iter().copied().fold(f32::MIN, f32::max),
                                Pool::Avg { count_include_pad } => {
                                    let count = if count_include_pad {
                                        win.kernel[0] * win.kernel[1]
                                    } else {
                                        cells.len()
                                    };
                                    cells.iter().sum::<f32>() / count as f32
                                }
                            });
                        }
                    }
                }
                let ours = pool2d(&x, win, pool).unwrap().flatten_all().unwrap();
                for (a, b) in ours.to_vec1::<f32>().unwrap().iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-6, "{win:?} {pool:?}: {a} against {b}");
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
