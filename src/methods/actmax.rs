//! Activation maximisation as keras-vis 0.4 does it (`visualize_activation` with its default
//! losses, run by `Optimizer.minimize`): find an input that makes a class score, or one
//! channel of any layer, large, kept plausible by an L6 norm and total variation.
//!
//! Per target, with `x` the model input and `N = C·H·W`, the loss is
//!
//! ```text
//! act_weight·(−mean(activation)) + lp_norm_weight·‖x‖₆/N + tv_weight·TV(x)/N
//! TV(x) = Σ_c Σ_{i<H−1, j<W−1} (x[c,i,j]−x[c,i+1,j])² + (x[c,i,j]−x[c,i,j+1])²
//! ```
//!
//! (β = 2; like keras-vis the sum runs over the `[:-1, :-1]` region only). Class scores are
//! taken below a final softmax ("softmax swapped for linear"). The start is normal noise
//! around the middle of the input range (std 0.05 of its width); each iteration takes the
//! gradient of the loss (the activation part by backpropagation with the vanilla ReLU rule,
//! the regularisers analytically), divides it by its RMS and takes an RMSProp step
//! `cache = 0.95·cache + 0.05·g²; x −= g/√(cache + 1e-7)`. The input with the lowest loss is
//! kept and deprocessed as keras-vis's `deprocess_input` does.
//!
//! Where this differs from keras-vis:
//! - All targets run together as one batch, but each is its own problem: its own losses,
//!   gradient normalisation, RMSProp cache, best input and jitter shift. keras-vis runs one
//!   input at a time, so the results are those of separate keras-vis runs.
//! - keras-vis scores the loss of the input *before* a step but keeps the input *after* it
//!   as "best"; here the kept input is the one the loss was measured on, so
//!   [`ActMaxResult::best`] describes [`ActMaxResult::inputs`] exactly (without jitter). The
//!   input after the last step is evaluated too, so no step is wasted.
//! - The input range keras-vis is given by hand is derived from the model:
//!   [`InputSpec::range`](crate::model::InputSpec) mapped through each channel's mean/std,
//!   so the start noise is per channel for models normalised per channel.
//! - Images come back as pixels in [0, 1] whatever the model's range (keras-vis maps them
//!   to its `input_range` at the end); [`input::normalise`](crate::data::input::normalise) turns
//!   them back into model input.
//! - The norm's gradient at `x = 0` is taken as 0 (TensorFlow gives NaN there).
//! - Jitter is whole pixels only (keras-vis also takes fractions of the size).
//!
//! The input is kept in f32, like keras-vis's float32 arrays; the network runs in the
//! model's dtype, the regularisers and the step in f64.
//!
//! A consequence of keras-vis's scheme worth knowing: the first RMSProp step moves every
//! pixel by about ±4.5 whatever the input range, so total variation starts huge. Class
//! scores grow far faster than it and win; a filter's mean does not, and its lowest total
//! stays at the start noise bit for bit while the activation itself climbs. And keras-vis's
//! flat start leaves many filters of a deeper layer switched off everywhere (ReLU at 0), so
//! they have no gradient at all. Filters therefore get tf-keras-vis's settings
//! ([`ActMaxConfig::filters`]: lower weights, a uniform start, the last input), and
//! [`ActMaxResult::no_gradient`] says when a target never had a gradient.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::engine::{Point, ReluRule, Seed};
use crate::error::{Error, Result};
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::Model;
use crate::model::{Activation, ValueId};

/// The method as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "maxact",
    about: "Activation maximisation (keras-vis): the input each class, or each filter, likes most",
    input: false,
    class: true,
    modifiers: false,
    layers: Layers::None,
};

/// The `p` of the L-p norm regulariser (keras-vis's default).
pub const LP_NORM_P: i32 = 6;
/// Why a target can have no gradient, for the warnings that say so.
pub const NO_GRADIENT: &str =
    "its ReLU is off for every pixel of the start noise, so the image shows the regularisers only";
/// keras-vis's `K.epsilon()`.
const EPSILON: f64 = 1e-7;
/// RMSProp decay of keras-vis's optimiser.
const DECAY: f64 = 0.95;

