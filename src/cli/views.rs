//! The method commands: each computes with the library, turns the result into a picture
//! and a caption, then prints it inline (half-block cells) or writes PNG / .npy.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use convscope::digits::Digits;
use convscope::input::{self, Prepared};
use convscope::methods::actmax::{self, ActMaxConfig, Target};
use convscope::methods::occlusion::{self, OcclusionConfig};
use convscope::methods::{Map, inspect, saliency};
use convscope::render::{self, ColorMode, Colormap};
use convscope::{Model, ReluRule};
use image::RgbImage;

/// Backprop modifier, as keras-vis names them.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Modifier {
    /// The true gradient.
    Vanilla,
    /// Guided backpropagation.
    Guided,
    /// Rectified (deconvnet): only positive gradients pass a ReLU.
    Relu,
}

impl From<Modifier> for ReluRule {
    fn from(m: Modifier) -> ReluRule {
        match m {
            Modifier::Vanilla => ReluRule::Vanilla,
            Modifier::Guided => ReluRule::Guided,
            Modifier::Relu => ReluRule::Rectified,
        }
    }
}

fn parse_colormap(s: &str) -> Result<Colormap, String> {
    Colormap::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Colormap::ALL.iter().map(|c| c.name()).collect();
        format!("unknown colormap '{s}' (choose from {})", names.join(", "))
    })
}

fn parse_color_mode(s: &str) -> Result<ColorMode, String> {
    ColorMode::parse(s).ok_or_else(|| format!("unknown colour mode '{s}' (truecolor or 256)"))
}

/// Where and how a picture goes.
#[derive(Debug, Args)]
pub struct Output {
    /// Write the picture as PNG here instead of printing it.
    #[arg(short = 'o', long = "output", value_name = "PNG")]
    png: Option<PathBuf>,
    /// Also write the float map(s) as a .npy file, for numpy.
    #[arg(long, value_name = "NPY")]
    raw: Option<PathBuf>,
    /// Colour scale: jet, viridis, inferno, turbo, gray, diverging.
    #[arg(long, default_value = "jet", value_parser = parse_colormap)]
    colormap: Colormap,
    /// PNG pixels per map pixel (default: the smallest that makes it 224 pixels or more).
    #[arg(long)]
    scale: Option<u32>,
    /// Terminal colours (default: truecolor when COLORTERM says so, else 256).
    #[arg(long, value_parser = parse_color_mode)]
    color: Option<ColorMode>,
}

/// A model, an input and a class.
#[derive(Debug, Args)]
pub struct Subject {
    /// Model file (`sample` for the bundled one).
    model: PathBuf,
    /// Image file (default for 28×28 grey models: the first bundled validation digit).
    image: Option<PathBuf>,
    /// Class to explain, by index or name (default: the predicted class).
    #[arg(long)]
    class: Option<String>,
}

/// A picture ready to show, with what it shows.
struct View {
    image: RgbImage,
    caption: String,
    /// Values behind the picture, for `--raw`: shape and data.
    raw: (Vec<usize>, Vec<f32>),
    /// Colour scale and value range, for the colour bar.
    scale: Option<(Colormap, (f32, f32))>,
    /// Things the user must be told (a map that says nothing, say).
    warnings: Vec<String>,
}

impl View {
    fn heatmap(map: &Map, colormap: Colormap, caption: String) -> View {
        View {
            image: render::map_image(map, (0.0, 1.0), colormap),
            caption,
            raw: (vec![map.height, map.width], map.data.clone()),
            scale: Some((colormap, (0.0, 1.0))),
            warnings: Vec::new(),
        }
    }

    fn overlaid(mut self, base: Option<&Prepared>, model: &Model) -> Result<View> {
        if let Some(base) = base {
            let [c, h, w] = model.input_chw()?;
            let input = render::input_image(&base.pixels, c, h, w);
            self.image = render::overlay(&input, &self.image, 0.5);
        }
        Ok(self)
    }
}

/// Loads a model; `sample` names the bundled one when no such file exists.
pub fn load_model(path: &Path) -> Result<Model> {
    if path == Path::new("sample") && !path.exists() {
        return Ok(convscope::sample::model()?);
    }
    Ok(Model::load(path)?)
}

