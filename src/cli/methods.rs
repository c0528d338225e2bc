//! The method commands: each computes with the library, turns the result into a picture
//! and a caption, then prints it inline (the terminal's pixels, or half-block cells) or
//! writes a figure (PNG, JPEG) or the values (.npy).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use convscope::data::digits::Digits;
use convscope::data::input::{self, Prepared};
use convscope::formats;
use convscope::methods::actmax::{self, ActMaxConfig, Target};
use convscope::methods::attribution::{
    self, Baseline, IntegratedConfig, Quadrature, SmoothConfig, Smoothing,
};
use convscope::methods::gradcam::{CamConfig, CamVariant};
use convscope::methods::occlusion::OcclusionConfig;
use convscope::methods::registry::MethodInfo;
use convscope::methods::{features, filters, gradcam};
use convscope::model::{InputOverrides, Preprocess, printable_path};
use convscope::present::ansi::{self, ColorMode};
use convscope::present::colormap::Colormap;
use convscope::present::figures::{self, OcclusionShows, Picture, Style, Subject as Seen};
use convscope::present::files::{self, OutputFormat};
use convscope::tui::image::{self as terminal_image, Graphics, Pixels};
use convscope::{Model, ReluRule};

/// Backprop modifier, as keras-vis names them, or all three in one figure.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Modifier {
    /// The true gradient.
    Vanilla,
    /// Guided backpropagation.
    Guided,
    /// Rectified (deconvnet): only positive gradients pass a ReLU.
    Relu,
    /// The article's row: input | vanilla | guided | relu.
    All,
}

impl Modifier {
    /// The one rule, or `None` for all of them.
    fn rule(self) -> Option<ReluRule> {
        match self {
            Modifier::Vanilla => Some(ReluRule::Vanilla),
            Modifier::Guided => Some(ReluRule::Guided),
            Modifier::Relu => Some(ReluRule::Rectified),
            Modifier::All => None,
        }
    }
}

/// `--graphics`, set once by [`set_graphics`] before a command runs.
static GRAPHICS: OnceLock<Graphics> = OnceLock::new();

/// How the commands print pictures (`--graphics`; default: ask the terminal when stdout is
/// one, half blocks otherwise).
pub fn set_graphics(choice: Option<Graphics>) {
    let _ = GRAPHICS.set(choice.unwrap_or_else(default_graphics));
}

/// Without `--graphics`: the terminal is asked only when there is one to answer.
pub fn default_graphics() -> Graphics {
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        Graphics::Auto
    } else {
        Graphics::Halfblocks
    }
}

pub fn parse_graphics(s: &str) -> Result<Graphics, String> {
    Graphics::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Graphics::ALL.iter().map(|g| g.name()).collect();
        format!("unknown graphics '{s}' (choose from {})", names.join(", "))
    })
}

fn parse_colormap(s: &str) -> Result<Colormap, String> {
    Colormap::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Colormap::ALL.iter().map(|c| c.name()).collect();
        format!("unknown colormap '{s}' (choose from {})", names.join(", "))
    })
}

pub fn parse_color_mode(s: &str) -> Result<ColorMode, String> {
    ColorMode::parse(s).ok_or_else(|| format!("unknown colour mode '{s}' (truecolor or 256)"))
}

/// Where and how a picture goes.
#[derive(Debug, Args)]
pub struct Output {
    /// Write the figure here instead of printing it: `.png`, `.jpg`/`.jpeg` (title, labelled
    /// panels, colour bar) or `.npy` (the values).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    png: Option<PathBuf>,
    /// Also write the float map(s) as a .npy file, for numpy.
    #[arg(long, value_name = "NPY")]
    raw: Option<PathBuf>,
    /// Colour scale: jet, viridis, inferno, turbo, gray, diverging.
    #[arg(long, default_value = "jet", value_parser = parse_colormap)]
    colormap: Colormap,
    /// Figure pixels per map pixel (default: the smallest that makes each panel 224 pixels
    /// or more).
    #[arg(long)]
    scale: Option<u32>,
    /// Terminal colours (default: truecolor when COLORTERM says so, else 256).
    #[arg(long, value_parser = parse_color_mode)]
    color: Option<ColorMode>,
}