/// What to maximise.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A class of the model's output, scored below the final softmax ("softmax swapped for
    /// linear").
    Class(usize),
    /// Channel `index` of node `node`'s output: the spatial mean for `[C, H, W]` outputs
    /// (the mean over everything after the channel axis in general), the unit itself for
    /// vectors. On a node with a fused softmax, the score below the softmax.
    Filter {
        /// The node, by index in the graph.
        node: usize,
        /// The channel (or unit).
        index: usize,
    },
}

/// Where the optimisation starts and which input comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Recipe {
    /// keras-vis 0.4: normal noise around the middle of the input range (std 0.05 of its
    /// width); the input of the lowest total loss comes back.
    KerasVis,
    /// tf-keras-vis 0.8: uniform noise over the whole input range, which switches on far
    /// more filters; the input after the last step comes back.
    TfKerasVis,
}

/// Settings of the optimisation; the defaults are keras-vis's, [`ActMaxConfig::filters`]
/// tf-keras-vis's.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ActMaxConfig {
    /// Number of gradient steps (200).
    pub iterations: usize,
    /// Weight of the activation loss (1).
    pub act_weight: f32,
    /// Weight of the L6 norm (10).
    pub lp_norm_weight: f32,
    /// Weight of the total variation, β = 2 (10).
    pub tv_weight: f32,
    /// 0 = off; otherwise each step rolls the input (with wrap-around) by a random shift of
    /// up to ±`jitter` pixels per axis before the gradient and rolls it back after, as
    /// keras-vis's `Jitter` modifier.
    pub jitter: usize,
    /// Seeds the start noise and the jitter.
    pub seed: u64,
    /// Whose start and result (keras-vis's).
    pub recipe: Recipe,
}

impl Default for ActMaxConfig {
    fn default() -> Self {
        ActMaxConfig {
            iterations: 200,
            act_weight: 1.0,
            lp_norm_weight: 10.0,
            tv_weight: 10.0,
            jitter: 0,
            seed: 0,
            recipe: Recipe::KerasVis,
        }
    }
}

impl ActMaxConfig {
    /// The settings for filters (channels of a layer). With keras-vis's a filter's image
    /// is its start noise bit for bit: the first step raises total variation far more than
    /// a filter's mean, so the lowest total is the start; and the flat start leaves most
    /// filters of `conv2d_2` switched off everywhere, without gradient. tf-keras-vis's
    /// start and result ([`Recipe::TfKerasVis`]) and its norm weight 0.3 fix that; its
    /// total-variation weight 1 (made for VGG16 at 0–255, as its documentation warns) still
    /// holds some first-layer filters of the sample model to 2–9× their start, so total
    /// variation weighs 0.1. Regulariser forms and step stay keras-vis's: with tf-keras-vis's
    /// L1 forms some filters stayed below 3×, and its RMSProp with the rate scaled to the
    /// input range moved too little (7–8× without any regulariser) (measured on the first
    /// 16 filters of `conv2d_1` and `conv2d_2`, 200 steps, seed 0).
    pub fn filters() -> Self {
        ActMaxConfig {
            lp_norm_weight: 0.3,
            tv_weight: 0.1,
            recipe: Recipe::TfKerasVis,
            ..ActMaxConfig::default()
        }
    }
}

/// The loss of one target at one iteration, each term already multiplied by its weight (as
/// keras-vis reports them): `activation` is `−act_weight·mean(activation)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LossTerms {
    /// Weighted activation loss (negative when the activation is positive).
    pub activation: f32,
    /// Weighted L6 norm, divided by `N`.
    pub lp_norm: f32,
    /// Weighted total variation, divided by `N`.
    pub tv: f32,
    /// The sum of the three: what is minimised.
    pub total: f32,
}

/// Where the optimisation stands, passed to the progress callback after each iteration.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Iterations done so far, 1-based (the first call says 1).
    pub iteration: usize,
    /// Iterations asked for.
    pub iterations: usize,
    /// Per target: the losses of the input this iteration started from.
    pub losses: &'a [LossTerms],
}

