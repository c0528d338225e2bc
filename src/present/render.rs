//! Turning method results into pixels: colormaps, images of maps and inputs, grids of tiles,
//! heatmap overlays, the half-block encoding that draws an image in a terminal, and the PNG
//! and `.npy` files the commands write. Plain data in, `image::RgbImage` or text or bytes
//! out: the explorer and the commands draw with the same functions.

use crate::error::{Error, Result};
use crate::methods::Map;

/// Colour scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Colormap {
    /// matplotlib's `jet`: dark blue, blue, cyan, yellow, red, dark red (keras-vis' default).
    #[default]
    Jet,
    /// matplotlib's `viridis`: perceptually uniform, dark purple to yellow.
    Viridis,
    /// matplotlib's `inferno`: perceptually uniform, black through red to pale yellow.
    Inferno,
    /// matplotlib's `turbo`: a smoother rainbow than jet.
    Turbo,
    /// Black to white.
    Gray,
    /// Blue, white, red (matplotlib's `RdBu_r`), for signed values centred on zero.
    Diverging,
}

impl Colormap {
    /// Every colormap, in the order the explorer cycles them.
    pub const ALL: [Colormap; 6] = [
        Colormap::Jet,
        Colormap::Viridis,
        Colormap::Inferno,
        Colormap::Turbo,
        Colormap::Gray,
        Colormap::Diverging,
    ];

    /// The lower-case name used on the command line and in the explorer.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Jet => "jet",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Turbo => "turbo",
            Colormap::Gray => "gray",
            Colormap::Diverging => "diverging",
        }
    }

    /// The colormap called `name` (case-insensitive; the inverse of [`Colormap::name`]).
    pub fn parse(name: &str) -> Option<Colormap> {
        let name = name.trim();
        Colormap::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The colormap after this one in [`Colormap::ALL`], wrapping round.
    pub fn next(self) -> Colormap {
        let i = Colormap::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Colormap::ALL[(i + 1) % Colormap::ALL.len()]
    }

    /// The colour at `t` in [0, 1]; `t` is clamped, and NaN counts as 0.
    pub fn rgb(self, t: f32) -> [u8; 3] {
        // `clamp` passes NaN through, so NaN is caught first: a NaN in a heatmap must draw
        // as the low end rather than poison the interpolation below.
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::Jet => [
                to_byte(piecewise(&JET_RED, t)),
                to_byte(piecewise(&JET_GREEN, t)),
                to_byte(piecewise(&JET_BLUE, t)),
            ],
            Colormap::Viridis => from_table(&VIRIDIS, t),
            Colormap::Inferno => from_table(&INFERNO, t),
            Colormap::Turbo => from_table(&TURBO, t),
            Colormap::Gray => {
                let v = to_byte(t);
                [v, v, v]
            }
            Colormap::Diverging => from_table(&RDBU_R, t),
        }
    }
}

/// A fraction in [0, 1] as a byte, rounded.
fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Linear interpolation through `(t, value)` breakpoints sorted by `t`, the way matplotlib
/// reads a `LinearSegmentedColormap`'s segment data (both sides of each break are equal for
/// jet, so one value per break suffices).
fn piecewise(points: &[(f32, f32)], t: f32) -> f32 {
    let mut prev = match points.first() {
        Some(&p) => p,
        None => return 0.0,
    };
    for &(x, v) in points {
        if t <= x {
            let span = x - prev.0;
            if span <= 0.0 {
                return v;
            }
            return prev.1 + (v - prev.1) * (t - prev.0) / span;
        }
        prev = (x, v);
    }
    prev.1
}

/// Linear interpolation in a table of colours spaced evenly over [0, 1].
fn from_table(table: &[[u8; 3]], t: f32) -> [u8; 3] {
    let last = table.len().saturating_sub(1);
    if last == 0 {
        return table.first().copied().unwrap_or([0, 0, 0]);
    }
    let x = t * last as f32;
    // `t` is already clamped, so `x` is in [0, last]; stopping at `last - 1` makes t = 1 the
    // end of the final segment rather than an index past it.
    let i = (x.floor() as usize).min(last - 1);
    let f = x - i as f32;
    let (a, b) = (table[i], table[i + 1]);
    let mix = |c: usize| (f32::from(a[c]) + (f32::from(b[c]) - f32::from(a[c])) * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

// matplotlib's `jet` segment data (`matplotlib/_cm.py`, `_jet_data`), per channel.
const JET_RED: [(f32, f32); 5] = [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)];
const JET_GREEN: [(f32, f32); 6] =
    [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)];
