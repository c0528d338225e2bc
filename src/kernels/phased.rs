//! Zero-padded input planes split by stride phase: the layout the direct kernels read.
//!
//! A window with stride `[sh, sw]` reads, for output pixel `(oy, ox)` and tap `(ki, kj)`, the
//! padded input at row `oy·sh + ki·dh` and column `ox·sw + kj·dw`. Splitting the padded plane
//! into `sh·sw` phases, phase `(pv, ph)` holding rows `r·sh + pv` and columns `j·sw + ph`,
//! turns that into row `oy + ⌊ki·dh/sh⌋` and column `ox + ⌊kj·dw/sw⌋` of phase
//! `(ki·dh mod sh, kj·dw mod sw)`. So with phase rows `wj` values wide, output pixel
//! `p = oy·wj + ox` reads every tap at `p` plus a fixed offset ([`Phased::offset`]): one tap
//! is one weight times a contiguous run of inputs, at any stride. Columns `ox ≥ ow` of such a
//! "wide" output wrap into the next row; kernels compute and drop them. With stride 1 there
//! is one phase, the plain padded plane.

use std::ops::Range;

use num_traits::Zero;

use super::Window;

/// The phase-split layout of one padded plane, for a window's stride, dilation and padding.
#[derive(Clone, Copy, Debug)]
pub(super) struct Phased {
    /// One unpadded plane `[h, w]`.
    source: [usize; 2],
    /// Padding `[top, left]`: bottom and right padding only lengthen the phases.
    pads: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// One phase's `[rows, columns]`.
    cell: [usize; 2],
}

impl Phased {
    /// The layout for planes `[h, w]` under `win`.
    pub(super) fn new([h, w]: [usize; 2], win: &Window) -> Self {
        let [top, left, bottom, right] = win.pads;
        let [sh, sw] = win.stride;
        Phased {
            source: [h, w],
            pads: [top, left],
            stride: win.stride,
            dilation: win.dilation,
            cell: [(h + top + bottom).div_ceil(sh), (w + left + right).div_ceil(sw)],
        }
    }

    /// Whether the split plane is the plane itself: stride 1, no padding.
    pub(super) fn is_plain(&self) -> bool {
        self.phases() == 1 && self.cell == self.source
    }

    /// Values in one phase row: the row width of wide outputs.
    pub(super) fn width(&self) -> usize {
        self.cell[1]
    }

    /// Values in one phase.
    pub(super) fn phase_len(&self) -> usize {
        self.cell[0] * self.cell[1]
    }

    /// Number of phases, `sh·sw`.
    pub(super) fn phases(&self) -> usize {
        self.stride[0] * self.stride[1]
    }

    /// Values in one split plane: every phase.
    pub(super) fn len(&self) -> usize {
        self.phases() * self.phase_len()
    }

    /// The phase tap `(ki, kj)` reads and its offset within that phase from a wide output
    /// pixel.
    pub(super) fn tap(&self, ki: usize, kj: usize) -> (usize, usize) {
        let [sh, sw] = self.stride;
        let (y, x) = (ki * self.dilation[0], kj * self.dilation[1]);
        ((y % sh) * sw + x % sw, (y / sh) * self.cell[1] + x / sw)
    }

    /// Offset of tap `(ki, kj)` within a split plane from a wide output pixel.
    pub(super) fn offset(&self, ki: usize, kj: usize) -> usize {
        let (phase, within) = self.tap(ki, kj);
        phase * self.phase_len() + within
    }

    /// Writes every value of `dst` ([`Phased::len`] values): the plane `src` (`[h, w]`)
    /// padded with zeros and split by phase.
    pub(super) fn pack<T: Copy + Zero>(&self, src: &[T], dst: &mut [T]) {
        dst.fill(T::zero());
        self.pack_inside(src, dst);
    }

    /// [`Phased::pack`] into a `dst` whose padding already holds zeros (as it does after a
    /// `pack`): writes only the values that lie inside the padding, so a buffer reused plane
    /// after plane is zeroed once, not per plane (a depthwise conv on 7×7 maps spent as long
    /// zeroing its 9×9 planes as summing them).
    pub(super) fn pack_inside<T: Copy>(&self, src: &[T], dst: &mut [T]) {
        let w = self.source[1];
        let left = self.pads[1];
        let (sw, phase_len) = (self.stride[1], self.phase_len());
        // Row by input row: each goes to one row of each of its `sw` phases.
        for (iy, row) in self.rows().enumerate() {
            let src = &src[iy * w..][..w];
            match sw {
                1 => copy_row(&mut dst[row + left..row + left + w], src),
                2 => {
                    let (a, b) = pair_ranges(left, w);
                    let (a_row, b_row) = dst[row..].split_at_mut(phase_len);
                    let (a_row, b_row) =
                        if left.is_multiple_of(2) { (a_row, b_row) } else { (b_row, a_row) };
                    let (a, b) = (&mut a_row[a], &mut b_row[b]);
                    let mut pairs = src.chunks_exact(2);
                    for ((x, y), pair) in a.iter_mut().zip(b.iter_mut()).zip(&mut pairs) {
                        (*x, *y) = (pair[0], pair[1]);
                    }
                    if let ([last], Some(x)) = (pairs.remainder(), a.last_mut()) {
                        *x = *last;
                    }
                }
                _ => {
                    for (ix, &v) in src.iter().enumerate() {
                        let px = ix + left;
                        dst[row + (px % sw) * phase_len + px / sw] = v;
                    }
                }
            }
        }
    }

