//! Method results as pictures with captions: the one place that decides how each method is
//! shown, so `convscope saliency -o x.png`, the inline print and the explorer's panel show
//! the same pixels from the same numbers.

use image::RgbImage;

use crate::data::input::Prepared;
use crate::engine::ReluRule;
use crate::engine::argmax;
use crate::error::Result;
use crate::methods::actmax::ActMaxResult;
use crate::methods::attribution::Attribution;
use crate::methods::gradcam::CamConfig;
use crate::methods::occlusion::{self, OcclusionConfig};
use crate::methods::{Map, features, filters, gradcam, saliency};
use crate::model::Model;
use crate::model::ValueId;
use crate::present::colormap::Colormap;
use crate::present::pixels;

/// A picture and what it shows.
#[derive(Clone, Debug)]
pub struct Picture {
    /// The pixels, at the map's own resolution (callers scale).
    pub image: RgbImage,
    /// One line: method, class and probability, layer and size, modifier.
    pub caption: String,
    /// The values behind the picture, for `--raw`: shape and row-major data.
    pub raw: (Vec<usize>, Vec<f32>),
    /// Colour scale and the value range it spans, for a colour bar.
    pub scale: Option<(Colormap, (f32, f32))>,
    /// What the user must be told: a map that says nothing, a method that cannot apply.
    pub warnings: Vec<String>,
    /// How `image` divides into labelled panels.
    pub panels: Panels,
    /// The panels of a grid picture (filters, feature maps, act-max images), for a viewer
    /// that lays them out itself; empty for a single picture.
    pub tiles: Vec<Tile>,
}

/// How a picture's image divides into panels: a grid as [`pixels::grid`] lays it out, of
/// `labels.len()` equal cells in `columns` columns with `gap` pixels between them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Panels {
    /// Cells per row.
    pub columns: usize,
    /// Pixels between cells.
    pub gap: u32,
    /// One label per cell, row by row.
    pub labels: Vec<String>,
}

impl Panels {
    /// One panel: the whole image.
    pub fn single(label: impl Into<String>) -> Panels {
        Panels { columns: 1, gap: 0, labels: vec![label.into()] }
    }

    /// A grid of labelled cells.
    pub fn grid(columns: usize, gap: u32, labels: Vec<String>) -> Panels {
        Panels { columns, gap, labels }
    }
}

/// Figure colours: the article's (matplotlib's) white page and black text.
const PAGE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [0, 0, 0];
const FRAME: [u8; 3] = [150, 150, 150];
const WARNING_INK: [u8; 3] = [190, 0, 0];

impl Picture {
    /// The cells of `image` as [`Panels`] describes them (the whole image when it names
    /// none).
    pub fn panel_images(&self) -> Vec<RgbImage> {
        let n = self.panels.labels.len();
        if n <= 1 {
            return vec![self.image.clone()];
        }
        let (cols, gap) = (self.panels.columns.clamp(1, n) as u32, self.panels.gap);
        let rows = n.div_ceil(cols as usize) as u32;
        let cell_w = self.image.width().saturating_sub((cols - 1) * gap) / cols;
        let cell_h = self.image.height().saturating_sub((rows - 1) * gap) / rows;
        (0..n as u32)
            .map(|i| {
                let (x, y) = ((i % cols) * (cell_w + gap), (i / cols) * (cell_h + gap));
                image::imageops::crop_imm(&self.image, x, y, cell_w, cell_h).to_image()
            })
            .collect()
    }

    /// The scale [`Picture::figure`] draws at by default: the smallest that makes each
    /// panel 224 pixels or more on its longer side, but no more than keeps the panels
    /// within 2,048 pixels side by side.
    pub fn figure_scale(&self) -> u32 {
        let (w, h) = self.panel_images().first().map_or((1, 1), RgbImage::dimensions);
        let cols = dim(self.panels.columns.clamp(1, self.panels.labels.len().max(1)));
        let wanted = 224u32.div_ceil(w.max(h).max(1));
        wanted.min(2048 / (cols * w.max(1)).max(1)).max(1)
    }