/// What [`maximise`] found.
#[derive(Clone, Debug)]
pub struct ActMaxResult {
    /// Per target: the best input found, deprocessed as keras-vis's `deprocess_input`
    /// (standardised to std 0.1 around 0.5, clipped) to pixels in [0, 1], planar `[C, H, W]`.
    /// Always [0, 1], also for models whose input range is another.
    pub images: Vec<Vec<f32>>,
    /// Per target: the loss terms of the input returned.
    pub best: Vec<LossTerms>,
    /// Per target: the best input as the model sees it (not deprocessed), `[1, C, H, W]` in
    /// the model's dtype, so callers can classify it.
    pub inputs: Vec<Tensor>,
    /// Iterations actually run (fewer than asked if cancelled).
    pub iterations_run: usize,
    /// Per target: true when the activation had no gradient at any step (a filter whose
    /// ReLU stayed off everywhere), so the image shows the regularisers only.
    pub no_gradient: Vec<bool>,
}

/// The two regularisers on one input and the gradient of their sum.
#[derive(Clone, Debug, PartialEq)]
pub struct Regularisers {
    /// `lp_norm_weight·(Σ|x|⁶)^(1/6)/N`.
    pub lp_norm: f64,
    /// `tv_weight·TV(x)/N`.
    pub tv: f64,
    /// `∂(lp_norm + tv)/∂x`, planar `[C, H, W]` like `x`.
    pub gradient: Vec<f64>,
}

/// The L6-norm and total-variation losses of one input `x` (planar, `chw` = `[C, H, W]`),
/// weighted and divided by `N = C·H·W` as in keras-vis, with their analytic gradient. This
/// is what [`maximise`] adds to the activation gradient; public so it can be checked.
pub fn regularisers(
    x: &[f64],
    chw: [usize; 3],
    lp_norm_weight: f64,
    tv_weight: f64,
) -> Result<Regularisers> {
    let [c, h, w] = chw;
    let n = c * h * w;
    if x.len() != n {
        return Err(Error::Invalid(format!("{} values for an input of {c}×{h}×{w}", x.len())));
    }
    let nf = n as f64;
    let mut gradient = vec![0.0; n];

    // ‖x‖₆ via the largest |x| so x⁶ cannot overflow; ∂‖x‖₆/∂x_i = (x_i/‖x‖₆)⁵, which also
    // avoids the 0·∞ of the textbook form at x = 0.
    let largest = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let norm = if largest > 0.0 {
        let sum: f64 = x.iter().map(|v| (v.abs() / largest).powi(LP_NORM_P)).sum();
        largest * sum.powf(1.0 / f64::from(LP_NORM_P))
    } else {
        0.0
    };
    if norm > 0.0 {
        let scale = lp_norm_weight / nf;
        for (g, v) in gradient.iter_mut().zip(x) {
            *g += scale * (v / norm).powi(LP_NORM_P - 1);
        }
    }

    // With β = 2 the power β/2 is the identity: TV is a plain sum of squared differences.
    let mut tv = 0.0;
    let scale = 2.0 * tv_weight / nf;
    for ch in 0..c {
        let plane = ch * h * w;
        for i in 0..h.saturating_sub(1) {
            for j in 0..w.saturating_sub(1) {
                let at = plane + i * w + j;
                let down = x[at] - x[at + w];
                let right = x[at] - x[at + 1];
                tv += down * down + right * right;
                gradient[at] += scale * (down + right);
                gradient[at + w] -= scale * down;
                gradient[at + 1] -= scale * right;
            }
        }
    }

    Ok(Regularisers { lp_norm: lp_norm_weight * norm / nf, tv: tv_weight * tv / nf, gradient })
}

/// keras-vis's `deprocess_input` down to [0, 1]: subtract the mean, divide by the standard
/// deviation (population, + 1e-7), scale by 0.1, add 0.5, clip to [0, 1].
pub fn deprocess_input(x: &[f32]) -> Vec<f32> {
    if x.is_empty() {
        return Vec::new();
    }
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    x.iter()
        .map(|&v| ((f64::from(v) - mean) / (std + EPSILON) * 0.1 + 0.5).clamp(0.0, 1.0) as f32)
        .collect()
}