const JET_BLUE: [(f32, f32); 5] = [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)];

// viridis, inferno and turbo: matplotlib 3.11's 256-entry tables (`matplotlib/_cm_listed.py`)
// sampled at t = k/32, k = 0..=32, and rounded to bytes. Interpolating these 33 anchors
// linearly stays within 2/255 of the full tables everywhere.
const VIRIDIS: [[u8; 3]; 33] = [
    [68, 1, 84],
    [71, 13, 96],
    [72, 24, 106],
    [72, 35, 116],
    [71, 45, 123],
    [69, 54, 129],
    [66, 64, 134],
    [63, 73, 137],
    [59, 82, 139],
    [55, 90, 141],
    [51, 99, 141],
    [47, 106, 142],
    [44, 114, 142],
    [41, 122, 142],
    [38, 129, 142],
    [35, 137, 142],
    [33, 144, 140],
    [31, 152, 139],
    [31, 159, 136],
    [33, 166, 133],
    [40, 174, 128],
    [49, 181, 123],
    [62, 188, 116],
    [76, 194, 108],
    [93, 201, 99],
    [110, 206, 88],
    [130, 211, 76],
    [150, 216, 63],
    [171, 220, 50],
    [192, 223, 36],
    [213, 226, 26],
    [234, 229, 26],
    [253, 231, 37],
];
const INFERNO: [[u8; 3]; 33] = [
    [0, 0, 4],
    [4, 3, 18],
    [11, 7, 36],
    [21, 11, 55],
    [33, 12, 74],
    [46, 10, 90],
    [60, 9, 101],
    [74, 12, 107],
    [87, 16, 109],
    [99, 20, 110],
    [112, 25, 110],
    [125, 30, 109],
    [137, 34, 106],
    [150, 39, 102],
    [163, 43, 97],
    [175, 49, 92],
    [187, 55, 85],
    [198, 62, 77],
    [209, 70, 68],
    [219, 79, 59],
    [227, 89, 50],
    [235, 101, 40],
    [241, 113, 30],
    [246, 127, 20],
    [249, 141, 10],
    [251, 156, 6],
    [252, 171, 15],
    [251, 186, 31],
    [249, 202, 50],
    [245, 217, 73],
    [242, 232, 101],
    [243, 245, 134],
    [252, 255, 164],
];
const TURBO: [[u8; 3]; 33] = [
    [48, 18, 59],
    [57, 42, 115],
    [64, 64, 161],
    [68, 86, 199],
    [70, 107, 227],
    [70, 127, 246],
    [66, 147, 255],
    [55, 167, 250],
    [41, 187, 236],
    [29, 205, 216],
    [24, 220, 195],
    [30, 232, 176],
    [49, 242, 153],
    [76, 249, 126],
    [107, 253, 100],
    [138, 255, 77],
    [163, 253, 60],
    [184, 247, 53],
    [204, 237, 52],
    [222, 224, 55],
    [237, 208, 58],
    [248, 192, 58],
    [253, 174, 53],
    [254, 152, 44],
    [251, 128, 34],
    [245, 104, 23],
    [236, 82, 15],
    [224, 64, 9],
    [210, 49, 5],
    [192, 35, 2],
    [172, 23, 1],
    [149, 13, 1],
    [122, 4, 3],
];

// matplotlib's `RdBu` (ColorBrewer, `matplotlib/_cm.py`, `_RdBu_data`) reversed, as `RdBu_r`:
// blue for low, near-white (247, 247, 247) at t = 0.5, red for high.
const RDBU_R: [[u8; 3]; 11] = [
    [5, 48, 97],
    [33, 102, 172],
    [67, 147, 195],
    [146, 197, 222],
    [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199],
    [244, 165, 130],
    [214, 96, 77],
    [178, 24, 43],
    [103, 0, 31],
];