    /// The adjoint's crop: `dst` (`[h, w]`) gets the values of the split plane `src` that
    /// lie inside the padding, each pixel from its phase.
    pub(super) fn unpack<T: Copy>(&self, src: &[T], dst: &mut [T]) {
        let w = self.source[1];
        let left = self.pads[1];
        let (sw, phase_len) = (self.stride[1], self.phase_len());
        for (row, dst) in self.rows().zip(dst.chunks_exact_mut(w)) {
            match sw {
                1 => copy_row(dst, &src[row + left..row + left + w]),
                2 => {
                    let (a, b) = pair_ranges(left, w);
                    let (a_row, b_row) =
                        (row + (left % 2) * phase_len, row + (1 - left % 2) * phase_len);
                    let (a, b) = (&src[a_row..][a], &src[b_row..][b]);
                    let mut pairs = dst.chunks_exact_mut(2);
                    for ((pair, &x), &y) in (&mut pairs).zip(a).zip(b) {
                        (pair[0], pair[1]) = (x, y);
                    }
                    if let ([last], Some(&x)) = (pairs.into_remainder(), a.last()) {
                        *last = x;
                    }
                }
                _ => {
                    for (ix, d) in dst.iter_mut().enumerate() {
                        let px = ix + left;
                        *d = src[row + (px % sw) * phase_len + px / sw];
                    }
                }
            }
        }
    }

    /// Where each input row starts in its vertical phase's first column phase, top to
    /// bottom: counted along, not divided per row (the divisions were a visible part of
    /// packing a 7×7 plane).
    fn rows(&self) -> impl Iterator<Item = usize> + use<> {
        let [sh, sw] = self.stride;
        let (step, width) = (sw * self.phase_len(), self.cell[1]);
        let top = self.pads[0];
        let (mut phase, mut row) = (top % sh, top / sh);
        (0..self.source[0]).map(move |_| {
            let start = phase * step + row * width;
            phase += 1;
            if phase == sh {
                (phase, row) = (0, row + 1);
            }
            start
        })
    }
}

/// `dst.copy_from_slice(src)` inlined: packing a plane copies rows of a few dozen values,
/// where a call of `memcpy` per row cost about as much as the copying (a fixed-size copy is
/// inlined, so the row goes in eights, then a four, a two and a one).
#[inline]
fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut dst = dst.chunks_exact_mut(8);
    let mut src = src.chunks_exact(8);
    for (d, s) in (&mut dst).zip(&mut src) {
        d.copy_from_slice(s);
    }
    let (mut dst, mut src) = (dst.into_remainder(), src.remainder());
    for size in [4, 2, 1] {
        if src.len() >= size {
            dst[..size].copy_from_slice(&src[..size]);
            (dst, src) = (&mut dst[size..], &src[size..]);
        }
    }
}

/// For stride 2 across: an input row's even columns `2m` land in column phase `left mod 2`
/// (`a`), its odd ones in the other (`b`), so one pass over the pairs (which the compiler
/// vectorises) splits a row or joins it back. The columns `a` and `b` take in their phases.
fn pair_ranges(left: usize, w: usize) -> (Range<usize>, Range<usize>) {
    let start = left / 2;
    // Column 2m+1 is padded column 2m+1+left: with odd `left` one further along its phase.
    let b_start = start + left % 2;
    (start..start + w.div_ceil(2), b_start..b_start + w / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_hold_the_padded_plane_and_unpack_inverts_pack() {
        // (plane [h, w], stride, dilation, pads [top, left, bottom, right]): stride 2 across
        // with even and odd left padding and widths, stride 3, stride 1.
        let cases = [
            ([5, 7], [2, 3], [1, 2], [2, 1, 0, 3]),
            ([6, 7], [2, 2], [1, 1], [1, 1, 1, 1]),
            ([5, 6], [1, 2], [2, 1], [0, 2, 1, 0]),
            ([4, 9], [3, 2], [1, 1], [1, 0, 2, 3]),
            ([3, 4], [1, 1], [1, 1], [1, 2, 0, 1]),
        ];
        for ([h, w], stride, dilation, pads) in cases {
            let win = Window { kernel: [3, 3], stride, dilation, pads };
            let phased = Phased::new([h, w], &win);
            let src: Vec<f32> = (0..h * w).map(|i| 1.0 + i as f32).collect();
            let mut split = vec![f32::NAN; phased.len()];
            phased.pack(&src, &mut split);
            // Every padded position (py, px) sits in phase (py mod sh, px mod sw).
            let [top, left, bottom, right] = pads;
            let [sh, sw] = stride;
            for py in 0..h + top + bottom {
                for px in 0..w + left + right {
                    let phase = (py % sh) * sw + px % sw;
                    let at = phase * phased.phase_len() + (py / sh) * phased.width() + px / sw;
                    let inside = (top..top + h).contains(&py) && (left..left + w).contains(&px);
                    let want = if inside { src[(py - top) * w + px - left] } else { 0.0 };
                    assert_eq!(split[at], want, "{win:?} ({py}, {px})");
                }
            }
            assert!(split.iter().all(|v| v.is_finite()), "{win:?}: every value written");
            // Tap (2, 2) of output (1, 1) reads padded (sh + 2·dh, sw + 2·dw).
            let p = phased.width() + 1;
            let [iy, ix] = [sh + 2 * dilation[0], sw + 2 * dilation[1]];
            let want = if (top..top + h).contains(&iy) && (left..left + w).contains(&ix) {
                src[(iy - top) * w + ix - left]
            } else {
                0.0
            };
            assert_eq!(split[p + phased.offset(2, 2)], want, "{win:?}");
            let mut back = vec![0.0; h * w];
            phased.unpack(&split, &mut back);
            assert_eq!(back, src, "{win:?}");
        }
    }
}