    /// The picture as the article's figures show it, for `-o` and the explorer's export: a
    /// title (the caption), each panel `scale` times its size with its label above it, a
    /// colour bar with tick values under them, and the warnings, on a white page.
    pub fn figure(&self, scale: u32) -> RgbImage {
        let scale = scale.max(1);
        let panels = self.panel_images();
        let (cell_w, cell_h) = panels.first().map_or((1, 1), |p| (p.width(), p.height()));
        let (cell_w, cell_h) = (cell_w.max(1) * scale, cell_h.max(1) * scale);
        let cols = self.panels.columns.clamp(1, panels.len().max(1)) as u32;
        let rows = panels.len().div_ceil(cols as usize) as u32;
        // Text at twice the font's size once the figure is wide enough to need it.
        let text = if cols * cell_w >= 600 { 2 } else { 1 };
        let (line, margin, gap) = (10 * text, 6 * text, 6 * text);
        let grid_w = cols * cell_w + (cols - 1) * gap;
        let width = (grid_w + 2 * margin).max(320 * text);
        let chars = ((width - 2 * margin) / (pixels::GLYPH * text)) as usize;
        let title = pixels::wrap(&self.caption, chars);
        let warnings: Vec<String> = self
            .warnings
            .iter()
            .flat_map(|w| pixels::wrap(&format!("warning: {w}"), chars))
            .collect();
        let labelled = self.panels.labels.iter().any(|l| !l.is_empty());
        let label_h = if labelled { line } else { 0 };
        let bar_h = if self.scale.is_some() { 4 * line } else { 0 };
        let title_h = dim(title.len()) * line;
        let height = margin
            + title_h
            + gap
            + rows * (label_h + cell_h)
            + (rows - 1) * gap
            + bar_h
            + dim(warnings.len()) * line
            + margin;
        let mut out = RgbImage::from_pixel(width, height, image::Rgb(PAGE));
        let mut y = margin;
        for l in &title {
            pixels::draw_text(&mut out, margin, y, l, INK, text);
            y += line;
        }
        y += gap;
        let left = (width - grid_w) / 2;
        for (i, panel) in panels.iter().enumerate() {
            let (col, row) = (i as u32 % cols, i as u32 / cols);
            let x = left + col * (cell_w + gap);
            let top = y + row * (label_h + cell_h + gap);
            if let Some(label) = self.panels.labels.get(i) {
                let label = pixels::truncate(label, (cell_w / (pixels::GLYPH * text)) as usize);
                let lx = x + cell_w.saturating_sub(pixels::text_width(&label, text)) / 2;
                pixels::draw_text(&mut out, lx, top, &label, INK, text);
            }
            let scaled = pixels::scale_nearest(panel, cell_w, cell_h);
            image::imageops::replace(&mut out, &scaled, i64::from(x), i64::from(top + label_h));
            frame(&mut out, x, top + label_h, cell_w, cell_h);
        }
        y += rows * (label_h + cell_h) + (rows - 1) * gap;
        if let Some((cmap, range)) = self.scale {
            colour_bar(
                &mut out,
                (left, y + line),
                grid_w.min(width - 2 * margin),
                cmap,
                range,
                text,
            );
            y += bar_h;
        }
        for l in &warnings {
            pixels::draw_text(&mut out, margin, y, l, WARNING_INK, text);
            y += line;
        }
        out
    }
}

/// A one-pixel frame just outside the `w`×`h` box at (`x`, `y`) (panels of white or
/// near-white pixels stay visible on the white page).
fn frame(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32) {
    let mut put = |px: i64, py: i64| {
        if let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py))
            && px < img.width()
            && py < img.height()
        {
            img.put_pixel(px, py, image::Rgb(FRAME));
        }
    };
    let (x, y, w, h) = (i64::from(x), i64::from(y), i64::from(w), i64::from(h));
    for px in x - 1..=x + w {
        put(px, y - 1);
        put(px, y + h);
    }
    for py in y..y + h {
        put(x - 1, py);
        put(x + w, py);
    }
}

/// Tick values for a colour bar over `(lo, hi)`: `count` (at least 2), evenly spaced, with
/// as many decimals as the range needs to tell them apart.
pub fn ticks((lo, hi): (f32, f32), count: usize) -> Vec<(f32, String)> {
    let count = count.max(2);
    let span = (hi - lo).abs();
    let decimals = if span > 0.0 && span.is_finite() {
        (-(span / (count - 1) as f32).log10()).ceil().clamp(0.0, 8.0) as usize + 1
    } else {
        3
    };
    (0..count)
        .map(|k| {
            let t = k as f32 / (count - 1) as f32;
            let v = lo + t * (hi - lo);
            // "-0.000" reads as a sign error; a tick at zero is "0".
            let text = format!("{v:.decimals$}");
            let text = if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
                format!("{:.decimals$}", 0.0)
            } else {
                text
            };
            (t, text)
        })
        .collect()
}

/// A colour bar `width` wide with its top-left corner at `at`: the gradient, a tick under
/// each of [`ticks`]' values and the value under the tick.
fn colour_bar(
    img: &mut RgbImage,
    (x, y): (u32, u32),
    width: u32,
    cmap: Colormap,
    range: (f32, f32),
    text: u32,
) {
    let bar_h = 10 * text;
    let bar = pixels::colorbar(cmap, width, bar_h);
    image::imageops::replace(img, &bar, i64::from(x), i64::from(y));
    frame(img, x, y, width, bar_h);
    // Five ticks where their values fit side by side with room between, else three.
    let widest = ticks(range, 5).iter().map(|(_, l)| pixels::text_width(l, text)).max();
    let count = if widest.unwrap_or(0) * 5 * 3 / 2 <= width { 5 } else { 3 };
    for (t, label) in ticks(range, count) {
        let tx = x + (t * width.saturating_sub(1) as f32).round() as u32;
        for dy in 0..3 * text {
            if tx < img.width() && y + bar_h + dy < img.height() {
                img.put_pixel(tx, y + bar_h + dy, image::Rgb(INK));
            }
        }
        let w = pixels::text_width(&label, text);
        // Centred under its tick, kept inside the bar's span.
        let lx = tx.saturating_sub(w / 2).clamp(x, (x + width).saturating_sub(w).max(x));
        pixels::draw_text(img, lx, y + bar_h + 4 * text, &label, INK, text);
    }
}