impl Subject {
    /// The model, the prepared input, the class to explain and every class's probability.
    fn resolve(&self) -> Result<(Model, Prepared, usize, Vec<f32>)> {
        let model = load_model(&self.model)?;
        let prepared = match &self.image {
            Some(path) => super::prepare(&model, path)?,
            None => default_input(&model)?,
        };
        let probs = model.predict(&prepared.tensor)?.flatten_all()?.to_vec1::<f32>()?;
        let class = match &self.class {
            Some(name) => class_index(&model, name)?,
            None => {
                probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
            }
        };
        Ok((model, prepared, class, probs))
    }
}

fn class_index(model: &Model, name: &str) -> Result<usize> {
    if let Some(i) = model.classes.iter().position(|c| c == name) {
        return Ok(i);
    }
    match name.parse::<usize>() {
        Ok(i) if i < model.num_classes() => Ok(i),
        _ => bail!(
            "no class '{name}': the model has {} classes ({})",
            model.num_classes(),
            model.classes.iter().take(12).cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The first bundled validation digit, for models that read 28×28 grey digits.
fn default_input(model: &Model) -> Result<Prepared> {
    if model.input_chw()? != [1, 28, 28] {
        bail!("this model does not take 28×28 grey digits: give an IMAGE");
    }
    let digits = Digits::bundled()?;
    let i = digits.validation().start;
    let pixels: Vec<f32> = digits.pixels(i).iter().map(|&p| f32::from(p) / 255.0).collect();
    Ok(Prepared {
        source: PathBuf::from(format!("bundled digit #{i} (label {})", digits.label(i))),
        tensor: input::normalise(model, &pixels)?,
        pixels,
        adjusted: None,
    })
}

fn layer_or(
    model: &Model,
    layer: Option<&str>,
    default: impl FnOnce() -> convscope::Result<usize>,
) -> Result<usize> {
    Ok(match layer {
        Some(name) => model.graph().node_index(name)?,
        None => default()?,
    })
}

fn class_label(model: &Model, class: usize, probs: &[f32]) -> String {
    format!("class {} (p={:.3})", model.classes[class], probs[class])
}

/// `convscope saliency`.
pub fn saliency_cmd(
    subject: &Subject,
    modifier: Modifier,
    overlay: bool,
    all: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let rule = ReluRule::from(modifier);
    let classes: Vec<usize> = if all { (0..model.num_classes()).collect() } else { vec![class] };
    let maps = saliency::saliency_for(&model, &input.tensor, &classes, rule)?;
    let mut views = Vec::new();
    for s in &maps {
        let caption = format!(
            "saliency · {} · modifier {}",
            class_label(&model, s.class, &probs),
            rule.name()
        );
        let mut view = View::heatmap(&s.map, out.colormap, caption);
        if s.all_zero {
            view.warnings.push(format!(
                "the {} gradient of class {} is zero everywhere: this map shows nothing",
                rule.name(),
                model.classes[s.class]
            ));
        }
        views.push(view.overlaid(overlay.then_some(&input), &model)?);
    }
    emit(combine(views, &input, "saliency, all classes"), out)
}

/// `convscope gradcam`.
pub fn gradcam_cmd(
    subject: &Subject,
    modifier: Modifier,
    layer: Option<&str>,
    overlay: bool,
    all: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let rule = ReluRule::from(modifier);
    let layer = layer_or(&model, layer, || saliency::default_cam_layer(&model))?;
    let classes: Vec<usize> = if all { (0..model.num_classes()).collect() } else { vec![class] };
    let cams = saliency::grad_cam_for(&model, &input.tensor, &classes, rule, Some(layer))?;
    let mut views = Vec::new();
    for cam in &cams {
        let caption = format!(
            "grad-CAM · {} · layer {} ({}×{}) · modifier {}",
            class_label(&model, cam.class, &probs),
            cam.layer_name,
            cam.layer_size[0],
            cam.layer_size[1],
            rule.name()
        );
        let mut view = View::heatmap(&cam.map, out.colormap, caption);
        if cam.no_positive_evidence {
            view.warnings.push(format!(
                "no positive evidence for class {} at layer {}: the map is all zero",
                model.classes[cam.class], cam.layer_name
            ));
        }
        views.push(view.overlaid(overlay.then_some(&input), &model)?);
    }
    emit(combine(views, &input, "grad-CAM, all classes"), out)
}

/// `convscope guided-gradcam`.
pub fn guided_gradcam_cmd(
    subject: &Subject,
    layer: Option<&str>,
    overlay: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let layer = layer_or(&model, layer, || saliency::default_cam_layer(&model))?;
    let (map, cam) = saliency::guided_grad_cam(&model, &input.tensor, class, Some(layer))?;
    let caption = format!(
        "guided grad-CAM · {} · layer {} ({}×{})",
        class_label(&model, class, &probs),
        cam.layer_name,
        cam.layer_size[0],
        cam.layer_size[1]
    );
    let mut view = View::heatmap(&map, out.colormap, caption);
    if cam.no_positive_evidence {
        view.warnings.push(format!(
            "no positive evidence for class {} at layer {}: the map is all zero",
            model.classes[class], cam.layer_name
        ));
    }
    emit(view.overlaid(overlay.then_some(&input), &model)?, out)
}

/// `convscope occlusion`.
pub fn occlusion_cmd(
    subject: &Subject,
    config: &OcclusionConfig,
    drop: bool,
    overlay: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, _) = subject.resolve()?;
    let occ = occlusion::occlusion(&model, &input.tensor, class, config)?;
    let (map, what) = if drop { (&occ.drop, "drop in p") } else { (&occ.probability, "p") };
    // The data's own range, as the article's imshow shows it; the colour bar gives it.
    let (lo, hi) = map.range();
    let mut warnings = Vec::new();
    if hi - lo < 1e-6 {
        warnings.push(format!(
            "occluding changes nothing: p(class {}) stays {:.4} at every position",
            model.classes[class], occ.original_probability
        ));
    }
    let heat = render::map_image(map, (lo, hi), out.colormap);
    let [c, h, w] = model.input_chw()?;
    let base = render::input_image(&input.pixels, c, h, w);
    let heat = if overlay { render::overlay(&base, &heat, 0.5) } else { heat };
    let k = model.num_classes();
    let classes = Map::new(h, w, occ.argmax.iter().map(|&a| a as f32).collect())?;
    let class_map = render::map_image(&classes, (0.0, (k.max(2) - 1) as f32), Colormap::Turbo);
    let mut counts: Vec<(usize, usize)> =
        occ.counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    let counts: Vec<String> =
        counts.iter().map(|(cl, n)| format!("{}×{n}", model.classes[*cl])).collect();
    let caption = format!(
        "occlusion · {} of class {} (intact p={:.3}) | argmax class per pixel · {} windows of {}×{} stride {} · argmax counts: {}",
        what,
        model.classes[class],
        occ.original_probability,
        occ.positions.len(),
        config.size,
        config.size,
        config.stride,
        counts.join(", ")
    );
    let view = View {
        image: render::grid(&[base, heat, class_map], 3, 1, [0, 0, 0]),
        caption,
        raw: (vec![map.height, map.width], map.data.clone()),
        scale: Some((out.colormap, (lo, hi))),
        warnings,
    };
    emit(view, out)
}

/// `convscope filters`.
pub fn filters_cmd(model: &Path, layer: Option<&str>, out: &Output) -> Result<()> {
    let model = load_model(model)?;
    let layer = layer_or(&model, layer, || inspect::first_conv_layer(&model))?;
    let filters = inspect::filters(&model, layer)?;
    let range = (-filters.scale, filters.scale);
    // Filters are signed: a diverging scale unless the user chose one.
    let cmap = if out.colormap == Colormap::Jet { Colormap::Diverging } else { out.colormap };
    let tiles: Vec<RgbImage> = if filters.is_rgb() {
        filters.kernels.iter().map(|k| rgb_filter(k, filters.scale)).collect()
    } else {
        filters
            .kernels
            .iter()
            .map(|k| {
                let row: Vec<RgbImage> =
                    k.iter().map(|m| render::map_image(m, range, cmap)).collect();
                render::grid(&row, row.len(), 0, [0, 0, 0])
            })
            .collect()
    };
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
    let view = View {
        image: render::grid(&tiles, render::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (shape, raw),
        scale: Some((cmap, range)),
        warnings: Vec::new(),
    };
    emit(view, out)
}

fn rgb_filter(channels: &[Map], scale: f32) -> RgbImage {
    let (h, w) = (channels[0].height, channels[0].width);
    let pixels: Vec<f32> = channels
        .iter()
        .flat_map(|m| m.data.iter().map(|v| v / (2.0 * scale.max(1e-12)) + 0.5))
        .collect();
    render::input_image(&pixels, 3, h, w)
}

/// `convscope features`.
pub fn features_cmd(subject: &Subject, layer: Option<&str>, out: &Output) -> Result<()> {
    let (model, input, _, _) = subject.resolve()?;
    let layer = layer_or(&model, layer, || inspect::first_conv_layer(&model))?;
    let acts = model.forward(&input.tensor)?;
    let maps = inspect::feature_maps(&model, &acts, layer, 0)?;
    // One range for the whole layer, so channels compare.
    let (lo, hi) = maps
        .iter()
        .map(Map::range)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let tiles: Vec<RgbImage> =
        maps.iter().map(|m| render::map_image(m, (lo, hi), out.colormap)).collect();
    let node = &model.graph().nodes()[layer];
    let caption = format!(
        "feature maps of {} ({}) · {} channels of {}×{} · range {lo:.3} to {hi:.3} · input {}",
        node.name,
        node.op.type_name(),
        maps.len(),
        maps[0].height,
        maps[0].width,
        input.source.display()
    );
    let raw: Vec<f32> = maps.iter().flat_map(|m| m.data.iter().copied()).collect();
    let mut warnings = Vec::new();
    if hi <= 0.0 && lo >= 0.0 {
        warnings.push(format!("every activation of {} is zero for this input", node.name));
    }
    let view = View {
        image: render::grid(&tiles, render::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (vec![maps.len(), maps[0].height, maps[0].width], raw),
        scale: Some((out.colormap, (lo, hi))),
        warnings,
    };
    emit(view, out)
}

/// Settings of `convscope maxact`.
#[derive(Debug, Args)]
pub struct MaxActArgs {
    /// Model file (`sample` for the bundled one).
    model: PathBuf,
    /// Classes to maximise, by index or name (default: all).
    #[arg(long, num_args = 1..)]
    class: Vec<String>,
    /// Maximise channels of this layer instead of classes.
    #[arg(long)]
    layer: Option<String>,
    /// Channels of --layer to maximise (default: the first 16).
    #[arg(long, num_args = 1..)]
    filter: Vec<usize>,
    /// Optimisation steps.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Random shift of up to this many pixels per step (0: off).
    #[arg(long, default_value_t = 0)]
    jitter: usize,
    /// Seed of the starting noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `convscope maxact`.
pub fn maxact_cmd(args: &MaxActArgs, out: &Output) -> Result<()> {
    let model = load_model(&args.model)?;
    let (targets, names): (Vec<Target>, Vec<String>) = match &args.layer {
        Some(layer) => {
            let node = model.graph().node_index(layer)?;
            let channels = model.graph().shape(convscope::graph::ValueId::of_node(node))[0];
            let filters: Vec<usize> = if args.filter.is_empty() {
                (0..channels.min(16)).collect()
            } else {
                args.filter.clone()
            };
            filters
                .iter()
                .map(|&f| (Target::Filter { node, index: f }, format!("{layer}[{f}]")))
                .unzip()
        }
        None => {
            let classes: Vec<usize> = if args.class.is_empty() {
                (0..model.num_classes()).collect()
            } else {
                args.class.iter().map(|c| class_index(&model, c)).collect::<Result<_>>()?
            };
            classes
                .iter()
                .map(|&c| (Target::Class(c), format!("class {}", model.classes[c])))
                .unzip()
        }
    };
    let config = ActMaxConfig {
        iterations: args.iterations,
        jitter: args.jitter,
        seed: args.seed,
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let show_progress = std::io::stderr().is_terminal();
    let result = actmax::maximise(&model, &targets, &config, &cancel, |p| {
        if show_progress {
            let total: f32 =
                p.losses.iter().map(|l| l.total).sum::<f32>() / p.losses.len().max(1) as f32;
            eprint!(
                "\rconvscope: activation maximisation {}/{} · mean loss {total:.3}   ",
                p.iteration, p.iterations
            );
        }
    })?;
    if show_progress {
        eprintln!();
    }
    let [c, h, w] = model.input_chw()?;
    let mut verdicts = Vec::new();
    for (name, x) in names.iter().zip(&result.inputs) {
        let probs = model.predict(x)?.flatten_all()?.to_vec1::<f32>()?;
        let best = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        verdicts.push(format!("{name}→{} ({:.2})", model.classes[best], probs[best]));
    }
    let tiles: Vec<RgbImage> =
        result.images.iter().map(|img| render::input_image(img, c, h, w)).collect();
    let caption = format!(
        "activation maximisation · {} steps · each image's own classification: {}",
        result.iterations_run,
        verdicts.join(", ")
    );
    let raw: Vec<f32> = result.images.iter().flatten().copied().collect();
    let view = View {
        image: render::grid(&tiles, render::grid_columns(tiles.len()), 1, [40, 40, 40]),
        caption,
        raw: (vec![result.images.len(), c, h, w], raw),
        scale: None,
        warnings: Vec::new(),
    };
    emit(view, out)
}

/// Several views of one input as one grid (for `--all-classes`); one view stays as it is.
fn combine(mut views: Vec<View>, input: &Prepared, title: &str) -> View {
    if views.len() == 1 {
        return views.remove(0);
    }
    let (first_shape, _) = &views[0].raw;
    let mut shape = vec![views.len()];
    shape.extend(first_shape);
    let images: Vec<RgbImage> = views.iter().map(|v| v.image.clone()).collect();
    View {
        image: render::grid(&images, render::grid_columns(images.len()), 1, [40, 40, 40]),
        caption: format!(
            "{title} (in class order, row by row) · input {} · first: {}",
            input.source.display(),
            views[0].caption
        ),
        raw: (shape, views.iter().flat_map(|v| v.raw.1.iter().copied()).collect()),
        scale: views[0].scale,
        warnings: views.iter().flat_map(|v| v.warnings.clone()).collect(),
    }
}

/// Prints or writes a view.
fn emit(view: View, out: &Output) -> Result<()> {
    for warning in &view.warnings {
        eprintln!("convscope: warning: {warning}");
    }
    if let Some(path) = &out.raw {
        render::write_npy(path, &view.raw.0, &view.raw.1)?;
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(path) = &out.png {
        let longest = view.image.width().max(view.image.height()).max(1);
        let scale = out.scale.unwrap_or_else(|| 224u32.div_ceil(longest)).max(1);
        let scaled = render::scale_nearest(
            &view.image,
            view.image.width() * scale,
            view.image.height() * scale,
        );
        render::save_png(&scaled, path)?;
        writeln!(
            stdout,
            "{} → {} ({}×{})",
            view.caption,
            path.display(),
            scaled.width(),
            scaled.height()
        )?;
        return Ok(());
    }
    let mode = out.color.unwrap_or_else(ColorMode::detect);
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    // Leave room for the caption, the colour bar and the prompt.
    let picture = render::fit_to_cells(
        &view.image,
        u32::from(cols),
        u32::from(rows).saturating_sub(4).max(4),
    );
    write!(stdout, "{}", render::to_ansi(&picture, mode))?;
    if let Some((cmap, (lo, hi))) = view.scale {
        let bar = render::colorbar(cmap, picture.width().min(32), 2);
        let bar_text = render::to_ansi(&bar, mode);
        let decimals = (-(hi - lo).abs().max(1e-8).log10()).ceil().clamp(0.0, 6.0) as usize + 2;
        writeln!(stdout, "{lo:.decimals$} {} {hi:.decimals$}", bar_text.trim_end())?;
    }
    writeln!(stdout, "{}", view.caption).context("writing to the terminal")?;
    Ok(())
}