/// A model, an input and a class.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// Model file (`sample` for the bundled one).
    model: PathBuf,
    /// Image file, or a numpy file of one input (default for 28×28 grey models: the first
    /// bundled validation digit).
    image: Option<PathBuf>,
    /// Class to explain, by index or name (default: the predicted class).
    #[arg(long, allow_hyphen_values = true)]
    class: Option<String>,
    #[command(flatten)]
    preprocessing: Preprocessing,
}

/// How images are prepared for a model, and its class names, where its file does not say
/// (ONNX carries neither) or says otherwise.
#[derive(Debug, Args, Default)]
pub struct Preprocessing {
    /// Range pixels are scaled to before the mean and std, e.g. `0,255` or `-1,1`
    /// (default: what the model file says, else 0,1).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, allow_hyphen_values = true)]
    input_range: Option<[f32; 2]>,
    /// Mean subtracted after scaling: one value, or one per channel (`0.485,0.456,0.406`).
    #[arg(long, value_name = "M", value_delimiter = ',', allow_hyphen_values = true)]
    mean: Option<Vec<f32>>,
    /// Standard deviation divided by after the mean: one value, or one per channel.
    #[arg(long, value_name = "S", value_delimiter = ',', allow_hyphen_values = true)]
    std: Option<Vec<f32>>,
    /// Class names, one per line, in output order.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// The output (head) to explain, for a model with several (default: the one that
    /// looks like class scores).
    #[arg(long, value_name = "NAME")]
    head: Option<String>,
    /// Height and width for a model that leaves them open (e.g. `224x224`; default: the
    /// first image's).
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input_size: Option<[usize; 2]>,
    /// keras.applications' preparation: torch (0..1, ImageNet mean and std), tf (-1..1) or
    /// caffe (BGR, 0..255 less ImageNet's mean); --input-range, --mean, --std then adjust it.
    #[arg(long, value_enum)]
    preprocess: Option<PreprocessMode>,
    /// Float type of the computation: f32 (fast) or f64 (a reference, to compare maps with
    /// another framework's float64 numbers without float32 rounding).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// How an image of another aspect ratio is fitted to the model's: crop (the centre, as
    /// torchvision's and Keras's evaluation transforms do: no distortion, no border the
    /// model never saw), pad (all of it, with borders of its edge colour) or stretch.
    #[arg(long, value_enum, default_value = "crop")]
    pub fit: FitMode,
}

/// `--fit` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FitMode {
    /// The centre at the model's aspect.
    #[default]
    Crop,
    /// All of the image, padded with its edge colour.
    Pad,
    /// All of the image, squashed or stretched.
    Stretch,
}

impl From<FitMode> for input::Fit {
    fn from(f: FitMode) -> input::Fit {
        match f {
            FitMode::Crop => input::Fit::Crop,
            FitMode::Pad => input::Fit::Pad,
            FitMode::Stretch => input::Fit::Stretch,
        }
    }
}

/// `--precision` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 64-bit floats.
    F64,
}

/// `--preprocess` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PreprocessMode {
    /// 0..1, ImageNet mean and std.
    Torch,
    /// -1..1.
    Tf,
    /// BGR, 0..255 less ImageNet's mean.
    Caffe,
}

impl Preprocessing {
    /// The choices the model's reader takes: input size and output.
    pub fn load_options(&self) -> formats::Options {
        formats::Options { input_size: self.input_size, output: self.head.clone() }
    }

    /// `model` with these settings applied: the input preparation, the class names and the
    /// precision.
    pub fn apply(&self, model: Model) -> Result<Model> {
        let model = self.overrides()?.apply(model)?;
        Ok(match self.precision {
            Precision::F32 => model,
            Precision::F64 => model.to_dtype(candle_core::DType::F64)?,
        })
    }

    /// The settings, with the class names read from their file.
    pub fn overrides(&self) -> Result<InputOverrides> {
        let classes = match &self.classes {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading class names from {}", path.display()))?;
                Some(formats::class_lines(&text))
            }
            None => None,
        };
        Ok(InputOverrides {
            range: self.input_range,
            mean: self.mean.clone(),
            std: self.std.clone(),
            classes,
            preprocess: self.preprocess.map(|mode| match mode {
                PreprocessMode::Torch => Preprocess::Torch,
                PreprocessMode::Tf => Preprocess::Tf,
                PreprocessMode::Caffe => Preprocess::Caffe,
            }),
        })
    }
}

fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let parsed: Option<Vec<usize>> = s.split(['x', '×']).map(|v| v.trim().parse().ok()).collect();
    match parsed.as_deref() {
        Some(&[h, w])
            if (1..=MAX_SIDE as usize).contains(&h) && (1..=MAX_SIDE as usize).contains(&w) =>
        {
            Ok([h, w])
        }
        _ => Err(format!("'{s}' is not a size HxW (each from 1 to {MAX_SIDE})")),
    }
}

fn parse_range(s: &str) -> Result<[f32; 2], String> {
    let parsed: Option<Vec<f32>> = s.split(',').map(|v| v.trim().parse().ok()).collect();
    match parsed.as_deref() {
        Some(&[lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Ok([lo, hi]),
        _ => Err(format!("'{s}' is not a range LO,HI of finite numbers with LO < HI")),
    }
}

/// A finite number above zero.
pub fn parse_positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// A number from `lo` to `hi`, both included (NaN is not).
pub fn parse_between(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number from {lo} to {hi}")),
    }
}

/// Loads a model (`sample` names the bundled one when no such file exists) and applies the
/// user's preprocessing settings.
pub fn load_model(path: &Path, preprocessing: &Preprocessing) -> Result<Model> {
    load_model_for(path, preprocessing, None)
}

/// [`load_model`] for an input image: a model that leaves its input size open, with no
/// `--input-size`, takes the image's (and says so).
pub fn load_model_for(
    path: &Path,
    preprocessing: &Preprocessing,
    image: Option<&Path>,
) -> Result<Model> {
    let model = if path == Path::new("sample") && !path.exists() {
        convscope::data::sample::model()?
    } else {
        open_model(&formats::open(path)?, path, preprocessing, image)?
    };
    let model = preprocessing.apply(model)?;
    note_assumption(&model);
    Ok(model)
}

/// Reads a model from its `file` (see `formats::open`), at `--input-size` or, where the file
/// leaves the size open, at the size of `image`.
pub fn open_model(
    file: &formats::mapped::FileBytes,
    path: &Path,
    preprocessing: &Preprocessing,
    image: Option<&Path>,
) -> Result<Model> {
    let options = preprocessing.load_options();
    let model = match (formats::from_file_with(file, path, &options), image) {
        (Err(convscope::Error::OpenInputSize { .. }), Some(image)) => {
            let size = convscope::data::input::image_size(image)
                .with_context(|| format!("{}: reading its size", image.display()))?;
            let [h, w] = size;
            eprintln!(
                "convscope: note: the model leaves its input size open: using {h}×{w}, the size \
                 of {} (set --input-size HxW)",
                image.display()
            );
            let sized = formats::Options { input_size: Some(size), ..options };
            formats::from_file_with(file, path, &sized)?
        }
        (model, _) => model?,
    };
    for note in &model.notes {
        eprintln!("convscope: note: {note}");
    }
    Ok(model)
}

/// Says on stderr, once per command, what was assumed of the model's input preparation.
pub fn note_assumption(model: &Model) {
    if let Some(assumed) = model.input.assumption() {
        eprintln!(
            "convscope: note: the model file does not say how its input is prepared: assuming \
             {assumed} (set --input-range, --mean and --std, or --preprocess torch|tf|caffe)"
        );
    }
}

impl SubjectArgs {
    /// The model, the prepared input, the class to explain and every class's probability.
    pub(super) fn resolve(&self) -> Result<(Model, Prepared, usize, Vec<f32>)> {
        let model = load_model_for(&self.model, &self.preprocessing, self.image.as_deref())?;
        let prepared = match &self.image {
            Some(path) => super::prepare(&model, path, self.preprocessing.fit.into())?,
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
pub(super) fn default_input(model: &Model) -> Result<Prepared> {
    if model.input_chw()? != [1, 28, 28] {
        bail!("this model does not take 28×28 grey digits: give an IMAGE");
    }
    let digits = Digits::bundled()?;
    let i = digits.validation().start;
    let source = format!("bundled digit #{i} (label {})", digits.label(i));
    Ok(input::bundled_digit(model, &digits, i, source)?)
}

/// The layer a method works on: the one named, if it is of the method's kind, or the
/// method's default.
fn layer_for(model: &Model, method: &MethodInfo, layer: Option<&str>) -> Result<usize> {
    Ok(match layer {
        Some(name) => method.layers.check(model, model.graph().node_index(name)?)?,
        None => method.layers.default_in(model)?,
    })
}

fn style(out: &Output, overlay: bool) -> Style {
    Style { colormap: out.colormap, overlay }
}

fn classes(model: &Model, class: usize, all: bool) -> Vec<usize> {
    if all { (0..model.num_classes()).collect() } else { vec![class] }
}

/// Options of the gradient methods.
#[derive(Debug, Args)]
pub struct GradientOptions {
    /// Backprop modifier (`all`: the input and the three maps side by side).
    #[arg(long, value_enum, default_value = "vanilla")]
    modifier: Modifier,
    /// Blend the heatmap over the input.
    #[arg(long)]
    overlay: bool,
    /// One map per class, from one batched pass.
    #[arg(long)]
    all_classes: bool,
}

/// `convscope saliency`.
pub fn saliency_cmd(subject: &SubjectArgs, options: &GradientOptions, out: &Output) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let seen = Seen { model: &model, input: &input, probs: &probs };
    let style = style(out, options.overlay);
    let Some(rule) = options.modifier.rule() else {
        no_all_classes(options)?;
        let row = seen.modifier_row(class, "saliency", |rule| {
            Ok(figures::saliency(&seen, &[class], rule, style)?.remove(0))
        })?;
        return emit(row, &input, out);
    };
    let classes = classes(&model, class, options.all_classes);
    let pictures = figures::saliency(&seen, &classes, rule, style)?;
    emit(figures::combine(pictures, "saliency of every class"), &input, out)
}

/// Options of Integrated Gradients.
#[derive(Debug, Args)]
pub struct IntegratedOptions {
    /// Steps along the path from the baseline to the input.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    steps: u32,
    /// How the steps are placed (Captum's `method`).
    #[arg(long, value_enum, default_value = "gausslegendre")]
    method: QuadratureArg,
    /// Where the path starts: zero (in the model's input space), blur (the input blurred
    /// by a Gaussian of --blur pixels) or uniform (noise over the input's range, --seed).
    #[arg(long, value_enum, default_value = "zero")]
    baseline: BaselineArg,
    /// The blur baseline's standard deviation, in pixels.
    #[arg(long, default_value_t = 5.0, value_parser = |s: &str| parse_between(s, 0.01, 1e4))]
    blur: f64,
    /// Seed of the uniform baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Integrated Gradients' quadrature rules, as Captum names them.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QuadratureArg {
    /// Gauss–Legendre (Captum's default).
    #[value(name = "gausslegendre")]
    GaussLegendre,
    /// Left Riemann sum.
    #[value(name = "riemann-left")]
    Left,
    /// Right Riemann sum.
    #[value(name = "riemann-right")]
    Right,
    /// Middle Riemann sum.
    #[value(name = "riemann-middle")]
    Middle,
    /// Captum's trapezoid rule.
    #[value(name = "riemann-trapezoid")]
    Trapezoid,
}

/// Integrated Gradients' baselines.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BaselineArg {
    /// All zero.
    Zero,
    /// The input blurred.
    Blur,
    /// Uniform noise.
    Uniform,
}

/// Options of SmoothGrad.
#[derive(Debug, Args)]
pub struct SmoothOptions {
    /// Noise standard deviation as a fraction of the input's range (max − min).
    #[arg(long, default_value_t = 0.15, value_parser = |s: &str| parse_between(s, 0.0, 100.0))]
    noise: f64,
    /// Noisy copies of the input.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    samples: u32,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What is taken of the copies' gradient magnitudes: mean (SmoothGrad), squared (the
    /// mean of their squares, SmoothGrad²) or variance (VarGrad).
    #[arg(long, value_enum, default_value = "mean")]
    variant: SmoothVariant,
}

/// SmoothGrad's variants.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SmoothVariant {
    /// SmoothGrad.
    Mean,
    /// SmoothGrad².
    Squared,
    /// VarGrad.
    Variance,
}

/// A per-class attribution command: `picture` of the class (or of each class with
/// `--all-classes`) under the modifier, or the modifier row.
fn attribution_cmd(
    subject: &SubjectArgs,
    options: &GradientOptions,
    out: &Output,
    method: &str,
    picture: impl Fn(&Seen, usize, ReluRule, Style) -> convscope::Result<Picture>,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let seen = Seen { model: &model, input: &input, probs: &probs };
    let style = style(out, options.overlay);
    let Some(rule) = options.modifier.rule() else {
        no_all_classes(options)?;
        let row = seen.modifier_row(class, method, |rule| picture(&seen, class, rule, style))?;
        return emit(row, &input, out);
    };
    let pictures = classes(&model, class, options.all_classes)
        .into_iter()
        .map(|c| picture(&seen, c, rule, style))
        .collect::<convscope::Result<Vec<_>>>()?;
    emit(figures::combine(pictures, &format!("{method} of every class")), &input, out)
}

/// `convscope input-x-gradient`.
pub fn input_x_gradient_cmd(
    subject: &SubjectArgs,
    options: &GradientOptions,
    out: &Output,
) -> Result<()> {
    let method = "input × gradient";
    attribution_cmd(subject, options, out, method, |seen, class, rule, style| {
        let a = attribution::input_x_gradient(seen.model, &seen.input.tensor, class, rule)?;
        figures::attribution(seen, &a, method, "", style)
    })
}

/// `convscope integrated-gradients`.
pub fn integrated_gradients_cmd(
    subject: &SubjectArgs,
    options: &GradientOptions,
    integrated: &IntegratedOptions,
    out: &Output,
) -> Result<()> {
    let config = IntegratedConfig {
        steps: integrated.steps as usize,
        quadrature: match integrated.method {
            QuadratureArg::GaussLegendre => Quadrature::GaussLegendre,
            QuadratureArg::Left => Quadrature::RiemannLeft,
            QuadratureArg::Right => Quadrature::RiemannRight,
            QuadratureArg::Middle => Quadrature::RiemannMiddle,
            QuadratureArg::Trapezoid => Quadrature::RiemannTrapezoid,
        },
        baseline: match integrated.baseline {
            BaselineArg::Zero => Baseline::Zero,
            BaselineArg::Blur => Baseline::Blurred { sigma: integrated.blur },
            BaselineArg::Uniform => Baseline::Uniform { seed: integrated.seed },
        },
        ..IntegratedConfig::default()
    };
    let method = "integrated gradients";
    attribution_cmd(subject, options, out, method, |seen, class, rule, style| {
        let ig = attribution::integrated_gradients(
            seen.model,
            &seen.input.tensor,
            class,
            rule,
            &config,
        )?;
        let gap = ig.score - ig.baseline_score;
        let details = format!(
            " · {} steps · score {:.4} − baseline {:.4} · completeness error {:.2e} ({:.2}%)",
            config.steps,
            ig.score,
            ig.baseline_score,
            ig.completeness_error,
            100.0 * ig.completeness_error.abs() / gap.abs().max(f64::MIN_POSITIVE)
        );
        figures::attribution(seen, &ig.attribution, method, &details, style)
    })
}

/// `convscope smoothgrad`.
pub fn smoothgrad_cmd(
    subject: &SubjectArgs,
    options: &GradientOptions,
    smooth: &SmoothOptions,
    out: &Output,
) -> Result<()> {
    let config = SmoothConfig {
        level: smooth.noise,
        samples: smooth.samples as usize,
        seed: smooth.seed,
        smoothing: match smooth.variant {
            SmoothVariant::Mean => Smoothing::Mean,
            SmoothVariant::Squared => Smoothing::Squared,
            SmoothVariant::Variance => Smoothing::Variance,
        },
        ..SmoothConfig::default()
    };
    let method = match smooth.variant {
        SmoothVariant::Mean => "smoothgrad",
        SmoothVariant::Squared => "smoothgrad²",
        SmoothVariant::Variance => "vargrad",
    };
    let details = format!(" · {} copies · noise {}", config.samples, config.level);
    attribution_cmd(subject, options, out, method, |seen, class, rule, style| {
        let a = attribution::smoothgrad(seen.model, &seen.input.tensor, class, rule, &config)?;
        figures::attribution(seen, &a, method, &details, style)
    })
}

/// `--modifier all` draws one class's row.
fn no_all_classes(options: &GradientOptions) -> Result<()> {
    if options.all_classes {
        bail!("--modifier all draws one class: leave out --all-classes, or pick one modifier");
    }
    Ok(())
}

/// `--variant`'s value: one of [`CamVariant::ALL`] by its name.
pub fn parse_cam_variant(s: &str) -> Result<CamVariant, String> {
    CamVariant::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = CamVariant::ALL.iter().map(|v| v.name()).collect();
        format!("unknown variant '{s}' (choose from {})", names.join(", "))
    })
}