fn dim(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One panel of a grid picture.
#[derive(Clone, Debug)]
pub struct Tile {
    /// What it shows: a filter's index, a class's name.
    pub label: String,
    /// Its pixels on the picture's shared scale.
    pub image: RgbImage,
    /// Its pixels on a scale of its own and that scale's range, where the picture has a
    /// colour scale.
    pub own: Option<(RgbImage, (f32, f32))>,
    /// The narrowest it may be drawn, in pixels: a block of 3×3 kernels must keep every
    /// pixel, a feature map can lose some.
    pub smallest: u32,
}

/// A smooth picture (a map, an image) stays readable down to this many pixels across.
const SMALLEST_MAP: u32 = 10;

/// How heatmaps are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Colour scale.
    pub colormap: Colormap,
    /// Blend the heatmap over the input.
    pub overlay: bool,
}

/// A model, a prepared input and its class probabilities.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The model.
    pub model: &'a Model,
    /// The input.
    pub input: &'a Prepared,
    /// The model's probabilities for it.
    pub probs: &'a [f32],
}

impl Subject<'_> {
    /// The input drawn as an image (a signal as its plot).
    pub fn input_image(&self) -> Result<RgbImage> {
        Ok(pixels::input_picture(&self.input.pixels, self.model.input_chw()?))
    }

    /// A map's colours `heat` as shown: laid over the input with `overlay`, else alone; a
    /// signal's always under its plot (bands along the time axis: a strip one sample high
    /// alone says little).
    pub fn shown(&self, heat: RgbImage, overlay: bool) -> Result<RgbImage> {
        let [c, _, w] = self.model.input_chw()?;
        Ok(match (self.model.takes_signals(), overlay) {
            (true, _) => pixels::signal_plot(&self.input.pixels, c, w, Some(&heat)),
            (false, true) => pixels::overlay(&self.input_image()?, &heat, 0.5),
            (false, false) => heat,
        })
    }

    fn class_label(&self, class: usize) -> String {
        format!("class {}", self.short_label(class))
    }

    /// A panel's label: the class's name and probability.
    fn short_label(&self, class: usize) -> String {
        let p = self.probs.get(class).copied().unwrap_or(f32::NAN);
        format!("{} (p={p:.3})", self.model.classes[class])
    }

    /// A heatmap in [0, 1] of `class` as a picture, blended over the input when asked.
    fn heatmap(&self, map: &Map, class: usize, style: Style, caption: String) -> Result<Picture> {
        let heat = pixels::map_image(map, (0.0, 1.0), style.colormap);
        let image = self.shown(heat, style.overlay)?;
        Ok(Picture {
            image,
            caption,
            raw: (vec![map.height, map.width], map.data.clone()),
            scale: Some((style.colormap, (0.0, 1.0))),
            warnings: Vec::new(),
            panels: Panels::single(self.short_label(class)),
            tiles: Vec::new(),
        })
    }

    /// The article's row for one class: the input, then the map under each modifier
    /// (`map_for` makes one), as one picture.
    pub fn modifier_row(
        &self,
        class: usize,
        method: &str,
        mut map_for: impl FnMut(ReluRule) -> Result<Picture>,
    ) -> Result<Picture> {
        let input = self.input_image()?;
        let mut tiles = vec![input.clone()];
        let mut labels = vec!["input".to_string()];
        let mut first = None;
        let mut warnings = Vec::new();
        let mut raw = Vec::new();
        for rule in ReluRule::ALL {
            let picture = map_for(rule)?;
            // Every panel at the input's size, so the row's cells match.
            tiles.push(if picture.image.dimensions() == input.dimensions() {
                picture.image.clone()
            } else {
                pixels::scale_nearest(&picture.image, input.width(), input.height())
            });
            labels.push(rule.name().to_string());
            warnings.extend(picture.warnings.iter().cloned());
            raw.extend(picture.raw.1.iter().copied());
            first.get_or_insert(picture);
        }
        let Some(first) = first else {
            return Err(crate::Error::Invalid("no modifiers".into()));
        };
        let mut shape = vec![ReluRule::ALL.len()];
        shape.extend(first.raw.0.iter().copied());
        Ok(Picture {
            image: pixels::grid(&tiles, tiles.len(), 2, [0, 0, 0]),
            caption: format!(
                "{method} · {} · input | {}",
                self.class_label(class),
                ReluRule::ALL.map(ReluRule::name).join(" | ")
            ),
            raw: (shape, raw),
            scale: first.scale,
            warnings,
            panels: Panels::grid(tiles.len(), 2, labels),
            tiles: Vec::new(),
        })
    }
}

/// Saliency pictures, one per class, from one batched pass.
pub fn saliency(
    s: &Subject,
    classes: &[usize],
    rule: ReluRule,
    style: Style,
) -> Result<Vec<Picture>> {
    saliency::saliency_for(s.model, &s.input.tensor, classes, rule)?
        .iter()
        .map(|m| {
            let caption =
                format!("saliency · {} · modifier {}", s.class_label(m.class), rule.name());
            let mut picture = s.heatmap(&m.map, m.class, style, caption)?;
            if m.all_zero {
                picture.warnings.push(format!(
                    "the {} gradient of class {} is zero everywhere: this map shows nothing",
                    rule.name(),
                    s.model.classes[m.class]
                ));
            }
            Ok(picture)
        })
        .collect()
}