/// Maps each value linearly from `range` (lo, hi) to [0, 1], then through the colormap. If
/// `hi <= lo` (a constant map) everything maps to t = 0, or to t = 0.5 (white, "zero") for
/// [`Colormap::Diverging`]; NaN values draw as t = 0.
pub fn map_image(map: &Map, range: (f32, f32), cmap: Colormap) -> image::RgbImage {
    let (lo, hi) = range;
    // Written so that a NaN or infinite bound also counts as degenerate (`hi <= lo` is false
    // for NaN).
    let span = hi - lo;
    let flat = !(span.is_finite() && span > 0.0);
    let flat_t = if cmap == Colormap::Diverging { 0.5 } else { 0.0 };
    let (w, h) = (dim(map.width), dim(map.height));
    image::RgbImage::from_fn(w, h, |x, y| {
        let t = if flat {
            flat_t
        } else {
            // `Map`'s fields are public, so its data may be short; a missing value draws like
            // NaN instead of panicking.
            let v = map.data.get(y as usize * map.width + x as usize).copied().unwrap_or(f32::NAN);
            (v - lo) / (hi - lo)
        };
        image::Rgb(cmap.rgb(t))
    })
}

/// A `usize` dimension as the `u32` the `image` crate uses (saturating; no real map is that big).
fn dim(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Input pixels in [0, 1], planar `[C, H, W]` with C = 1 (grey) or 3 (RGB); any other C draws
/// the first channel as grey. Values outside [0, 1] are clamped, NaN and missing values are black.
pub fn input_image(
    pixels: &[f32],
    channels: usize,
    height: usize,
    width: usize,
) -> image::RgbImage {
    let plane = height * width;
    let at = |c: usize, i: usize| to_byte(pixels.get(c * plane + i).copied().unwrap_or(0.0));
    image::RgbImage::from_fn(dim(width), dim(height), |x, y| {
        let i = y as usize * width + x as usize;
        if channels == 3 {
            image::Rgb([at(0, i), at(1, i), at(2, i)])
        } else {
            let v = at(0, i);
            image::Rgb([v, v, v])
        }
    })
}

/// Blends `heat` over `base`: `out = (1 − alpha)·base + alpha·heat`, `alpha` clamped to [0, 1].
/// A `heat` of another size (a 7×7 grad-CAM over a 28×28 digit) is first scaled to `base`'s
/// size, nearest-neighbour.
pub fn overlay(base: &image::RgbImage, heat: &image::RgbImage, alpha: f32) -> image::RgbImage {
    let alpha = if alpha.is_nan() { 0.0 } else { alpha.clamp(0.0, 1.0) };
    let scaled;
    let heat = if heat.dimensions() == base.dimensions() {
        heat
    } else {
        scaled = scale_nearest(heat, base.width(), base.height());
        &scaled
    };
    image::RgbImage::from_fn(base.width(), base.height(), |x, y| {
        let (b, h) = (base.get_pixel(x, y).0, heat.get_pixel(x, y).0);
        let mix = |c: usize| {
            ((1.0 - alpha) * f32::from(b[c]) + alpha * f32::from(h[c])).round().clamp(0.0, 255.0)
                as u8
        };
        image::Rgb([mix(0), mix(1), mix(2)])
    })
}

/// Nearest-neighbour scaling to `width` × `height`: keeps a small map's cells crisp squares
/// where a smoothing filter would blur them. Each output pixel takes the source pixel under its
/// centre; an empty source gives a black image.
pub fn scale_nearest(img: &image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    let (sw, sh) = img.dimensions();
    if sw == 0 || sh == 0 {
        return image::RgbImage::new(width, height);
    }
    // Centre sampling in integers: source = floor((2x + 1)·sw / 2w), computed in u64 so large
    // sizes cannot overflow; it is always < sw.
    let src = |x: u32, out: u32, len: u32| {
        ((2 * u64::from(x) + 1) * u64::from(len) / (2 * u64::from(out))) as u32
    };
    image::RgbImage::from_fn(width, height, |x, y| {
        *img.get_pixel(src(x, width, sw).min(sw - 1), src(y, height, sh).min(sh - 1))
    })
}

/// Tiles (possibly of different sizes) in a grid of `columns` columns with `gap` pixels between
/// tiles and no outer margin, on a `background` colour. Every cell is the size of the largest
/// tile, and a smaller tile is centred in its cell. Fewer tiles than `columns` narrow the grid
/// to the tiles there are; `columns == 0` counts as 1. No tiles gives a 1×1 image of
/// `background`.
pub fn grid(
    tiles: &[image::RgbImage],
    columns: usize,
    gap: u32,
    background: [u8; 3],
) -> image::RgbImage {
    let bg = image::Rgb(background);
    if tiles.is_empty() {
        return image::RgbImage::from_pixel(1, 1, bg);
    }
    let cols = columns.clamp(1, tiles.len());
    let rows = tiles.len().div_ceil(cols);
    let cell_w = tiles.iter().map(|t| t.width()).max().unwrap_or(0);
    let cell_h = tiles.iter().map(|t| t.height()).max().unwrap_or(0);
    let span = |n: usize, cell: u32| {
        let n = dim(n);
        n.saturating_mul(cell).saturating_add((n - 1).saturating_mul(gap))
    };
    let mut out = image::RgbImage::from_pixel(span(cols, cell_w), span(rows, cell_h), bg);
    for (i, tile) in tiles.iter().enumerate() {
        let (col, row) = (dim(i % cols), dim(i / cols));
        let x0 = col * (cell_w + gap) + (cell_w - tile.width()) / 2;
        let y0 = row * (cell_h + gap) + (cell_h - tile.height()) / 2;
        image::imageops::replace(&mut out, tile, i64::from(x0), i64::from(y0));
    }
    out
}

/// A column count for `n` tiles that makes the grid about square: ⌈√n⌉ (1 for no tiles).
/// Half-block pixels are square, so a square grid uses a terminal's space as well as a PNG's.
pub fn grid_columns(n: usize) -> usize {
    let mut c = 1;
    while c * c < n {
        c += 1;
    }
    c
}

/// A horizontal colour bar `width` × `height`, from t = 0 at the left edge to t = 1 at the
/// right edge.
pub fn colorbar(cmap: Colormap, width: u32, height: u32) -> image::RgbImage {
    let last = width.saturating_sub(1).max(1) as f32;
    image::RgbImage::from_fn(width, height, |x, _| image::Rgb(cmap.rgb(x as f32 / last)))
}

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

/// Saves `img` as a PNG at `path`. Errors name the path: [`Error::Io`] when the file cannot be
/// created or written, [`Error::Invalid`] when the image cannot be encoded (an empty image).
pub fn save_png(img: &image::RgbImage, path: &std::path::Path) -> Result<()> {
    use std::io::Write as _;

    let io = |source| Error::Io { path: path.to_path_buf(), source };
    // PNG cannot hold a 0×0 image; checking first avoids leaving an empty file behind.
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::Invalid(format!(
            "{}: cannot write an empty {}×{} image as PNG",
            path.display(),
            img.width(),
            img.height()
        )));
    }
    // The file is created here rather than by `RgbImage::save` so an I/O failure stays an
    // `io::Error` with the path, not an `ImageError` wrapping one.
    let file = std::fs::File::create(path).map_err(io)?;
    let mut writer = std::io::BufWriter::new(file);
    img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut writer)).map_err(
        |e| match e {
            image::ImageError::IoError(source) => io(source),
            other => Error::Invalid(format!("{}: cannot write PNG: {other}", path.display())),
        },
    )?;
    writer.flush().map_err(io)
}