/// `convscope gradcam`.
pub fn gradcam_cmd(
    subject: &SubjectArgs,
    options: &GradientOptions,
    variant: CamVariant,
    layer: Option<&str>,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let layer = layer_for(&model, &gradcam::INFO, layer)?;
    let seen = Seen { model: &model, input: &input, probs: &probs };
    let style = style(out, options.overlay);
    let config = CamConfig { variant, layer: Some(layer), ..CamConfig::default() };
    let title = variant.title();
    let Some(rule) = options.modifier.rule() else {
        if !variant.uses_gradients() {
            bail!("{title} uses no gradient: --modifier all has nothing to compare");
        }
        no_all_classes(options)?;
        let row = seen.modifier_row(class, title, |rule| {
            let config = CamConfig { rule, ..config };
            Ok(figures::grad_cam(&seen, &[class], &config, style, &|_| {})?.remove(0))
        })?;
        return emit(row, &input, out);
    };
    let classes = classes(&model, class, options.all_classes);
    let config = CamConfig { rule, ..config };
    let pictures = figures::grad_cam(&seen, &classes, &config, style, &|_| {})?;
    emit(figures::combine(pictures, &format!("{title} of every class")), &input, out)
}

/// `convscope guided-gradcam`.
pub fn guided_gradcam_cmd(
    subject: &SubjectArgs,
    layer: Option<&str>,
    overlay: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let layer = layer_for(&model, &gradcam::GUIDED_INFO, layer)?;
    let seen = Seen { model: &model, input: &input, probs: &probs };
    emit(figures::guided_grad_cam(&seen, class, Some(layer), style(out, overlay))?, &input, out)
}