/// An attribution as a picture: the largest magnitude over the channels, min-max scaled,
/// `details` after the class and modifier in the caption; its raw values are the signed
/// attribution, `[C, H, W]`.
pub fn attribution(
    s: &Subject,
    attribution: &Attribution,
    method: &str,
    details: &str,
    style: Style,
) -> Result<Picture> {
    let (class, rule) = (attribution.class, attribution.rule.name());
    let mut picture = if attribution.signed {
        // Signed evidence on a scale whose middle is zero (unless the user chose another):
        // the channel sum, ± its largest magnitude.
        let sum = attribution.channel_sum()?;
        let most = sum.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let colormap =
            if style.colormap == Colormap::Jet { Colormap::Diverging } else { style.colormap };
        let centred = sum.data.iter().map(|v| v / (2.0 * most) + 0.5).collect();
        let caption = format!(
            "{method} · {} · modifier {rule}{details} · Σ over channels, signed: + for the class, − against",
            s.class_label(class)
        );
        let centred = Map::new(sum.height, sum.width, centred)?;
        let mut picture = s.heatmap(&centred, class, Style { colormap, ..style }, caption)?;
        picture.scale = Some((colormap, (-most, most)));
        picture
    } else {
        let caption = format!("{method} · {} · modifier {rule}{details}", s.class_label(class));
        s.heatmap(&attribution.map.normalised(), class, style, caption)?
    };
    // The values numpy gets (`--raw`, `-o x.npy`): the signed attribution of every input
    // value, not the picture's scaled magnitudes.
    let (h, w) = (attribution.map.height, attribution.map.width);
    picture.raw = (vec![attribution.channels, h, w], attribution.values.clone());
    if attribution.map.is_all_zero() {
        picture.warnings.push(format!(
            "the {rule} {method} of class {} is zero everywhere: this map shows nothing",
            s.model.classes[class]
        ));
    }
    Ok(picture)
}

fn no_evidence(model: &Model, cam: &gradcam::GradCam) -> Option<String> {
    cam.no_positive_evidence.then(|| {
        format!(
            "no positive evidence for class {} at layer {}: the map is all zero",
            model.classes[cam.class], cam.layer_name
        )
    })
}

/// CAM pictures, one per class, as `config` says (the gradient variants from one batched
/// pass; Score-CAM and Ablation-CAM calling `progress` with the fraction done).
pub fn grad_cam(
    s: &Subject,
    classes: &[usize],
    config: &CamConfig,
    style: Style,
    progress: &dyn Fn(f32),
) -> Result<Vec<Picture>> {
    gradcam::cams(s.model, &s.input.tensor, classes, config, progress)?
        .iter()
        .map(|cam| {
            let modifier = match cam.variant.uses_gradients() {
                true => format!(" · modifier {}", cam.rule.name()),
                false => String::new(),
            };
            let caption = format!(
                "{} · {} · layer {} ({}×{}){modifier}",
                cam.variant.title(),
                s.class_label(cam.class),
                cam.layer_name,
                cam.layer_size[0],
                cam.layer_size[1],
            );
            let mut picture = s.heatmap(&cam.map, cam.class, style, caption)?;
            picture.warnings.extend(no_evidence(s.model, cam));
            Ok(picture)
        })
        .collect()
}

/// The guided grad-CAM picture of one class.
pub fn guided_grad_cam(
    s: &Subject,
    class: usize,
    layer: Option<usize>,
    style: Style,
) -> Result<Picture> {
    let (map, cam) = gradcam::guided_grad_cam(s.model, &s.input.tensor, class, layer)?;
    let caption = format!(
        "guided grad-CAM · {} · layer {} ({}×{})",
        s.class_label(class),
        cam.layer_name,
        cam.layer_size[0],
        cam.layer_size[1]
    );
    let mut picture = s.heatmap(&map, class, style, caption)?;
    picture.warnings.extend(no_evidence(s.model, &cam));
    Ok(picture)
}

/// What the occlusion picture shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OcclusionShows {
    /// The drop p(intact) − p(occluded), on a diverging scale centred at 0 ("red =
    /// important"; blue where hiding a patch makes the class more likely).
    #[default]
    Drop,
    /// p(occluded) itself, on the fixed scale 0 to 1.
    Probability,
}

/// The smallest half-width of the drop's colour scale: a drop of 0.0004 stays a pale tint
/// instead of filling the scale.
const DROP_SCALE_FLOOR: f32 = 0.01;

/// Below this, the drop's whole range is too small to mean anything, and the picture says
/// so.
const INSENSITIVE: f32 = 1e-3;

