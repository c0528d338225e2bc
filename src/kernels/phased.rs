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
    pub(super) fn pack(&self, src: &[f32], dst: &mut [f32]) {
        let [h, w] = self.source;
        let [top, left] = self.pads;
        let [sh, sw] = self.stride;
        let [rows, cols] = self.cell;
        for (phase, cell) in dst.chunks_exact_mut(self.phase_len()).enumerate() {
            let (pv, ph) = (phase / sw, phase % sw);
            // Phase columns `lo..hi` hold input columns `j·sw + ph − left` inside `0..w`.
            let lo = left.saturating_sub(ph).div_ceil(sw).min(cols);
            let hi = (w + left).saturating_sub(ph).div_ceil(sw).clamp(lo, cols);
            for (r, row) in cell.chunks_exact_mut(cols).enumerate().take(rows) {
                let iy = (r * sh + pv).checked_sub(top).filter(|&iy| iy < h);
                let Some(iy) = iy.filter(|_| lo < hi) else {
                    row.fill(0.0);
                    continue;
                };
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                let src = &src[iy * w..(iy + 1) * w];
                let first = lo * sw + ph - left;
                if sw == 1 {
                    row[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                } else {
                    for (d, &s) in row[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                        *d = s;
                    }
                }
            }
        }
    }

    /// The adjoint's crop: `dst` (`[h, w]`) gets the values of the split plane `src` that
    /// lie inside the padding, each pixel from its phase.
    pub(super) fn unpack(&self, src: &[f32], dst: &mut [f32]) {
        let [h, w] = self.source;
        let [top, left] = self.pads;
        let [sh, sw] = self.stride;
        let cols = self.cell[1];
        for (iy, row) in dst.chunks_exact_mut(w).enumerate().take(h) {
            let py = iy + top;
            let start = (py % sh) * sw * self.phase_len() + (py / sh) * cols;
            if sw == 1 {
                row.copy_from_slice(&src[start + left..start + left + w]);
                continue;
            }
            for (ix, d) in row.iter_mut().enumerate() {
                let px = ix + left;
                *d = src[start + (px % sw) * self.phase_len() + px / sw];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_hold_the_padded_plane_and_unpack_inverts_pack() {
        // 5×7 plane, stride [2, 3], dilation [1, 2], pads [top 2, left 1, bottom 0, right 3].
        let win = Window { kernel: [3, 3], stride: [2, 3], dilation: [1, 2], pads: [2, 1, 0, 3] };
        let (h, w) = (5, 7);
        let phased = Phased::new([h, w], &win);
        let src: Vec<f32> = (0..h * w).map(|i| 1.0 + i as f32).collect();
        let mut split = vec![f32::NAN; phased.len()];
        phased.pack(&src, &mut split);
        // Every padded position (py, px) sits in phase (py mod 2, px mod 3).
        let [hp, wp] = [h + 2, w + 4];
        for py in 0..hp {
            for px in 0..wp {
                let phase = (py % 2) * 3 + px % 3;
                let at = phase * phased.phase_len() + (py / 2) * phased.width() + px / 3;
                let inside = (2..2 + h).contains(&py) && (1..1 + w).contains(&px);
                let want = if inside { src[(py - 2) * w + px - 1] } else { 0.0 };
                assert_eq!(split[at], want, "({py}, {px})");
            }
        }
        assert!(split.iter().all(|v| v.is_finite()), "every value written");
        // Tap (2, 2) of output (1, 1) reads padded (1·2 + 2, 1·3 + 4) = (4, 7).
        let p = phased.width() + 1;
        assert_eq!(split[p + phased.offset(2, 2)], src[2 * w + 6]);
        let mut back = vec![0.0; h * w];
        phased.unpack(&split, &mut back);
        assert_eq!(back, src);
    }
}