/// `occlusion --show` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shows {
    /// p(intact) − p(occluded), centred at 0.
    Drop,
    /// p(occluded), on 0..1.
    P,
}

impl From<Shows> for OcclusionShows {
    fn from(s: Shows) -> OcclusionShows {
        match s {
            Shows::Drop => OcclusionShows::Drop,
            Shows::P => OcclusionShows::Probability,
        }
    }
}

/// Occlusion's square as given on the command line.
pub struct Window {
    /// Side (default: [`OcclusionConfig::for_input`]'s).
    pub size: Option<usize>,
    /// Step (default: the side).
    pub stride: Option<usize>,
    /// Grey level (default: [`OcclusionConfig::for_input`]'s).
    pub fill: Option<f32>,
}

/// `convscope occlusion`.
pub fn occlusion_cmd(
    subject: &SubjectArgs,
    window: &Window,
    shows: OcclusionShows,
    overlay: bool,
    out: &Output,
) -> Result<()> {
    let (model, input, class, probs) = subject.resolve()?;
    let [_, h, w] = model.input_chw()?;
    let default = OcclusionConfig::for_input(h, w);
    let size = window.size.unwrap_or(default.size);
    let stride = window.stride.unwrap_or(size);
    let fill = window.fill.unwrap_or(default.fill);
    let config = &OcclusionConfig { size, stride, fill, ..default };
    let seen = Seen { model: &model, input: &input, probs: &probs };
    emit(figures::occlusion(&seen, class, config, shows, style(out, overlay))?, &input, out)
}