/// The occlusion picture: the input, the heatmap of the drop in p (or of p), and the argmax
/// class per position. Honest scales: the drop on a diverging scale centred at 0 spanning
/// at least ±0.01, p on 0 to 1, the actual range in the caption, and a warning when the
/// probability hardly moves.
pub fn occlusion(
    s: &Subject,
    class: usize,
    config: &OcclusionConfig,
    shows: OcclusionShows,
    style: Style,
) -> Result<Picture> {
    let model = s.model;
    let occ = occlusion::occlusion(model, &s.input.tensor, class, config)?;
    let (lo, hi) = occ.drop.range();
    let mut warnings = Vec::new();
    let most = lo.abs().max(hi.abs());
    if most < INSENSITIVE {
        warnings.push(format!(
            "probability changes by at most {most:.4} — the model is insensitive here (p(class {}) stays {:.4})",
            model.classes[class], occ.original_probability
        ));
    }
    let (map, what, range, cmap) = match shows {
        OcclusionShows::Drop => {
            let half = most.max(DROP_SCALE_FLOOR);
            // Signed values need a scale whose middle is zero, whatever the user's scale.
            (&occ.drop, "drop in p", (-half, half), Colormap::Diverging)
        }
        OcclusionShows::Probability => (&occ.probability, "p", (0.0, 1.0), style.colormap),
    };
    let base = s.input_image()?;
    let heat = s.shown(pixels::map_image(map, range, cmap), style.overlay)?;
    let classes = Map::new(map.height, map.width, occ.argmax.iter().map(|&a| a as f32).collect())?;
    let mut class_map = class_image(model, &classes);
    if model.takes_signals() {
        // A strip one sample high, as tall as the plots beside it.
        class_map = pixels::scale_nearest(&class_map, base.width(), base.height());
    }
    let mut counts: Vec<(usize, usize)> =
        occ.counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    let counts: Vec<String> =
        counts.iter().map(|(c, n)| format!("{}×{n}", model.classes[*c])).collect();
    let caption = format!(
        "occlusion · {what} of class {} (intact p={:.4}) · drop from {lo:.4} to {hi:.4} · {} windows of {} · argmax counts {}",
        model.classes[class],
        occ.original_probability,
        occ.positions.len(),
        config.windows(map.height),
        counts.join(", ")
    );
    // A signal's three plots are wide: one above the other.
    let columns = if model.takes_signals() { 1 } else { 3 };
    Ok(Picture {
        image: pixels::grid(&[base, heat, class_map], columns, 1, [0, 0, 0]),
        caption,
        raw: (vec![map.height, map.width], map.data.clone()),
        scale: Some((cmap, range)),
        warnings,
        panels: Panels::grid(columns, 1, vec!["input".into(), what.into(), "argmax class".into()]),
        tiles: Vec::new(),
    })
}

fn rgb_filter(channels: &[Map], scale: f32) -> RgbImage {
    let (h, w) = (channels[0].height, channels[0].width);
    let pixels: Vec<f32> = channels
        .iter()
        .flat_map(|m| m.data.iter().map(|v| v / (2.0 * scale.max(1e-12)) + 0.5))
        .collect();
    pixels::input_image(&pixels, 3, h, w)
}

/// A conv layer's filters on one symmetric range (diverging unless another scale is
/// chosen), each filter's input channels side by side, or as RGB with 3 channels.
pub fn filters(model: &Model, layer: usize, style: Style) -> Result<Picture> {
    let filters = filters::filters(model, layer)?;
    let range = (-filters.scale, filters.scale);
    // Weights are signed: jet (the heatmap default) would hide where zero is.
    let cmap = if style.colormap == Colormap::Jet { Colormap::Diverging } else { style.colormap };
    // A filter as one picture on a symmetric range: as RGB, or its input channels
    // side by side (one row, for the PNG) or in a near-square block (a tile).
    let draw = |k: &[Map], scale: f32, columns: usize| -> RgbImage {
        if filters.is_rgb() {
            return rgb_filter(k, scale);
        }
        let part: Vec<RgbImage> =
            k.iter().map(|m| pixels::map_image(m, (-scale, scale), cmap)).collect();
        pixels::grid(&part, columns, u32::from(columns < k.len()), [0, 0, 0])
    };
    let tiles: Vec<RgbImage> =
        filters.kernels.iter().map(|k| draw(k, filters.scale, k.len())).collect();
    let panels: Vec<Tile> = filters
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let columns = pixels::grid_columns(k.len());
            let own = k.iter().flat_map(|m| m.data.iter()).fold(0.0f32, |a, v| a.max(v.abs()));
            let image = draw(k, filters.scale, columns);
            Tile {
                label: i.to_string(),
                smallest: image.width(),
                image,
                own: Some((draw(k, own, columns), (-own, own))),
            }
        })
        .collect();
    let first = &filters.kernels[0][0];
    let caption = format!(
        "filters of {} · {} filters of {}×{}×{} · colour range ±{:.3}{}",
        model.graph().nodes()[layer].name,
        filters.kernels.len(),
        first.height,
        first.width,
        filters.kernels[0].len(),
        filters.scale,
        if filters.is_rgb() { " · shown as RGB" } else { "" }
    );
    let raw: Vec<f32> =
        filters.kernels.iter().flatten().flat_map(|m| m.data.iter().copied()).collect();
    let shape = vec![filters.kernels.len(), filters.kernels[0].len(), first.height, first.width];
    let columns = pixels::grid_columns(tiles.len());
    Ok(Picture {
        image: pixels::grid(&tiles, columns, 1, [40, 40, 40]),
        caption,
        raw: (shape, raw),
        scale: Some((cmap, range)),
        warnings: Vec::new(),
        panels: Panels::grid(columns, 1, (0..tiles.len()).map(|i| format!("#{i}")).collect()),
        tiles: panels,
    })
}

