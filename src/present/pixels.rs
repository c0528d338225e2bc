//! Images from numbers: maps through a colormap, network inputs, heatmap overlays,
//! nearest-neighbour scaling, grids of tiles, colour bars and bitmap text, as
//! `image::RgbImage`.

use super::colormap::{Colormap, to_byte};
use crate::methods::Map;

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

/// An input `[C, H, W]` of values in [0, 1] drawn: a map one row high (a signal, a 1-D
/// CNN's input) as its plot ([`signal_plot`]), else as an image ([`input_image`]).
pub fn input_picture(pixels: &[f32], [c, h, w]: [usize; 3]) -> image::RgbImage {
    match h == 1 && w > 1 {
        true => signal_plot(pixels, c, w, None),
        false => input_image(pixels, c, h, w),
    }
}

/// Narrowest a signal's plot is drawn: each sample gets as many columns as fit.
const PLOT_MIN_WIDTH: usize = 240;
/// Colours of a plot's traces, one per channel in turn.
const TRACES: [[u8; 3]; 6] = [
    [255, 255, 255],
    [0, 220, 255],
    [255, 150, 40],
    [255, 80, 220],
    [120, 255, 90],
    [255, 240, 60],
];
/// A plot's ground where no map is under it.
const PLOT_GROUND: [u8; 3] = [24, 24, 24];

/// A signal's plot (`values` planar `[channels, len]`, a 1-D CNN's input): each channel a
/// trace in its own colour (white, cyan, orange, magenta, green, yellow, in turn) on one
/// vertical scale from the smallest value to the largest, over `ground` when given (a map
/// of the signal's samples, scaled to the plot's size and dimmed: a saliency's bands along
/// the time axis) or a dark ground. Traces have a dark edge, so they read on any map.
pub fn signal_plot(
    values: &[f32],
    channels: usize,
    len: usize,
    ground: Option<&image::RgbImage>,
) -> image::RgbImage {
    let step = PLOT_MIN_WIDTH.div_ceil(len.max(1)).max(1);
    let width = dim(len.max(1) * step);
    let height = (width / 3).clamp(48, 160);
    let mut out = match ground {
        Some(map) => {
            let scaled = scale_nearest(map, width, height);
            let dim_by = |c: u8| (f32::from(c) * 0.7).round() as u8;
            image::RgbImage::from_fn(width, height, |x, y| {
                image::Rgb(scaled.get_pixel(x, y).0.map(dim_by))
            })
        }
        None => image::RgbImage::from_pixel(width, height, image::Rgb(PLOT_GROUND)),
    };
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) =
        finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    // Rows 3..height-3 hold the traces, the largest value at the top; a flat signal runs
    // along the middle.
    let (top, bottom) = (3.0, (height - 4) as f32);
    let row = |v: f32| -> u32 {
        let t = if hi > lo && v.is_finite() { (v - lo) / (hi - lo) } else { 0.5 };
        (bottom - t * (bottom - top)).round() as u32
    };
    for c in 0..channels {
        let colour = image::Rgb(TRACES[c % TRACES.len()]);
        let sample = |i: usize| values.get(c * len + i).copied().unwrap_or(f32::NAN);
        // Each sample's columns, joined to the previous sample's row by a vertical run.
        let mut previous = row(sample(0));
        for i in 0..len {
            let current = row(sample(i));
            for x in (i * step) as u32..((i + 1) * step) as u32 {
                let (from, to) = (previous.min(current), previous.max(current));
                for y in from.saturating_sub(1)..=(to + 1).min(height - 1) {
                    if y + 1 == from || y == to + 1 {
                        out.put_pixel(x, y, image::Rgb([0, 0, 0]));
                    }
                }
                for y in from..=to {
                    out.put_pixel(x, y, colour);
                }
                previous = current;
            }
        }
    }
    out
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

/// Height and width in pixels of one character of [`draw_text`] at size 1.
pub const GLYPH: u32 = 8;

/// What a character no table of `font8x8` has is drawn as: an empty box (a CJK class name
/// then shows one box per character, its length visible, never a misleading `?`).
pub const MISSING_GLYPH: [u8; 8] = [0x7E, 0x42, 0x42, 0x42, 0x42, 0x42, 0x7E, 0x00];

/// The 8×8 bitmap of `c` (rows top down, bit 0 the leftmost pixel): from `font8x8`'s tables
/// (ASCII, Latin-1, Greek, box drawing, blocks, hiragana, a few signs); the few other signs
/// captions use are drawn as their ASCII spelling's first character; anything else as
/// [`MISSING_GLYPH`].
pub fn glyph(c: char) -> [u8; 8] {
    use font8x8::UnicodeFonts;
    let c = match c {
        '−' | '–' | '—' => '-',
        '→' => '>',
        '…' => '.',
        '✓' => 'v',
        '✗' => 'x',
        '≈' => '~',
        c => c,
    };
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::GREEK_FONTS.get(c))
        .or_else(|| font8x8::BOX_FONTS.get(c))
        .or_else(|| font8x8::BLOCK_FONTS.get(c))
        .or_else(|| font8x8::HIRAGANA_FONTS.get(c))
        .or_else(|| font8x8::MISC_FONTS.get(c))
        .unwrap_or(MISSING_GLYPH)
}

/// Width in pixels of `text` drawn at `size` (each character `8·size` wide).
pub fn text_width(text: &str, size: u32) -> u32 {
    dim(text.chars().count()).saturating_mul(GLYPH * size)
}

/// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a `size`×`size`
/// square of `color`; whatever falls outside `img` is left out.
pub fn draw_text(img: &mut image::RgbImage, x: u32, y: u32, text: &str, color: [u8; 3], size: u32) {
    let size = size.max(1);
    for (i, c) in text.chars().enumerate() {
        let left = x.saturating_add(dim(i).saturating_mul(GLYPH * size));
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..8u32 {
                if bits >> col & 1 == 0 {
                    continue;
                }
                for dy in 0..size {
                    for dx in 0..size {
                        let px = left.saturating_add(col * size + dx);
                        let py = y.saturating_add(row as u32 * size + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, image::Rgb(color));
                        }
                    }
                }
            }
        }
    }
}

/// `text` cut to at most `chars` characters, the cut marked by a final `.`.
pub fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(chars.saturating_sub(1)).collect();
    if chars > 0 {
        cut.push('.');
    }
    cut
}

/// `text` broken into lines of at most `chars` characters, at spaces where it can (a word
/// longer than a line is cut).
pub fn wrap(text: &str, chars: usize) -> Vec<String> {
    let chars = chars.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let (len, wlen) = (line.chars().count(), word.chars().count());
            if len > 0 && len + 1 + wlen <= chars {
                line.push(' ');
                line.push_str(&word);
                break;
            }
            if len == 0 && wlen <= chars {
                line = word;
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a whole line.
            lines.push(word.chars().take(chars).collect());
            word = word.chars().skip(chars).collect();
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signals_plot_draws_each_channel_on_one_scale_over_its_ground() {
        // Channel 0 rises from the smallest value to the largest, channel 1 stays at the
        // middle of that range; 10 samples of 24 columns each.
        let rise: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let values: Vec<f32> = rise.iter().copied().chain([4.5; 10]).collect();
        let plot = signal_plot(&values, 2, 10, None);
        assert_eq!(plot.dimensions(), (240, 80));
        let colour_at = |x: u32, y: u32| plot.get_pixel(x, y).0;
        let column = |x: u32, colour: [u8; 3]| {
            (0..80).filter(|&y| colour_at(x, y) == colour).collect::<Vec<_>>()
        };
        let [white, cyan] = [TRACES[0], TRACES[1]];
        // The first sample on the bottom row of the traces, the last on the top one.
        assert_eq!(column(5, white), [76]);
        assert_eq!(column(230, white), [3]);
        assert_eq!(column(100, cyan), [40]);
        // A dark edge above and below a trace, the ground elsewhere.
        assert_eq!(colour_at(5, 75), [0, 0, 0]);
        assert_eq!(colour_at(5, 20), PLOT_GROUND);
        // Over a map, its colours dimmed, stretched to the plot (two bands here).
        let ground = image::RgbImage::from_fn(2, 1, |x, _| image::Rgb([200 * x as u8, 100, 0]));
        let plot = signal_plot(&values, 2, 10, Some(&ground));
        assert_eq!(plot.get_pixel(5, 20).0, [0, 70, 0]);
        assert_eq!(plot.get_pixel(200, 20).0, [140, 70, 0]);
        // A flat signal runs along the middle; NaN draws there too.
        let flat = signal_plot(&[1.0, 1.0, f32::NAN], 1, 3, None);
        assert_eq!(flat.get_pixel(0, 40).0, TRACES[0]);
        assert_eq!(flat.get_pixel(239, 40).0, TRACES[0]);
    }

    #[test]
    fn draw_text_sets_the_glyph_pixels_only() {
        let mut canvas = image::RgbImage::from_pixel(20, 10, image::Rgb([255; 3]));
        draw_text(&mut canvas, 1, 1, "I", [0, 0, 0], 1);
        let ink: Vec<(u32, u32)> = canvas
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [0, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        // font8x8's 'I': rows 0x1E, 0x0C ×5, 0x1E, 0 (bit 0 leftmost).
        let expected: Vec<(u32, u32)> = (0..7u32)
            .flat_map(|row| {
                let bits: u32 = if row == 0 || row == 6 { 0x1E } else { 0x0C };
                (0..8u32).filter(move |c| bits >> c & 1 == 1).map(move |c| (1 + c, 1 + row))
            })
            .collect();
        let mut ink_sorted = ink.clone();
        ink_sorted.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(ink_sorted, expected);
        // Size 2 doubles each pixel; text past the edge is clipped without a panic.
        let mut big = image::RgbImage::new(40, 20);
        draw_text(&mut big, 0, 0, "I", [255, 0, 0], 2);
        assert_eq!(big.pixels().filter(|p| p.0 == [255, 0, 0]).count(), ink.len() * 4);
        draw_text(&mut big, 35, 15, "WWW", [255, 0, 0], 3);
        assert_eq!(text_width("ab×", 2), 48);
        assert_eq!(glyph('→'), glyph('>'));
        // Every table font8x8 has; a box, not `?`, for what none has (a CJK name).
        use font8x8::UnicodeFonts;
        assert_eq!(Some(glyph('α')), font8x8::GREEK_FONTS.get('α'));
        assert_eq!(Some(glyph('é')), font8x8::LATIN_FONTS.get('é'));
        assert_eq!(Some(glyph('ね')), font8x8::HIRAGANA_FONTS.get('ね'));
        assert_eq!(Some(glyph('┼')), font8x8::BOX_FONTS.get('┼'));
        assert_eq!(Some(glyph('≤')), font8x8::MISC_FONTS.get('≤'));
        assert_eq!(glyph('猫'), MISSING_GLYPH);
        assert_ne!(glyph('猫'), glyph('?'));
    }

    #[test]
    fn wrap_and_truncate() {
        assert_eq!(
            wrap("saliency · class 7 (p=0.999)", 12),
            ["saliency ·", "class 7", "(p=0.999)"]
        );
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(truncate("vanilla", 10), "vanilla");
        assert_eq!(truncate("vanilla", 4), "van.");
        assert_eq!(truncate("vanilla", 0), "");
    }
    use crate::present::testing::img;

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
}