/// `convscope filters`.
pub fn filters_cmd(
    model: &Path,
    preprocessing: &Preprocessing,
    layer: Option<&str>,
    out: &Output,
) -> Result<()> {
    let model = load_model(model, preprocessing)?;
    let layer = layer_for(&model, &filters::INFO, layer)?;
    emit_picture(figures::filters(&model, layer, style(out, false))?, out)
}

/// `convscope features`.
pub fn features_cmd(subject: &SubjectArgs, layer: Option<&str>, out: &Output) -> Result<()> {
    let (model, input, _, probs) = subject.resolve()?;
    let layer = layer_for(&model, &features::INFO, layer)?;
    let seen = Seen { model: &model, input: &input, probs: &probs };
    emit(figures::features(&seen, layer, style(out, false))?, &input, out)
}

/// Settings of `convscope maxact`.
#[derive(Debug, Args)]
pub struct MaxActArgs {
    /// Model file (`sample` for the bundled one).
    model: PathBuf,
    /// Classes to maximise, by index or name (default: all).
    #[arg(long, num_args = 1.., allow_negative_numbers = true)]
    class: Vec<String>,
    /// Maximise channels of this layer instead of classes, with tf-keras-vis's settings
    /// (total variation 1, norm 0.3, a uniform start, the last input): keras-vis's leave a
    /// filter's image at its start noise.
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
    #[command(flatten)]
    preprocessing: Preprocessing,
}