/// A layer's output for the input, one tile per channel on one range for the whole layer
/// (so channels compare).
pub fn features(s: &Subject, layer: usize, style: Style) -> Result<Picture> {
    let model = s.model;
    let acts = model.forward(&s.input.tensor)?;
    let maps = features::feature_maps(model, &acts, layer, 0)?;
    let (lo, hi) = maps
        .iter()
        .map(Map::range)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let mut panels: Vec<Tile> = maps
        .iter()
        .enumerate()
        .map(|(i, m)| Tile {
            label: i.to_string(),
            image: pixels::map_image(m, (lo, hi), style.colormap),
            own: Some((pixels::map_image(m, m.range(), style.colormap), m.range())),
            smallest: SMALLEST_MAP,
        })
        .collect();
    let node = &model.graph().nodes()[layer];
    let shape = model.graph().shape(ValueId::of_node(layer));
    let mut caption = format!(
        "feature maps of {} ({}) · {} channel{} of {}×{} · range {lo:.3} to {hi:.3}",
        node.name,
        model.graph().type_name(layer),
        maps.len(),
        if maps.len() == 1 { "" } else { "s" },
        maps[0].height,
        maps[0].width,
    );
    let values: Vec<f32> = maps.iter().flat_map(|m| m.data.iter().copied()).collect();
    let score_map = model.score_map().filter(|m| m.node == layer);
    if let Some(score_map) = score_map {
        // The channels are the classes' scores: named so, and each position's class first.
        for (tile, name) in panels.iter_mut().zip(&model.classes) {
            tile.label.clone_from(name);
        }
        if score_map.binary {
            panels[0].label = format!("{} score", model.classes[1]);
        }
        let (h, w) = (maps[0].height, maps[0].width);
        let classes = score_map.classes(&values, h * w);
        let (tile, shares) = class_tile(model, &classes, h, w)?;
        panels.insert(0, tile);
        caption.push_str(&format!(
            " · first, each position's class by colour (turbo over the class indices): {shares}"
        ));
    }
    let tiles: Vec<RgbImage> = panels.iter().map(|t| t.image.clone()).collect();
    let labels = match score_map {
        Some(_) => panels.iter().map(|t| t.label.clone()).collect(),
        None => (0..tiles.len()).map(|i| format!("#{i}")).collect(),
    };
    let mut warnings = Vec::new();
    if lo == 0.0 && hi == 0.0 {
        warnings.push(format!("every activation of {} is zero for this input", node.name));
    }
    let columns = pixels::grid_columns(tiles.len());
    Ok(Picture {
        image: pixels::grid(&tiles, columns, 1, [40, 40, 40]),
        caption,
        raw: (shape.to_vec(), values),
        scale: Some((style.colormap, (lo, hi))),
        warnings,
        panels: Panels::grid(columns, 1, labels),
        tiles: panels,
    })
}

/// A tile of each position's class (`classes`, `h×w`) in the colours of the classes'
/// indices, and the classes' shares of the positions, largest first (the first few).
fn class_tile(model: &Model, classes: &[usize], h: usize, w: usize) -> Result<(Tile, String)> {
    const LISTED: usize = 4;
    let image = class_image(model, &Map::new(h, w, classes.iter().map(|&c| c as f32).collect())?);
    let mut counts = vec![0usize; model.num_classes()];
    for &c in classes {
        counts[c] += 1;
    }
    let mut ranked: Vec<(usize, usize)> =
        counts.into_iter().enumerate().filter(|&(_, n)| n > 0).collect();
    ranked.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    let share = |n: usize| 100.0 * n as f64 / classes.len().max(1) as f64;
    let mut shares: Vec<String> = ranked
        .iter()
        .take(LISTED)
        .map(|&(c, n)| {
            let colour = colour_name(class_colour(model, c));
            format!("{:.0}% {} ({colour})", share(n), model.classes[c])
        })
        .collect();
    if ranked.len() > LISTED {
        let rest: usize = ranked[LISTED..].iter().map(|&(_, n)| n).sum();
        shares.push(format!("{:.0}% {} others", share(rest), ranked.len() - LISTED));
    }
    let tile = Tile { label: "class".into(), image, own: None, smallest: SMALLEST_MAP };
    Ok((tile, shares.join(", ")))
}

/// A map of class indices in the colours of the classes (turbo over the indices).
fn class_image(model: &Model, classes: &Map) -> RgbImage {
    pixels::map_image(classes, (0.0, last_class(model)), Colormap::Turbo)
}

/// The highest class index, where [`class_image`]'s scale ends.
fn last_class(model: &Model) -> f32 {
    (model.num_classes().max(2) - 1) as f32
}

/// The colour [`class_image`] gives class `c`.
fn class_colour(model: &Model, c: usize) -> [u8; 3] {
    Colormap::Turbo.rgb(c as f32 / last_class(model))
}