/// A target resolved against the graph: which tensor, and which entries of one sample's
/// (flattened) slice of it are averaged.
#[derive(Clone, Debug)]
struct Resolved {
    node: usize,
    point: Point,
    entries: Range<usize>,
}

fn resolve(model: &Model, target: &Target) -> Result<Resolved> {
    let graph = model.graph();
    match *target {
        Target::Class(class) => {
            let classes = model.num_classes();
            let (node, point) = model.score_point();
            let scores: usize = graph.shape(ValueId::of_node(node)).iter().product();
            if class >= classes || class >= scores {
                return Err(Error::Invalid(format!(
                    "class {class} is out of range: the model has {classes} classes (0–{})",
                    classes.saturating_sub(1)
                )));
            }
            Ok(Resolved { node, point, entries: class..class + 1 })
        }
        Target::Filter { node, index } => {
            let nodes = graph.nodes();
            let Some(layer) = nodes.get(node) else {
                return Err(Error::Invalid(format!(
                    "layer {node} is out of range: the model has {} layers",
                    nodes.len()
                )));
            };
            let shape = graph.shape(ValueId::of_node(node));
            let channels = shape.first().copied().unwrap_or(0);
            if index >= channels {
                return Err(Error::Invalid(format!(
                    "filter {index} is out of range: layer '{}' has {channels} channels",
                    layer.name
                )));
            }
            let spatial: usize = shape[1..].iter().product();
            let point = if layer.op.activation() == Activation::Softmax {
                Point::PreSoftmax
            } else {
                Point::Output
            };
            Ok(Resolved { node, point, entries: index * spatial..(index + 1) * spatial })
        }
    }
}

/// The targets and settings, with what one evaluation needs.
struct Problem<'a> {
    model: &'a Model,
    chw: [usize; 3],
    targets: Vec<Resolved>,
    /// Targets (batch rows) by the tensor they read, so each tensor gets one backward pass.
    groups: Vec<((usize, Point), Vec<usize>)>,
    config: &'a ActMaxConfig,
}

impl Problem<'_> {
    fn sample_len(&self) -> usize {
        self.chw.iter().product()
    }

    /// Losses of every row of `x` (`[B, C, H, W]` flat) and, when asked, the gradient of
    /// each row's total loss with respect to that row and whether its activation part
    /// was anything but zero.
    fn evaluate(&self, x: &[f32], with_gradient: bool) -> Result<Evaluation> {
        let [c, h, w] = self.chw;
        let n = self.sample_len();
        let batch = self.targets.len();
        let act_weight = f64::from(self.config.act_weight);
        let input =
            Tensor::from_slice(x, (batch, c, h, w), &Device::Cpu)?.to_dtype(self.model.dtype())?;
        let acts = self.model.forward(&input)?;

        let mut activation = vec![0.0f64; batch];
        let mut gradient = vec![0.0f64; if with_gradient { batch * n } else { 0 }];
        for ((node, point), rows) in &self.groups {
            let tensor = acts.at(*node, *point)?;
            let values = tensor.flatten_from(1)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            let per_sample = tensor.elem_count() / batch.max(1);
            let mut seed = vec![0.0f64; if with_gradient { tensor.elem_count() } else { 0 }];
            for &row in rows {
                let entries = self.targets[row].entries.clone();
                let count = entries.len() as f64;
                let mean = values[row][entries.clone()].iter().sum::<f64>() / count;
                activation[row] = -act_weight * mean;
                if with_gradient {
                    seed[row * per_sample..][entries].fill(-act_weight / count);
                }
            }
            // keras-vis leaves a zero-weighted loss out of the graph altogether.
            if with_gradient && act_weight != 0.0 {
                let grad = Tensor::from_vec(seed, tensor.dims(), &Device::Cpu)?
                    .to_dtype(tensor.dtype())?;
                let grads = self.model.backward(
                    &acts,
                    &Seed { node: *node, point: *point, grad },
                    ReluRule::Vanilla,
                    false,
                )?;
                if let Some(dx) = grads.input() {
                    let dx = dx.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                    for (g, d) in gradient.iter_mut().zip(dx) {
                        *g += d;
                    }
                }
            }
        }

        let activation_moves: Vec<bool> = if with_gradient {
            gradient.chunks_exact(n).map(|g| g.iter().any(|&v| v != 0.0)).collect()
        } else {
            Vec::new()
        };
        let mut losses = Vec::with_capacity(batch);
        for (row, sample) in x.chunks_exact(n).enumerate() {
            let sample: Vec<f64> = sample.iter().map(|&v| f64::from(v)).collect();
            let reg = regularisers(
                &sample,
                self.chw,
                f64::from(self.config.lp_norm_weight),
                f64::from(self.config.tv_weight),
            )?;
            if with_gradient {
                for (g, r) in gradient[row * n..(row + 1) * n].iter_mut().zip(&reg.gradient) {
                    *g += r;
                }
            }
            losses.push(LossTerms {
                activation: activation[row] as f32,
                lp_norm: reg.lp_norm as f32,
                tv: reg.tv as f32,
                total: (activation[row] + reg.lp_norm + reg.tv) as f32,
            });
        }
        Ok(Evaluation { losses, gradient, activation_moves })
    }
}