/// `convscope maxact`.
pub fn maxact_cmd(args: &MaxActArgs, out: &Output) -> Result<()> {
    let model = load_model(&args.model, &args.preprocessing)?;
    let (targets, names): (Vec<Target>, Vec<String>) = match &args.layer {
        Some(layer) => {
            let node = model.graph().node_index(layer)?;
            let channels = model.graph().shape(convscope::model::ValueId::of_node(node))[0];
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
    let settings =
        if args.layer.is_some() { ActMaxConfig::filters() } else { ActMaxConfig::default() };
    let config = ActMaxConfig {
        iterations: args.iterations,
        jitter: args.jitter,
        seed: args.seed,
        ..settings
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
    for (name, &stuck) in names.iter().zip(&result.no_gradient) {
        if stuck {
            eprintln!(
                "convscope: warning: {name} had no gradient at any step: {} (try another --seed)",
                actmax::NO_GRADIENT
            );
        }
    }
    emit_picture(figures::maxact(&model, &result, &names)?, out)
}

/// Prints or writes a picture of an input, naming the input in the caption.
fn emit(mut picture: Picture, input: &Prepared, out: &Output) -> Result<()> {
    picture.caption = format!("{} · input {}", picture.caption, printable_path(&input.source));
    emit_picture(picture, out)
}

/// The widest figure `-o` writes: larger ones are a mistyped `--scale`, not a figure.
const MAX_SIDE: u32 = 16_384;

/// Prints a picture inline (the picture, colour bar, caption) or writes it as `-o`'s
/// extension says; writes the raw values as .npy when asked.
fn emit_picture(picture: Picture, out: &Output) -> Result<()> {
    for warning in &picture.warnings {
        eprintln!("convscope: warning: {warning}");
    }
    if let Some(path) = &out.raw {
        files::write_npy(path, &picture.raw.0, &picture.raw.1)?;
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(path) = &out.png {
        if OutputFormat::of(path)? == OutputFormat::Npy {
            files::write_npy(path, &picture.raw.0, &picture.raw.1)?;
            let shape: Vec<String> = picture.raw.0.iter().map(usize::to_string).collect();
            writeln!(stdout, "{} → {} ({})", picture.caption, path.display(), shape.join("×"))?;
            return Ok(());
        }
        let scale = out.scale.unwrap_or_else(|| picture.figure_scale()).max(1);
        let image = &picture.image;
        if image.width().max(image.height()).checked_mul(scale).is_none_or(|s| s > MAX_SIDE) {
            bail!(
                "--scale {scale} would make a picture of {}×{} wider than {MAX_SIDE} pixels",
                image.width(),
                image.height()
            );
        }
        let figure = picture.figure(scale);
        files::save_image(&figure, path)?;
        writeln!(
            stdout,
            "{} → {} ({}×{})",
            picture.caption,
            path.display(),
            figure.width(),
            figure.height()
        )?;
        return Ok(());
    }
    let mode = out.color.unwrap_or_else(ColorMode::detect);
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let pixels = Pixels::detect(GRAPHICS.get().copied().unwrap_or(Graphics::Halfblocks));
    // Leave room for the colour bar, the caption and the prompt.
    let image =
        terminal_image::inline(&picture.image, &pixels, mode, cols, rows.saturating_sub(4).max(4));
    write!(stdout, "{image}")?;
    if let Some((cmap, range)) = picture.scale {
        let bar = ansi::to_ansi(&convscope::present::pixels::colorbar(cmap, 32, 2), mode);
        let ticks = figures::ticks(range, 2);
        let (lo, hi) = (&ticks[0].1, &ticks[ticks.len() - 1].1);
        writeln!(stdout, "{lo} {} {hi}", bar.trim_end())?;
    }
    writeln!(stdout, "{}", picture.caption).context("writing to the terminal")?;
    Ok(())
}