/// A colour's everyday name, by its hue ("dark" where it is dim), for a caption to say
/// which colour is which class.
fn colour_name([r, g, b]: [u8; 3]) -> String {
    let (r, g, b) = (f32::from(r) / 255.0, f32::from(g) / 255.0, f32::from(b) / 255.0);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let chroma = max - min;
    let name = if chroma < 0.15 {
        "grey"
    } else {
        let sector = if max == r {
            ((g - b) / chroma).rem_euclid(6.0)
        } else if max == g {
            (b - r) / chroma + 2.0
        } else {
            (r - g) / chroma + 4.0
        };
        match sector * 60.0 {
            h if !(12.0..345.0).contains(&h) => "red",
            h if h < 21.0 => "red-orange",
            h if h < 33.5 => "orange",
            h if h < 48.0 => "amber",
            h if h < 70.0 => "yellow",
            h if h < 100.0 => "lime",
            h if h < 150.0 => "green",
            h if h < 200.0 => "cyan",
            h if h < 260.0 => "blue",
            _ => "purple",
        }
    };
    if max < 0.5 { format!("dark {name}") } else { name.to_string() }
}

/// Activation-maximisation images in a grid, each with its own classification by the
/// model in the caption (`names` label the targets).
pub fn maxact(model: &Model, result: &ActMaxResult, names: &[String]) -> Result<Picture> {
    let [c, h, w] = model.input_chw()?;
    let mut verdicts = Vec::new();
    for (name, x) in names.iter().zip(&result.inputs) {
        let probs = model.predict(x)?.flatten_all()?.to_vec1::<f32>()?;
        let best = argmax(&probs);
        verdicts.push(format!("{name}→{} ({:.2})", model.classes[best], probs[best]));
    }
    let caption = format!(
        "activation maximisation · {} steps · how the model classifies each: {}",
        result.iterations_run,
        verdicts.join(", ")
    );
    Ok(maxact_picture([c, h, w], &result.images, names, caption))
}

/// The grid of activation-maximisation images (pixels `[C, H, W]` in [0, 1] each), the
/// tiles labelled by `names`.
pub fn maxact_picture(
    [c, h, w]: [usize; 3],
    images: &[Vec<f32>],
    names: &[String],
    caption: String,
) -> Picture {
    let tiles: Vec<RgbImage> =
        images.iter().map(|img| pixels::input_picture(img, [c, h, w])).collect();
    let columns = pixels::grid_columns(tiles.len());
    let grid_tiles = tiles
        .iter()
        .zip(names)
        .map(|(image, name)| Tile {
            label: name.clone(),
            image: image.clone(),
            own: None,
            smallest: SMALLEST_MAP,
        })
        .collect();
    Picture {
        image: pixels::grid(&tiles, columns, 1, [40, 40, 40]),
        caption,
        raw: (vec![images.len(), c, h, w], images.iter().flatten().copied().collect()),
        scale: None,
        warnings: Vec::new(),
        panels: Panels::grid(columns, 1, names.to_vec()),
        tiles: grid_tiles,
    }
}