/// Writes a float32 little-endian `.npy` file (format 1.0) of the given `shape`, readable by
/// `numpy.load`; see [`npy_bytes`] for the layout and the errors.
pub fn write_npy(path: &std::path::Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = npy_bytes(shape, data)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// The bytes of a `.npy` file (format 1.0) holding `data` as little-endian float32 in C order
/// with the given `shape`: the magic `\x93NUMPY`, version 1.0, a u16 header length, the header
/// dict `{'descr': '<f4', 'fortran_order': False, 'shape': (a, b), }` (a 1-D shape as `(n,)`,
/// 0-D as `()`) padded with spaces and a final `'\n'` so the data starts on a multiple of 64
/// bytes, then the values. Errors if the shape's product is not `data.len()`.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";
    // Magic and version (8 bytes) plus the u16 header length.
    const PREAMBLE: usize = MAGIC.len() + 2;

    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "a .npy of shape {shape:?} needs {} values, got {}",
            count.map_or_else(|| "too many".to_string(), |n| n.to_string()),
            data.len()
        )));
    }
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that preamble + header (ending in '\n') is a multiple of 64, as numpy does; the
    // data then starts aligned.
    let unpadded = PREAMBLE + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| {
        Error::Invalid(format!("a .npy header for shape {shape:?} is too long for format 1.0"))
    })?;

    let mut out = Vec::with_capacity(PREAMBLE + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
        a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
    }

    fn img(w: u32, h: u32, pixels: &[[u8; 3]]) -> image::RgbImage {
        assert_eq!(pixels.len(), (w * h) as usize);
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(pixels[(y * w + x) as usize]))
    }

    #[test]
    fn jet_runs_dark_blue_to_dark_red_through_green() {
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        let [r, g, b] = Colormap::Jet.rgb(0.5);
        assert_eq!(g, 255);
        assert!(r < 160 && b < 160, "jet(0.5) = {:?}", [r, g, b]);
        // Pure blue and pure red plateaus of matplotlib's segment data.
        assert_eq!(Colormap::Jet.rgb(0.225), [0, 102, 255]);
        assert_eq!(Colormap::Jet.rgb(0.8), [255, 104, 0]);
    }

    #[test]
    fn listed_colormaps_match_matplotlib_at_ends_and_middle() {
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        // viridis(0.5) is matplotlib's #21918c.
        assert!(close(Colormap::Viridis.rgb(0.5), [33, 145, 140], 2));
        assert_eq!(Colormap::Inferno.rgb(0.0), [0, 0, 4]);
        assert_eq!(Colormap::Inferno.rgb(1.0), [252, 255, 164]);
        assert_eq!(Colormap::Turbo.rgb(0.0), [48, 18, 59]);
        assert_eq!(Colormap::Turbo.rgb(1.0), [122, 4, 3]);
    }

    #[test]
    fn gray_and_diverging() {
        assert_eq!(Colormap::Gray.rgb(0.0), [0, 0, 0]);
        assert_eq!(Colormap::Gray.rgb(1.0), [255, 255, 255]);
        assert_eq!(Colormap::Gray.rgb(0.5), [128, 128, 128]);
        assert!(close(Colormap::Diverging.rgb(0.5), [255, 255, 255], 10));
        let [r, _, b] = Colormap::Diverging.rgb(0.0);
        assert!(b > r, "diverging(0) should be blue");
        let [r, _, b] = Colormap::Diverging.rgb(1.0);
        assert!(r > b, "diverging(1) should be red");
    }

    #[test]
    fn rgb_clamps_and_treats_nan_as_zero() {
        for c in Colormap::ALL {
            assert_eq!(c.rgb(f32::NAN), c.rgb(0.0), "{}", c.name());
            assert_eq!(c.rgb(-3.0), c.rgb(0.0), "{}", c.name());
            assert_eq!(c.rgb(7.0), c.rgb(1.0), "{}", c.name());
            assert_eq!(c.rgb(f32::INFINITY), c.rgb(1.0), "{}", c.name());
        }
    }

    #[test]
    fn colormap_names_parse_and_cycle() {
        for c in Colormap::ALL {
            assert_eq!(Colormap::parse(c.name()), Some(c));
            assert_eq!(Colormap::parse(&c.name().to_uppercase()), Some(c));
        }
        assert_eq!(Colormap::parse("rainbow"), None);
        assert_eq!(Colormap::default(), Colormap::Jet);
        let mut c = Colormap::Jet;
        let mut seen = Vec::new();
        for _ in 0..Colormap::ALL.len() {
            seen.push(c);
            c = c.next();
        }
        assert_eq!(c, Colormap::Jet);
        assert_eq!(seen, Colormap::ALL.to_vec());
    }

    #[test]
    fn map_image_maps_range_linearly() {
        let map = Map::new(1, 4, vec![0.0, 5.0, 10.0, f32::NAN]).unwrap();
        let out = map_image(&map, (0.0, 10.0), Colormap::Gray);
        assert_eq!(out.dimensions(), (4, 1));
        let px: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(px, [0, 128, 255, 0]);
        // Values past the range clamp to its ends.
        let out = map_image(&map, (2.0, 5.0), Colormap::Gray);
        let px: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(px, [0, 255, 255, 0]);
    }

    #[test]
    fn map_image_with_constant_or_bad_range_does_not_panic() {
        let map = Map::new(2, 2, vec![3.0; 4]).unwrap();
        let out = map_image(&map, (3.0, 3.0), Colormap::Gray);
        assert!(out.pixels().all(|p| p.0 == [0, 0, 0]));
        let out = map_image(&map, (3.0, 3.0), Colormap::Diverging);
        assert!(out.pixels().all(|p| p.0 == Colormap::Diverging.rgb(0.5)));
        let out = map_image(&map, (f32::NAN, 1.0), Colormap::Jet);
        assert!(out.pixels().all(|p| p.0 == Colormap::Jet.rgb(0.0)));
        // Inconsistent public fields: short data draws as t = 0 rather than panicking.
        let short = Map { height: 2, width: 2, data: vec![1.0] };
        let out = map_image(&short, (0.0, 1.0), Colormap::Gray);
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 1).0, [0, 0, 0]);
    }

    #[test]
    fn input_image_grey_rgb_and_other_channel_counts() {
        let grey = input_image(&[0.0, 1.0, 0.5, 2.0], 1, 2, 2);
        assert_eq!(grey.dimensions(), (2, 2));
        assert_eq!(grey.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(grey.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(grey.get_pixel(0, 1).0, [128, 128, 128]);
        assert_eq!(grey.get_pixel(1, 1).0, [255, 255, 255]);
        // Planar: all of R, then all of G, then all of B.
        let rgb = input_image(&[1.0, 0.0, 0.0, 1.0, 0.5, 0.0], 3, 1, 2);
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 128]);
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 255, 0]);
        let two = input_image(&[0.0, 1.0, 1.0, 0.0], 2, 1, 2);
        assert_eq!(two.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(two.get_pixel(1, 0).0, [255, 255, 255]);
        let short = input_image(&[1.0], 1, 1, 2);
        assert_eq!(short.get_pixel(1, 0).0, [0, 0, 0]);
    }

    #[test]
    fn overlay_blends_and_scales_heat() {
        let base = img(2, 2, &[[0, 0, 0], [100, 100, 100], [200, 0, 0], [0, 0, 200]]);
        let heat = img(1, 1, &[[255, 255, 255]]);
        let out = overlay(&base, &heat, 0.25);
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0).0, [64, 64, 64]);
        assert_eq!(out.get_pixel(1, 0).0, [139, 139, 139]);
        assert_eq!(out.get_pixel(0, 1).0, [214, 64, 64]);
        assert_eq!(overlay(&base, &heat, 0.0), base);
        assert!(overlay(&base, &heat, 5.0).pixels().all(|p| p.0 == [255, 255, 255]));
    }

    #[test]
    fn scale_nearest_replicates_and_samples_centres() {
        let (r, b) = ([255, 0, 0], [0, 0, 255]);
        let up = scale_nearest(&img(2, 1, &[r, b]), 4, 2);
        for y in 0..2 {
            let row: Vec<[u8; 3]> = (0..4).map(|x| up.get_pixel(x, y).0).collect();
            assert_eq!(row, [r, r, b, b]);
        }
        let src = img(4, 1, &[[0; 3], [1; 3], [2; 3], [3; 3]]);
        let down = scale_nearest(&src, 2, 1);
        assert_eq!(down.get_pixel(0, 0).0, [1; 3]);
        assert_eq!(down.get_pixel(1, 0).0, [3; 3]);
        assert_eq!(scale_nearest(&image::RgbImage::new(0, 0), 3, 2).dimensions(), (3, 2));
        assert_eq!(scale_nearest(&src, 0, 0).dimensions(), (0, 0));
    }

    #[test]
    fn grid_size_and_placement() {
        let tiles: Vec<image::RgbImage> = (0..5)
            .map(|i| image::RgbImage::from_pixel(3, 3, image::Rgb([i * 40 + 10; 3])))
            .collect();
        let bg = [1, 2, 3];
        let out = grid(&tiles, 3, 1, bg);
        assert_eq!(out.dimensions(), (11, 7));
        assert_eq!(out.get_pixel(0, 0).0, [10; 3]);
        assert_eq!(out.get_pixel(3, 0).0, bg, "gap column");
        assert_eq!(out.get_pixel(4, 0).0, [50; 3]);
        assert_eq!(out.get_pixel(0, 3).0, bg, "gap row");
        assert_eq!(out.get_pixel(4, 4).0, [170; 3], "tile 4 is row 1, column 1");
        assert_eq!(out.get_pixel(8, 4).0, bg, "the sixth cell is empty");
        // Cells take the largest tile's size; a smaller tile is centred.
        let mixed = [image::RgbImage::from_pixel(1, 1, image::Rgb([9; 3])), tiles[0].clone()];
        let out = grid(&mixed, 2, 0, bg);
        assert_eq!(out.dimensions(), (6, 3));
        assert_eq!(out.get_pixel(1, 1).0, [9; 3]);
        assert_eq!(out.get_pixel(0, 0).0, bg);
        // More columns than tiles, no columns, no tiles.
        assert_eq!(grid(&tiles[..2], 10, 1, bg).dimensions(), (7, 3));
        assert_eq!(grid(&tiles[..2], 0, 1, bg).dimensions(), (3, 7));
        let empty = grid(&[], 3, 1, bg);
        assert_eq!(empty.dimensions(), (1, 1));
        assert_eq!(empty.get_pixel(0, 0).0, bg);
    }

    #[test]
    fn grid_columns_is_ceil_sqrt() {
        let got: Vec<usize> = [0, 1, 2, 4, 5, 9, 10, 32, 64, 65].map(grid_columns).to_vec();
        assert_eq!(got, [1, 1, 2, 2, 3, 3, 4, 6, 8, 9]);
    }

    #[test]
    fn colorbar_spans_the_colormap() {
        let bar = colorbar(Colormap::Gray, 5, 2);
        assert_eq!(bar.dimensions(), (5, 2));
        assert_eq!(bar.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(bar.get_pixel(2, 1).0, [128, 128, 128]);
        assert_eq!(bar.get_pixel(4, 0).0, [255, 255, 255]);
        assert_eq!(colorbar(Colormap::Jet, 1, 1).get_pixel(0, 0).0, Colormap::Jet.rgb(0.0));
    }

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

    /// Header length and header text of `.npy` bytes.
    fn npy_header(bytes: &[u8]) -> (usize, String) {
        let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        (len, String::from_utf8(bytes[10..10 + len].to_vec()).unwrap())
    }

    #[test]
    fn npy_bytes_layout() {
        let data = [0.0f32, 1.5, -2.0, 3.25, f32::MAX, 1e-8];
        let bytes = npy_bytes(&[2, 3], &data).unwrap();
        assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
        let (len, header) = npy_header(&bytes);
        assert_eq!((10 + len) % 64, 0);
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert!(header.trim_end_matches('\n').trim_end().ends_with('}'));
        let values: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&bytes[10 + len..], &values[..]);
    }

    #[test]
    fn npy_bytes_shapes_and_errors() {
        let (_, header) = npy_header(&npy_bytes(&[4], &[0.0; 4]).unwrap());
        assert!(header.contains("'shape': (4,), }"), "{header}");
        let (_, header) = npy_header(&npy_bytes(&[], &[7.0]).unwrap());
        assert!(header.contains("'shape': (), }"), "{header}");
        let bytes = npy_bytes(&[2, 0, 3], &[]).unwrap();
        let (len, header) = npy_header(&bytes);
        assert!(header.contains("'shape': (2, 0, 3), }"), "{header}");
        assert_eq!(bytes.len(), 10 + len);
        assert!(matches!(npy_bytes(&[2, 3], &[0.0; 5]), Err(Error::Invalid(_))));
        assert!(matches!(npy_bytes(&[usize::MAX, 3], &[0.0; 3]), Err(Error::Invalid(_))));
        // Every header length keeps the data aligned.
        for n in 0..200 {
            let shape: Vec<usize> = vec![1; n % 40].into_iter().chain([n]).collect();
            let bytes = npy_bytes(&shape, &vec![0.0; n]).unwrap();
            assert_eq!((10 + npy_header(&bytes).0) % 64, 0);
        }
    }

    #[test]
    fn write_npy_writes_npy_bytes_and_names_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write_npy(&path, &[1, 2], &[1.0, 2.0]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), npy_bytes(&[1, 2], &[1.0, 2.0]).unwrap());
        let missing = dir.path().join("no/such/dir/m.npy");
        match write_npy(&missing, &[1], &[1.0]) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn save_png_round_trips_and_names_path_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let picture = img(2, 1, &[[1, 2, 3], [250, 128, 0]]);
        save_png(&picture, &path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), picture);
        let missing = dir.path().join("no/such/dir/t.png");
        match save_png(&picture, &missing) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        match save_png(&image::RgbImage::new(0, 0), &path) {
            Err(Error::Invalid(message)) => assert!(message.contains("t.png"), "{message}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