/// What [`Problem::evaluate`] found.
struct Evaluation {
    losses: Vec<LossTerms>,
    /// Per row, flat; empty when not asked for.
    gradient: Vec<f64>,
    /// Per row: the activation's gradient has a non-zero entry; empty when not asked for.
    activation_moves: Vec<bool>,
}

/// The model's value range per channel, in the space the model reads (after mean/std).
fn input_ranges(model: &Model, channels: usize) -> Vec<(f64, f64)> {
    let [lo, hi] = model.input.range;
    (0..channels)
        .map(|ch| {
            let (mean, std) = model.input.normalisation(ch);
            let map = |v: f32| (f64::from(v) - f64::from(mean)) / f64::from(std);
            (map(lo), map(hi))
        })
        .collect()
}

/// `np.roll` of one planar `[C, H, W]` sample by `(dy, dx)` over the spatial axes.
fn roll(sample: &[f32], [c, h, w]: [usize; 3], dy: i64, dx: i64, out: &mut [f32]) {
    let shift = |i: usize, d: i64, len: usize| (i as i64 + d).rem_euclid(len as i64) as usize;
    for ch in 0..c {
        let plane = ch * h * w;
        for i in 0..h {
            let row = plane + shift(i, dy, h) * w;
            for j in 0..w {
                out[row + shift(j, dx, w)] = sample[plane + i * w + j];
            }
        }
    }
}

