//! Images in a terminal: the colour capability ([`ColorMode`]), the xterm-256 palette, the
//! half-block cells that show two pixels each, their SGR text, and fitting an image to a
//! number of cells.

use super::pixels::scale_nearest;

/// Terminal colour capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// 24-bit colour escapes (`38;2;r;g;b`).
    TrueColor,
    /// The xterm 256-colour palette (`38;5;n`), which every modern terminal understands.
    Ansi256,
}

impl ColorMode {
    /// TrueColor when the `COLORTERM` environment variable is `truecolor` or `24bit` (the
    /// convention terminals use to announce it), else Ansi256.
    pub fn detect() -> ColorMode {
        ColorMode::from_env_value(std::env::var("COLORTERM").ok().as_deref())
    }

    /// The decision of [`ColorMode::detect`] for a given `COLORTERM` value (case-insensitive).
    pub fn from_env_value(colorterm: Option<&str>) -> ColorMode {
        match colorterm.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("truecolor") || v.eq_ignore_ascii_case("24bit") => {
                ColorMode::TrueColor
            }
            _ => ColorMode::Ansi256,
        }
    }

    /// The mode called `name`: `truecolor` (or `24bit`) or `256` (or `ansi256`),
    /// case-insensitive.
    pub fn parse(name: &str) -> Option<ColorMode> {
        match name.trim().to_ascii_lowercase().as_str() {
            "truecolor" | "24bit" => Some(ColorMode::TrueColor),
            "256" | "ansi256" => Some(ColorMode::Ansi256),
            _ => None,
        }
    }
}

/// The six levels of each channel in the xterm 6×6×6 colour cube (indices 16..=231).
const CUBE_LEVELS: [u8; 6] = [0, 95, 135, 175, 215, 255];

/// The nearest xterm-256 palette index for an RGB colour: the closest colour of the 6×6×6
/// cube (16..=231) or of the grey ramp (232..=255, greys 8, 18, …, 238), whichever is closer
/// in RGB distance (the cube on a tie). The 16 system colours are never used: terminals
/// let users redefine them.
pub fn ansi256(rgb: [u8; 3]) -> u8 {
    let sq = |a: u8, b: u8| {
        let d = i32::from(a) - i32::from(b);
        d * d
    };
    let nearest_level =
        |v: u8| (0..CUBE_LEVELS.len()).min_by_key(|&i| sq(v, CUBE_LEVELS[i])).unwrap_or(0);
    let [r, g, b] = rgb.map(nearest_level);
    let cube = [CUBE_LEVELS[r], CUBE_LEVELS[g], CUBE_LEVELS[b]];
    let cube_dist: i32 = (0..3).map(|c| sq(rgb[c], cube[c])).sum();

    let mean = (u32::from(rgb[0]) + u32::from(rgb[1]) + u32::from(rgb[2])) as f32 / 3.0;
    // Ramp step k is grey 8 + 10k; the nearest step to the mean is the nearest ramp grey.
    let k = ((mean - 8.0) / 10.0).round().clamp(0.0, 23.0) as u8;
    let grey = 8 + 10 * k;
    let grey_dist: i32 = rgb.iter().map(|&v| sq(v, grey)).sum();

    if grey_dist < cube_dist { 232 + k } else { 16 + 36 * r as u8 + 6 * g as u8 + b as u8 }
}

/// One terminal cell of the half-block encoding: the glyph '▀' with its foreground colour
/// painting the upper pixel and its background colour the lower one, so a cell (about twice as
/// tall as wide) shows two square pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalfBlock {
    /// The upper pixel (the glyph's foreground).
    pub top: [u8; 3],
    /// The lower pixel (the cell's background).
    pub bottom: [u8; 3],
}

/// The image as rows of cells: ⌈h/2⌉ rows of w cells. An odd last row has black for the
/// missing lower pixel.
pub fn half_blocks(img: &image::RgbImage) -> Vec<Vec<HalfBlock>> {
    let (w, h) = img.dimensions();
    (0..h.div_ceil(2))
        .map(|row| {
            let y = 2 * row;
            (0..w)
                .map(|x| HalfBlock {
                    top: img.get_pixel(x, y).0,
                    bottom: if y + 1 < h { img.get_pixel(x, y + 1).0 } else { [0, 0, 0] },
                })
                .collect()
        })
        .collect()
}

