//! Method results as pictures with captions: the one place that decides how each method is
//! shown, so `convscope saliency -o x.png`, the inline print and the explorer's panel show
//! the same pixels from the same numbers.

use image::RgbImage;

use crate::data::input::Prepared;
use crate::engine::ReluRule;
use crate::engine::argmax;
use crate::error::Result;
use crate::methods::actmax::ActMaxResult;
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
    /// The panels of a grid picture (filters, feature maps, act-max images), for a viewer
    /// that lays them out itself; empty for a single picture.
    pub tiles: Vec<Tile>,
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
    /// The input drawn as an image.
    pub fn input_image(&self) -> Result<RgbImage> {
        let [c, h, w] = self.model.input_chw()?;
        Ok(pixels::input_image(&self.input.pixels, c, h, w))
    }

    fn class_label(&self, class: usize) -> String {
        let p = self.probs.get(class).copied().unwrap_or(f32::NAN);
        format!("class {} (p={p:.3})", self.model.classes[class])
    }

    /// A heatmap in [0, 1] as a picture, blended over the input when asked.
    fn heatmap(&self, map: &Map, style: Style, caption: String) -> Result<Picture> {
        let heat = pixels::map_image(map, (0.0, 1.0), style.colormap);
        let image =
            if style.overlay { pixels::overlay(&self.input_image()?, &heat, 0.5) } else { heat };
        Ok(Picture {
            image,
            caption,
            raw: (vec![map.height, map.width], map.data.clone()),
            scale: Some((style.colormap, (0.0, 1.0))),
            warnings: Vec::new(),
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
            let mut picture = s.heatmap(&m.map, style, caption)?;
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

fn no_evidence(model: &Model, cam: &gradcam::GradCam) -> Option<String> {
    cam.no_positive_evidence.then(|| {
        format!(
            "no positive evidence for class {} at layer {}: the map is all zero",
            model.classes[cam.class], cam.layer_name
        )
    })
}

/// Grad-CAM pictures, one per class, from one batched pass, at `layer` (default: the
/// last conv layer).
pub fn grad_cam(
    s: &Subject,
    classes: &[usize],
    rule: ReluRule,
    layer: Option<usize>,
    style: Style,
) -> Result<Vec<Picture>> {
    gradcam::grad_cam_for(s.model, &s.input.tensor, classes, rule, layer)?
        .iter()
        .map(|cam| {
            let caption = format!(
                "grad-CAM · {} · layer {} ({}×{}) · modifier {}",
                s.class_label(cam.class),
                cam.layer_name,
                cam.layer_size[0],
                cam.layer_size[1],
                rule.name()
            );
            let mut picture = s.heatmap(&cam.map, style, caption)?;
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
    let mut picture = s.heatmap(&map, style, caption)?;
    picture.warnings.extend(no_evidence(s.model, &cam));
    Ok(picture)
}

/// The occlusion picture: the input, the heatmap of p (or of its drop with `drop`) in the
/// data's own range (as the article's `imshow` shows it), and the argmax class per pixel.
pub fn occlusion(
    s: &Subject,
    class: usize,
    config: &OcclusionConfig,
    drop: bool,
    style: Style,
) -> Result<Picture> {
    let model = s.model;
    let occ = occlusion::occlusion(model, &s.input.tensor, class, config)?;
    let (map, what) = if drop { (&occ.drop, "drop in p") } else { (&occ.probability, "p") };
    let (lo, hi) = map.range();
    let mut warnings = Vec::new();
    if hi - lo < 1e-6 {
        warnings.push(format!(
            "occluding changes nothing: p(class {}) stays {:.4} at every position",
            model.classes[class], occ.original_probability
        ));
    }
    let base = s.input_image()?;
    let heat = pixels::map_image(map, (lo, hi), style.colormap);
    let heat = if style.overlay { pixels::overlay(&base, &heat, 0.5) } else { heat };
    let k = model.num_classes();
    let classes = Map::new(map.height, map.width, occ.argmax.iter().map(|&a| a as f32).collect())?;
    let class_map = pixels::map_image(&classes, (0.0, (k.max(2) - 1) as f32), Colormap::Turbo);
    let mut counts: Vec<(usize, usize)> =
        occ.counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    let counts: Vec<String> =
        counts.iter().map(|(c, n)| format!("{}×{n}", model.classes[*c])).collect();
    let caption = format!(
        "occlusion · input | {what} of class {} (intact {:.3}) | argmax class · {} windows {}×{} stride {} · argmax counts {}",
        model.classes[class],
        occ.original_probability,
        occ.positions.len(),
        config.size,
        config.size,
        config.stride,
        counts.join(", ")
    );
    Ok(Picture {
        image: pixels::grid(&[base, heat, class_map], 3, 1, [0, 0, 0]),
        caption,
        raw: (vec![map.height, map.width], map.data.clone()),
        scale: Some((style.colormap, (lo, hi))),
        warnings,
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
    Ok(Picture {
        image: pixels::grid(&tiles, pixels::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (shape, raw),
        scale: Some((cmap, range)),
        warnings: Vec::new(),
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
    let panels: Vec<Tile> = maps
        .iter()
        .enumerate()
        .map(|(i, m)| Tile {
            label: i.to_string(),
            image: pixels::map_image(m, (lo, hi), style.colormap),
            own: Some((pixels::map_image(m, m.range(), style.colormap), m.range())),
            smallest: SMALLEST_MAP,
        })
        .collect();
    let tiles: Vec<RgbImage> = panels.iter().map(|t| t.image.clone()).collect();
    let node = &model.graph().nodes()[layer];
    let shape = model.graph().shape(ValueId::of_node(layer));
    let caption = format!(
        "feature maps of {} ({}) · {} channel{} of {}×{} · range {lo:.3} to {hi:.3}",
        node.name,
        model.graph().type_name(layer),
        maps.len(),
        if maps.len() == 1 { "" } else { "s" },
        maps[0].height,
        maps[0].width,
    );
    let mut warnings = Vec::new();
    if lo == 0.0 && hi == 0.0 {
        warnings.push(format!("every activation of {} is zero for this input", node.name));
    }
    Ok(Picture {
        image: pixels::grid(&tiles, pixels::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (shape.to_vec(), maps.iter().flat_map(|m| m.data.iter().copied()).collect()),
        scale: Some((style.colormap, (lo, hi))),
        warnings,
        tiles: panels,
    })
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
    let tiles: Vec<RgbImage> = images.iter().map(|img| pixels::input_image(img, c, h, w)).collect();
    let panels = tiles
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
        image: pixels::grid(&tiles, pixels::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (vec![images.len(), c, h, w], images.iter().flatten().copied().collect()),
        scale: None,
        warnings: Vec::new(),
        tiles: panels,
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
    Picture {
        image: pixels::grid(&images, pixels::grid_columns(images.len()), 1, [40, 40, 40]),
        caption: format!(
            "{title} (row by row) · first: {}",
            pictures.first().map_or("", |p| p.caption.as_str())
        ),
        raw: (shape, pictures.iter().flat_map(|p| p.raw.1.iter().copied()).collect()),
        scale: pictures.first().and_then(|p| p.scale),
        warnings: pictures.iter().flat_map(|p| p.warnings.clone()).collect(),
        tiles: Vec::new(),
    }
}