/// Optimises all `targets` together, one batch row each (see the module documentation for
/// the method). `cancel` is checked before every iteration; once set, the best found so far
/// comes back and [`ActMaxResult::iterations_run`] says how far it got. `progress` is called
/// after every iteration. Targets out of range are an [`Error::Invalid`] before any work.
pub fn maximise(
    model: &Model,
    targets: &[Target],
    config: &ActMaxConfig,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&Progress),
) -> Result<ActMaxResult> {
    let chw = model.input_chw()?;
    if targets.is_empty() {
        return Err(Error::Invalid("nothing to maximise: no targets given".into()));
    }
    let resolved = targets.iter().map(|t| resolve(model, t)).collect::<Result<Vec<_>>>()?;
    let mut groups: Vec<((usize, Point), Vec<usize>)> = Vec::new();
    for (row, t) in resolved.iter().enumerate() {
        match groups.iter_mut().find(|(key, _)| *key == (t.node, t.point)) {
            Some((_, rows)) => rows.push(row),
            None => groups.push(((t.node, t.point), vec![row])),
        }
    }
    let problem = Problem { model, chw, targets: resolved, groups, config };
    let n = problem.sample_len();
    let batch = targets.len();
    let plane = chw[1] * chw[2];

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let ranges = input_ranges(model, chw[0]);
    let mut x = Vec::with_capacity(batch * n);
    for _ in 0..batch {
        for &(lo, hi) in &ranges {
            let no_noise = |e: &dyn std::fmt::Display| {
                Error::Invalid(format!("the model's input range gives no start noise: {e}"))
            };
            match config.recipe {
                Recipe::KerasVis => {
                    let noise = Normal::new((lo + hi) / 2.0, 0.05 * (hi - lo).abs())
                        .map_err(|e| no_noise(&e))?;
                    x.extend((0..plane).map(|_| noise.sample(&mut rng) as f32));
                }
                Recipe::TfKerasVis => {
                    let noise =
                        Uniform::new_inclusive(lo.min(hi), lo.max(hi)).map_err(|e| no_noise(&e))?;
                    x.extend((0..plane).map(|_| noise.sample(&mut rng) as f32));
                }
            }
        }
    }

    let mut cache = vec![0.0f64; batch * n];
    let mut no_gradient = vec![true; batch];
    let mut best: Vec<Option<(LossTerms, Vec<f32>)>> = vec![None; batch];
    let keep_best =
        |best: &mut [Option<(LossTerms, Vec<f32>)>], losses: &[LossTerms], x: &[f32]| {
            for (row, (slot, loss)) in best.iter_mut().zip(losses).enumerate() {
                if slot.as_ref().is_none_or(|(b, _)| loss.total < b.total) {
                    *slot = Some((loss.clone(), x[row * n..(row + 1) * n].to_vec()));
                }
            }
        };

    let jitter = i64::try_from(config.jitter).unwrap_or(i64::MAX / 2);
    let mut shifts = vec![(0i64, 0i64); batch];
    let mut rolled = vec![0.0f32; batch * n];
    let mut step = vec![0.0f32; n];
    let mut iterations_run = 0;
    for iteration in 0..config.iterations {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        if jitter > 0 {
            for (row, shift) in shifts.iter_mut().enumerate() {
                *shift = (rng.random_range(-jitter..=jitter), rng.random_range(-jitter..=jitter));
                let range = row * n..(row + 1) * n;
                roll(&x[range.clone()], chw, shift.0, shift.1, &mut rolled[range]);
            }
        }
        let evaluated = if jitter > 0 { &rolled } else { &x };
        let Evaluation { losses, gradient, activation_moves } =
            problem.evaluate(evaluated, true)?;
        for (stuck, moves) in no_gradient.iter_mut().zip(activation_moves) {
            *stuck &= !moves;
        }
        if config.recipe == Recipe::KerasVis {
            keep_best(&mut best, &losses, &x);
        }

        for (row, shift) in shifts.iter().enumerate() {
            let range = row * n..(row + 1) * n;
            let g = &gradient[range.clone()];
            let rms = (g.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt();
            // Under jitter the cache stays in the rolled frame, as in keras-vis, where the
            // step is computed on the rolled input and only the input is rolled back.
            for ((s, &g), c) in step.iter_mut().zip(g).zip(&mut cache[range.clone()]) {
                let g = g / (rms + EPSILON);
                *c = DECAY * *c + (1.0 - DECAY) * g * g;
                *s = (-g / (*c + EPSILON).sqrt()) as f32;
            }
            let sample = &mut x[range.clone()];
            if jitter > 0 {
                let unrolled = &mut rolled[range];
                roll(&step, chw, -shift.0, -shift.1, unrolled);
                for (v, s) in sample.iter_mut().zip(unrolled.iter()) {
                    *v += s;
                }
            } else {
                for (v, s) in sample.iter_mut().zip(&step) {
                    *v += s;
                }
            }
        }
        iterations_run = iteration + 1;
        progress(&Progress {
            iteration: iterations_run,
            iterations: config.iterations,
            losses: &losses,
        });
    }
    let last = problem.evaluate(&x, false)?;
    if config.recipe == Recipe::TfKerasVis {
        best.fill(None);
    }
    keep_best(&mut best, &last.losses, &x);

    let mut result = ActMaxResult {
        images: Vec::new(),
        best: Vec::new(),
        inputs: Vec::new(),
        iterations_run,
        // Without a single step nothing is known about the gradient.
        no_gradient: if iterations_run == 0 { vec![false; batch] } else { no_gradient },
    };
    for (loss, input) in best.into_iter().flatten() {
        result.images.push(deprocess_input(&input));
        result.inputs.push(
            Tensor::from_vec(input, (1, chw[0], chw[1], chw[2]), &Device::Cpu)?
                .to_dtype(model.dtype())?,
        );
        result.best.push(loss);
    }
    Ok(result)
}