/// Several pictures as one grid (`--all-classes`); a single picture stays as it is.
pub fn combine(mut pictures: Vec<Picture>, title: &str) -> Picture {
    if pictures.len() == 1 {
        return pictures.remove(0);
    }
    let mut shape = vec![pictures.len()];
    shape.extend(pictures.first().map(|p| p.raw.0.clone()).unwrap_or_default());
    let images: Vec<RgbImage> = pictures.iter().map(|p| p.image.clone()).collect();
    let columns = pixels::grid_columns(images.len());
    Picture {
        image: pixels::grid(&images, columns, 1, [40, 40, 40]),
        caption: format!(
            "{title} (row by row) · first: {}",
            pictures.first().map_or("", |p| p.caption.as_str())
        ),
        raw: (shape, pictures.iter().flat_map(|p| p.raw.1.iter().copied()).collect()),
        scale: pictures.first().and_then(|p| p.scale),
        warnings: pictures.iter().flat_map(|p| p.warnings.clone()).collect(),
        panels: Panels::grid(
            columns,
            1,
            pictures.iter().map(|p| p.panels.labels.join(" ")).collect(),
        ),
        tiles: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(image: RgbImage, panels: Panels, scale: Option<(Colormap, (f32, f32))>) -> Picture {
        Picture {
            image,
            caption: "a caption".into(),
            raw: (vec![], vec![]),
            scale,
            warnings: vec!["careful".into()],
            panels,
            tiles: Vec::new(),
        }
    }

    #[test]
    fn colours_are_named_by_hue_and_dimness() {
        let named = |rgb: [u8; 3]| colour_name(rgb);
        assert_eq!(named([255, 0, 0]), "red");
        assert_eq!(named([255, 140, 0]), "orange");
        assert_eq!(named([250, 200, 40]), "amber");
        assert_eq!(named([240, 240, 20]), "yellow");
        assert_eq!(named([0, 200, 0]), "green");
        assert_eq!(named([0, 200, 200]), "cyan");
        assert_eq!(named([0, 0, 100]), "dark blue");
        assert_eq!(named([128, 128, 128]), "grey");
        assert_eq!(named([160, 40, 200]), "purple");
        // Turbo's ends, where a class tile's first and last classes are drawn.
        // Turbo from its first to its last colour, where classes are drawn, in twelfths.
        let names: Vec<String> =
            (0..=12).map(|i| named(Colormap::Turbo.rgb(i as f32 / 12.0))).collect();
        let expected = [
            "dark purple",
            "blue",
            "blue",
            "cyan",
            "cyan",
            "green",
            "lime",
            "yellow",
            "amber",
            "orange",
            "red-orange",
            "red",
            "dark red",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn panel_images_undo_the_grid() {
        let tiles: Vec<RgbImage> =
            (0..5u8).map(|i| RgbImage::from_pixel(3, 2, image::Rgb([i * 40; 3]))).collect();
        let labels: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let p = picture(pixels::grid(&tiles, 3, 1, [9; 3]), Panels::grid(3, 1, labels), None);
        assert_eq!(p.panel_images(), tiles);
        let single = picture(tiles[0].clone(), Panels::single("x"), None);
        assert_eq!(single.panel_images(), vec![tiles[0].clone()]);
    }

    #[test]
    fn ticks_span_the_range_with_the_decimals_it_needs() {
        let t = |range, n| -> Vec<String> { ticks(range, n).into_iter().map(|(_, s)| s).collect() };
        assert_eq!(t((0.0, 1.0), 5), ["0.00", "0.25", "0.50", "0.75", "1.00"]);
        assert_eq!(t((-0.01, 0.01), 3), ["-0.010", "0.000", "0.010"]);
        assert_eq!(t((0.998, 1.0), 2), ["0.9980", "1.0000"]);
        assert_eq!(t((-1e-9, 1e-9), 3)[1], "0.000000000");
        assert_eq!(t((2.0, 2.0), 2), ["2.000", "2.000"]);
    }

    #[test]
    fn a_figure_has_its_title_panels_bar_and_warnings_in_place() {
        let tiles: [RgbImage; 2] =
            std::array::from_fn(|_| RgbImage::from_pixel(4, 4, image::Rgb([0, 0, 200])));
        let p = picture(
            pixels::grid(&tiles, 2, 1, [0; 3]),
            Panels::grid(2, 1, vec!["left".into(), "right".into()]),
            Some((Colormap::Gray, (0.0, 1.0))),
        );
        let f = p.figure(10);
        // Text size 1 (panels 2 × 40 wide): margin 6, title 10, gap 6, label 10, panels 40,
        // bar 40, one warning line 10, margin 6; at least 320 wide.
        assert_eq!(f.dimensions(), (320, 6 + 10 + 6 + 10 + 40 + 40 + 10 + 6));
        let left = (320 - (40 + 6 + 40)) / 2;
        assert_eq!(f.get_pixel(left, 32).0, [0, 0, 200], "first panel's corner");
        assert_eq!(f.get_pixel(left - 1, 32).0, FRAME, "its frame");
        assert_eq!(f.get_pixel(left + 46, 71).0, [0, 0, 200], "second panel's far corner");
        let ink = |x0: u32, y0: u32, w: u32, h: u32, c: [u8; 3]| {
            (y0..y0 + h).any(|y| (x0..x0 + w).any(|x| f.get_pixel(x, y).0 == c))
        };
        assert!(ink(0, 6, 320, 8, INK), "title");
        assert!(ink(left, 22, 40, 8, INK) && ink(left + 46, 22, 40, 8, INK), "labels");
        // The bar one line under the panels: grey from black to white, left to right.
        let (bar_y, bar_w) = (72 + 10 + 5, 86);
        assert_eq!(f.get_pixel(left, bar_y).0, [0; 3]);
        assert_eq!(f.get_pixel(left + bar_w - 1, bar_y).0, [255; 3]);
        assert!(ink(0, 72 + 40, 320, 8, WARNING_INK), "the warning");
    }

    /// Whether `img` shows `glyph` in `INK` at size 1 somewhere: its set bits inked, the
    /// others not.
    fn shows_glyph(img: &RgbImage, glyph: [u8; 8]) -> bool {
        let fits = |x0: u32, y0: u32| {
            (0..8u32).all(|row| {
                (0..8u32).all(|col| {
                    let inked = img.get_pixel(x0 + col, y0 + row).0 == INK;
                    inked == (glyph[row as usize] >> col & 1 == 1)
                })
            })
        };
        (0..img.height() - 8).any(|y| (0..img.width() - 8).any(|x| fits(x, y)))
    }

    #[test]
    fn greek_and_cjk_names_are_drawn_with_their_glyphs_or_a_box_never_a_question_mark() {
        let images = vec![vec![0.5; 16], vec![0.2; 16]];
        let names = vec!["λύκος".to_string(), "猫".to_string()];
        let p = maxact_picture([1, 4, 4], &images, &names, "class λύκος · 猫".into());
        let f = p.figure(10);
        for c in ['λ', 'ύ', 'κ', 'ο', 'ς'] {
            assert!(shows_glyph(&f, pixels::glyph(c)), "{c} drawn with its Greek glyph");
        }
        assert!(shows_glyph(&f, pixels::MISSING_GLYPH), "猫 drawn as a box");
        assert!(!shows_glyph(&f, pixels::glyph('?')), "no question mark anywhere");
    }
}