/// The image as text for a terminal: each row of [`half_blocks`] as '▀' characters with SGR
/// colour escapes (`38;2;r;g;b` / `48;2;r;g;b` in TrueColor, `38;5;n` / `48;5;n` in Ansi256).
/// A foreground or background escape is written only when that colour differs from the
/// previous cell's (in Ansi256, when the palette index does), which keeps flat areas short;
/// each line ends with `"\x1b[0m"` and `'\n'`, so colours never bleed past the image.
pub fn to_ansi(img: &image::RgbImage, mode: ColorMode) -> String {
    use std::fmt::Write as _;

    // What an escape would set, compared cell to cell; quantising first means two RGB
    // colours with the same palette index do not repeat an escape in Ansi256.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Code {
        Rgb([u8; 3]),
        Index(u8),
    }
    let code = |rgb: [u8; 3]| match mode {
        ColorMode::TrueColor => Code::Rgb(rgb),
        ColorMode::Ansi256 => Code::Index(ansi256(rgb)),
    };
    // `write!` into a String cannot fail, so its Result is ignored.
    let emit = |out: &mut String, layer: u8, c: Code| {
        let _ = match c {
            Code::Rgb([r, g, b]) => write!(out, "\x1b[{layer}8;2;{r};{g};{b}m"),
            Code::Index(n) => write!(out, "\x1b[{layer}8;5;{n}m"),
        };
    };

    let mut out = String::new();
    for row in half_blocks(img) {
        let (mut fg, mut bg) = (None, None);
        for cell in row {
            let (top, bottom) = (code(cell.top), code(cell.bottom));
            if fg != Some(top) {
                emit(&mut out, 3, top);
                fg = Some(top);
            }
            if bg != Some(bottom) {
                emit(&mut out, 4, bottom);
                bg = Some(bottom);
            }
            out.push('▀');
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

/// Fits an image into `max_cols` × `max_rows` terminal cells (`max_cols` × `2·max_rows`
/// pixels), nearest-neighbour, keeping the aspect ratio. An image that fits is enlarged by the
/// largest whole factor that still fits (so every source pixel becomes an equal square: a
/// 28×28 digit in 80×24 cells stays 28×28, since 56 rows of pixels would need 28 rows of
/// cells; in 80×30 cells it becomes 56×56). An image too big in either direction is shrunk
/// to touch the box in its limiting direction. An empty image or box gives an empty image.
pub fn fit_to_cells(img: &image::RgbImage, max_cols: u32, max_rows: u32) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let (bw, bh) = (max_cols, max_rows.saturating_mul(2));
    if w == 0 || h == 0 || bw == 0 || bh == 0 {
        return image::RgbImage::new(0, 0);
    }
    let k = (bw / w).min(bh / h);
    if k >= 1 {
        return scale_nearest(img, w * k, h * k);
    }
    // Shrink: the limiting side fills the box, the other keeps the ratio (rounded, at least 1,
    // never past the box because it is at most the box size before rounding).
    let (w64, h64, bw64, bh64) = (u64::from(w), u64::from(h), u64::from(bw), u64::from(bh));
    let (nw, nh) = if bw64 * h64 <= bh64 * w64 {
        (bw64, ((h64 * bw64 + w64 / 2) / w64).max(1))
    } else {
        (((w64 * bh64 + h64 / 2) / h64).max(1), bh64)
    };
    scale_nearest(img, nw as u32, nh as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::testing::img;

    #[test]
    fn color_mode_from_env_and_names() {
        assert_eq!(ColorMode::from_env_value(Some("truecolor")), ColorMode::TrueColor);
        assert_eq!(ColorMode::from_env_value(Some("24bit")), ColorMode::TrueColor);
        assert_eq!(ColorMode::from_env_value(Some("TrueColor")), ColorMode::TrueColor);
        assert_eq!(ColorMode::from_env_value(Some("")), ColorMode::Ansi256);
        assert_eq!(ColorMode::from_env_value(Some("yes")), ColorMode::Ansi256);
        assert_eq!(ColorMode::from_env_value(None), ColorMode::Ansi256);
        assert_eq!(ColorMode::parse("truecolor"), Some(ColorMode::TrueColor));
        assert_eq!(ColorMode::parse("256"), Some(ColorMode::Ansi256));
        assert_eq!(ColorMode::parse("16"), None);
    }

    #[test]
    fn ansi256_picks_cube_or_grey_ramp() {
        assert_eq!(ansi256([255, 0, 0]), 196);
        assert_eq!(ansi256([0, 0, 0]), 16);
        assert_eq!(ansi256([255, 255, 255]), 231);
        assert_eq!(ansi256([0, 0, 255]), 21);
        assert_eq!(ansi256([0, 255, 0]), 46);
        assert_eq!(ansi256([128, 128, 128]), 244);
        assert_eq!(ansi256([8, 8, 8]), 232);
        assert_eq!(ansi256([238, 238, 238]), 255);
        // A colour off the grey axis stays in the cube.
        assert_eq!(ansi256([135, 95, 215]), 16 + 36 * 2 + 6 + 4);
    }

    #[test]
    fn half_blocks_pair_rows_and_pad_with_black() {
        let px: Vec<[u8; 3]> = (0..6u8).map(|i| [i, 10 * i, 100 + i]).collect();
        let cells = half_blocks(&img(2, 3, &px));
        assert_eq!(cells.len(), 2);
        assert!(cells.iter().all(|row| row.len() == 2));
        assert_eq!(cells[0][0], HalfBlock { top: px[0], bottom: px[2] });
        assert_eq!(cells[0][1], HalfBlock { top: px[1], bottom: px[3] });
        assert_eq!(cells[1][0], HalfBlock { top: px[4], bottom: [0, 0, 0] });
        assert_eq!(cells[1][1], HalfBlock { top: px[5], bottom: [0, 0, 0] });
        assert!(half_blocks(&image::RgbImage::new(0, 0)).is_empty());
    }

    #[test]
    fn to_ansi_truecolor_exact() {
        let (r, g, b) = ([255, 0, 0], [0, 255, 0], [0, 0, 255]);
        let text = to_ansi(&img(2, 2, &[r, r, b, g]), ColorMode::TrueColor);
        // The second cell keeps the red foreground, so only its background is written.
        assert_eq!(text, "\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m▀\x1b[48;2;0;255;0m▀\x1b[0m\n");
        let flat = to_ansi(&image::RgbImage::from_pixel(3, 4, image::Rgb(r)), ColorMode::TrueColor);
        let line = "\x1b[38;2;255;0;0m\x1b[48;2;255;0;0m▀▀▀\x1b[0m\n";
        assert_eq!(flat, format!("{line}{line}"));
    }

    #[test]
    fn to_ansi_256_uses_palette_escapes() {
        let text = to_ansi(&img(1, 2, &[[255, 0, 0], [0, 0, 0]]), ColorMode::Ansi256);
        assert_eq!(text, "\x1b[38;5;196m\x1b[48;5;16m▀\x1b[0m\n");
        assert!(!text.contains("38;2"));
        // Colours that quantise to the same index are not repeated.
        let text = to_ansi(&img(2, 1, &[[250, 0, 0], [255, 3, 0]]), ColorMode::Ansi256);
        assert_eq!(text.matches("38;5;196").count(), 1);
    }

    #[test]
    fn fit_to_cells_integer_upscale_or_shrink() {
        let digit = image::RgbImage::new(28, 28);
        // 80×24 cells hold 80×48 pixels: 2× (56 rows) does not fit, so 1×.
        assert_eq!(fit_to_cells(&digit, 80, 24).dimensions(), (28, 28));
        assert_eq!(fit_to_cells(&digit, 80, 30).dimensions(), (56, 56));
        assert_eq!(fit_to_cells(&digit, 200, 60).dimensions(), (112, 112));
        // Too big: the limiting side fills the box, the other keeps the ratio.
        assert_eq!(fit_to_cells(&image::RgbImage::new(100, 50), 20, 10).dimensions(), (20, 10));
        assert_eq!(fit_to_cells(&image::RgbImage::new(10, 100), 80, 10).dimensions(), (2, 20));
        assert_eq!(fit_to_cells(&image::RgbImage::new(1000, 1), 10, 10).dimensions(), (10, 1));
        assert_eq!(fit_to_cells(&digit, 0, 24).dimensions(), (0, 0));
        assert_eq!(fit_to_cells(&image::RgbImage::new(0, 5), 80, 24).dimensions(), (0, 0));
        // Upscaling keeps every source pixel an equal square.
        let two = img(2, 1, &[[1; 3], [2; 3]]);
        let big = fit_to_cells(&two, 10, 10);
        assert_eq!(big.dimensions(), (10, 5));
        assert_eq!(big.get_pixel(4, 4).0, [1; 3]);
        assert_eq!(big.get_pixel(5, 0).0, [2; 3]);
    }
}
